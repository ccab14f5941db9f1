using System.IO.Enumeration;
using Microsoft.Win32.SafeHandles;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Cli.Commands;

namespace Reservoir.Cli.Send;

/// <summary>
/// A read-only subvolume of a mounted Reservoir, read through the kernel like any directory
/// tree: lstat, readdir, readlink, l*xattr, and SEEK_DATA/SEEK_HOLE so that holes stay holes.
/// A directory that is another subvolume's root (its own device with -o submounts, or inode 256
/// of another tree) is left out. Against another snapshot served by the same daemon it asks
/// the daemon what changed and where an inode is (<see cref="OnlineSendQueries"/>), when the
/// daemon lets it (root, or the user the daemon runs as); otherwise the send walks both.
/// </summary>
internal sealed class HostSendSource : IChangeTrackingSource, IDisposable
{
    private readonly string _root;
    private readonly ulong _dev;
    private OnlineSendQueries? _queries;
    private bool _opened;

    public HostSendSource(string root)
    {
        _root = Path.GetFullPath(root).TrimEnd('/');
        _dev = HostFiles.LstatFull(_root).Dev;
    }

    /// <summary>The daemon's queries on this subvolume's root, opened at first use; null
    /// when the root cannot be opened.</summary>
    private OnlineSendQueries? Queries
    {
        get
        {
            if (!_opened)
            {
                _opened = true;
                if (OnlineSendQueries.Open(_root, out var q) == Common.Errno.OK) _queries = q;
            }
            return _queries;
        }
    }

    public IReadOnlyCollection<ulong>? ChangedSince(ISendSource parent)
    {
        if (parent is not HostSendSource p || Queries is not { } q || OnlineSubvolume.SubvolumeIdOf(p._root) is not { } older) return null;
        // Only two subvolumes of one filesystem, served by one daemon, compare.
        if (OnlineSubvolume.ServedBy(_root, out var mine) != Common.Errno.OK || OnlineSubvolume.ServedBy(p._root, out var theirs) != Common.Errno.OK || mine != theirs)
            return null;
        var e = q.ChangedInodes(older, out var inodes);
        // Not allowed (another user), or a daemon that does not know the question: walk.
        if (e is Common.Errno.EPERM or Common.Errno.ENOTTY) return null;
        if (e != Common.Errno.OK) throw new IOException($"cannot compare '{_root}' with '{p._root}': {e}");
        return inodes;
    }

    public IReadOnlyList<(ulong Dir, string Name)> NamesOf(ulong ino)
    {
        var e = (Queries ?? throw new IOException($"cannot open '{_root}'")).InodeNames(ino, out var names);
        if (e == Common.Errno.ENOENT) return [];
        if (e != Common.Errno.OK) throw new IOException($"cannot read the names of inode {ino} of '{_root}': {e}");
        return names;
    }

    public IReadOnlyCollection<ulong>? InodesReferencing(ulong bytenr) =>
        Queries is { } q && q.ExtentReferrers(bytenr, out var inodes) == Common.Errno.OK ? inodes : null;

    public void Dispose() => _queries?.Dispose();

    private string Full(string path) => path.Length == 0 ? _root : _root + "/" + path;

    public SendStat Lstat(string path)
    {
        var s = HostFiles.LstatFull(Full(path));
        // The inode's number within its subvolume: without -o submounts st_ino is the mount's
        // node id (tree id << 40 | inode), which differs between a snapshot and its source.
        return new SendStat(s.Ino & Engine.Inodes.NodeIds.MaxIno, s.Mode, s.Nlink, s.Uid, s.Gid, s.Rdev, s.Size, s.Atime, s.Mtime, s.Ctime, s.Btime);
    }

    public IReadOnlyList<string> List(string dir)
    {
        var names = new List<string>();
        // The entry types readdir gives (no lstat of each: only directories need one).
        var options = new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = false };
        var entries = new FileSystemEnumerable<(string Name, bool Dir)>(Full(dir),
            (ref FileSystemEntry x) => (x.FileName.ToString(), x.IsDirectory && (x.Attributes & FileAttributes.ReparsePoint) == 0), options);
        foreach (var (name, isDir) in entries)
        {
            if (isDir)
            {
                var s = HostFiles.LstatFull(Full(dir) + "/" + name);
                // Another subvolume's root: its own device (-o submounts), or inode 256 of its
                // tree (st_ino is tree id << 40 | inode without submounts; only roots are 256).
                if ((s.Mode & 0xF000) == 0x4000 && (s.Dev != _dev || (s.Ino & Engine.Inodes.NodeIds.MaxIno) == Engine.Filesystem.RootIno)) continue;
            }
            names.Add(name);
        }
        return names;
    }

    public string ReadLink(string path) =>
        new FileInfo(Full(path)).LinkTarget ?? throw new IOException($"cannot read the symbolic link '{Full(path)}'");

    public IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path)
    {
        string p = Full(path);
        var result = new List<(byte[], byte[])>();
        foreach (var name in HostFiles.ListXattrs(p)) result.Add((name, HostFiles.GetXattr(p, name)));
        return result;
    }

    public ISendFile Open(string path)
    {
        string p = Full(path);
        return new HostFile(File.OpenHandle(p, FileMode.Open, FileAccess.Read), p);
    }

    private sealed class HostFile(SafeFileHandle h, string path) : ISendFile
    {
        public long NextData(long offset) => HostFiles.SeekDataHole(h, offset, data: true, path);
        public long NextHole(long offset) => HostFiles.SeekDataHole(h, offset, data: false, path);
        public int Read(long offset, Span<byte> buffer) => RandomAccess.Read(h, buffer, offset);
        public IReadOnlyList<Engine.ExtentMapping>? Extents() => OnlineSubvolume.ExtentMap(h.DangerousGetHandle(), out var map) == Common.Errno.OK ? map : null;
        public void Dispose() => h.Dispose();
    }
}

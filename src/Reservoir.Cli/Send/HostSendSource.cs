using Microsoft.Win32.SafeHandles;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Cli.Commands;

namespace Reservoir.Cli.Send;

/// <summary>
/// A read-only subvolume of a mounted Reservoir, read through the kernel like any directory
/// tree: lstat, readdir, readlink, l*xattr, and SEEK_DATA/SEEK_HOLE so that holes stay holes.
/// A directory that is another subvolume's root (its own device with -o submounts, or inode 256
/// of another tree) is left out.
/// </summary>
internal sealed class HostSendSource : ISendSource
{
    private readonly string _root;
    private readonly ulong _dev;

    public HostSendSource(string root)
    {
        _root = Path.GetFullPath(root).TrimEnd('/');
        _dev = HostFiles.LstatFull(_root).Dev;
    }

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
        foreach (var p in Directory.EnumerateFileSystemEntries(Full(dir)))
        {
            string name = Path.GetFileName(p);
            var s = HostFiles.LstatFull(p);
            // Another subvolume's root: its own device (-o submounts), or inode 256 of its tree
            // (st_ino is tree id << 40 | inode without submounts; only roots are inode 256).
            if ((s.Mode & 0xF000) == 0x4000 && (s.Dev != _dev || (s.Ino & Engine.Inodes.NodeIds.MaxIno) == Engine.Filesystem.RootIno)) continue;
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

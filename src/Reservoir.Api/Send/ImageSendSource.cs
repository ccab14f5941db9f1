using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir.Api.Send;

/// <summary>
/// A subvolume of an open filesystem read through the engine by inode: an image opened with
/// <see cref="ReservoirFileSystem"/>, or the one a mount's daemon serves (a send through the
/// mount that the daemon writes itself, <see cref="DaemonSend"/>). Symbolic links are never
/// followed (their own attributes and xattrs are sent), and a directory entry that names another
/// subvolume's root is left out. Against another snapshot of the same filesystem it names what
/// changed from the engine's comparison of the two trees (<see cref="Filesystem.ChangedInodes"/>).
/// Paths are looked up from the subvolume's root, not from the image's: the subvolume is read
/// whatever its place (a deleted one held open included, until its drop).
/// </summary>
public sealed class ImageSendSource : IChangeTrackingSource
{
    private readonly Filesystem _fs;
    private readonly string _root;
    private readonly ulong _tree;

    /// <summary>Directories already looked up, by path from the root: the send reads parents
    /// before children, so a path costs one lookup (its last name). The subvolume is read-only,
    /// so an answer never goes stale.</summary>
    private readonly Dictionary<string, ulong> _dirs = new();

    /// <param name="subvolumePath">the subvolume's root, a path inside the image</param>
    public ImageSendSource(ReservoirFileSystem fs, string subvolumePath)
        : this(fs.Engine, RootOf(fs, subvolumePath), subvolumePath)
    {
    }

    /// <param name="subvolumeRoot">the node id of the subvolume's root directory</param>
    /// <param name="shownAs">how messages name the subvolume's root</param>
    public ImageSendSource(Filesystem fs, ulong subvolumeRoot, string shownAs)
    {
        _fs = fs;
        _root = shownAs.TrimEnd('/');
        _tree = NodeIds.Decode(subvolumeRoot).TreeId;
        _dirs[""] = subvolumeRoot;
    }

    private static ulong RootOf(ReservoirFileSystem fs, string path)
    {
        var e = fs.Posix.Lstat(path, out var a);
        if (e != Errno.OK) throw new FsException(e, $"cannot read '{path}'");
        return a.Ino;
    }

    private string Full(string path) => path.Length == 0 ? (_root.Length == 0 ? "/" : _root) : _root + "/" + path;

    private void Check(Errno e, string path)
    {
        if (e != Errno.OK) throw new FsException(e, $"cannot read '{Full(path)}'");
    }

    /// <summary>The node id of <paramref name="path"/> (never following a symbolic link).</summary>
    private ulong Node(string path)
    {
        if (_dirs.TryGetValue(path, out ulong known)) return known;
        int slash = path.LastIndexOf('/');
        ulong dir = Node(slash < 0 ? "" : path[..slash]);
        Check(_fs.Lookup(dir, slash < 0 ? path : path[(slash + 1)..], out var a), path);
        if (a.IsDir) _dirs[path] = a.Ino;
        return a.Ino;
    }

    private InodeAttr Attr(string path)
    {
        Check(_fs.GetAttr(Node(path), out var a), path);
        return a;
    }

    public SendStat Lstat(string path)
    {
        var a = Attr(path);
        return new SendStat(NodeIds.Decode(a.Ino).Ino, a.Mode, a.Nlink, a.Uid, a.Gid, a.Rdev, a.Size, a.Atime, a.Mtime, a.Ctime, a.Btime);
    }

    public IReadOnlyList<string> List(string dir)
    {
        Check(_fs.ListDir(Node(dir), out var entries), dir);
        var names = new List<string>(entries.Count);
        foreach (var e in entries)
            if (e.Name is not ("." or "..") && NodeIds.Decode(e.Ino).TreeId == _tree) names.Add(e.Name);
        return names;
    }

    public string ReadLink(string path)
    {
        Check(_fs.Readlink(Node(path), out string target), path);
        return target;
    }

    public IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path)
    {
        ulong ino = Node(path);
        Check(_fs.ListXattrNames(ino, out var names), path);
        var result = new List<(byte[], byte[])>(names.Count);
        foreach (var n in names)
        {
            var e = _fs.GetXattr(ino, n, out var v);
            if (e == Errno.ENODATA) continue; // removed since listed (not in a read-only subvolume)
            Check(e, path);
            result.Add((n, v));
        }
        return result;
    }

    public IReadOnlyCollection<ulong>? ChangedSince(ISendSource parent)
    {
        if (parent is not ImageSendSource p || p._fs != _fs) return null;
        var e = _fs.ChangedInodes(p._tree, _tree, out var changes);
        if (e != Errno.OK) throw new FsException(e, $"send: cannot compare '{Full("")}' with '{p.Full("")}'");
        return changes.Inodes;
    }

    public IReadOnlyList<(ulong Dir, string Name)> NamesOf(ulong ino)
    {
        var e = _fs.InodeNames(NodeIds.Encode(_tree, ino), out var names);
        if (e == Errno.ENOENT) return [];
        if (e != Errno.OK) throw new FsException(e, $"send: cannot read the names of inode {ino} of '{Full("")}'") { Inode = ino };
        return names.ConvertAll(n => (NodeIds.Decode(n.Dir).Ino, n.Name));
    }

    public IReadOnlyCollection<ulong>? InodesReferencing(ulong bytenr)
    {
        var e = _fs.ExtentReferrers(bytenr, out var inodes);
        if (e != Errno.OK) throw new FsException(e, $"send: cannot read the references of extent {bytenr}");
        return inodes;
    }

    public ISendFile Open(string path)
    {
        ulong ino = Attr(path).Ino;
        Check(_fs.Open(ino, out _), path);
        return new File(_fs, ino, Full(path));
    }

    private sealed class File(Filesystem fs, ulong ino, string path) : ISendFile
    {
        private bool _closed;

        private void Check(Errno e)
        {
            if (e != Errno.OK) throw new FsException(e, $"cannot read '{path}'") { Inode = ino };
        }

        public long NextData(long offset)
        {
            var e = fs.Seek(ino, (ulong)offset, data: true, out ulong r);
            if (e == Errno.ENXIO) return -1;
            Check(e);
            return (long)r;
        }

        public long NextHole(long offset)
        {
            Check(fs.Seek(ino, (ulong)offset, data: false, out ulong r));
            return (long)r;
        }

        public int Read(long offset, Span<byte> buffer)
        {
            Check(fs.Read(ino, (ulong)offset, buffer, out int n));
            return n;
        }

        public IReadOnlyList<ExtentMapping>? Extents()
        {
            Check(fs.ExtentMap(ino, out var map));
            return map;
        }

        public void Dispose()
        {
            if (_closed) return;
            _closed = true;
            fs.Release(ino);
        }
    }
}

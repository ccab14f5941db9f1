using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir.Api.Send;

/// <summary>
/// A subvolume of an open image (<see cref="ReservoirFileSystem"/>), read through the engine by
/// inode: symbolic links are never followed (their own attributes and xattrs are sent), and a
/// directory entry that names another subvolume's root is left out. Against another snapshot of
/// the same image it names what changed from the engine's comparison of the two trees
/// (<see cref="Filesystem.ChangedInodes"/>).
/// </summary>
public sealed class ImageSendSource : IChangeTrackingSource
{
    private readonly ReservoirFileSystem _fs;
    private readonly string _root;
    private readonly ulong _tree;

    /// <param name="subvolumePath">the subvolume's root, a path inside the image</param>
    public ImageSendSource(ReservoirFileSystem fs, string subvolumePath)
    {
        _fs = fs;
        _root = subvolumePath.TrimEnd('/');
        Check(_fs.Posix.Lstat(Full(""), out var a), "");
        _tree = NodeIds.Decode(a.Ino).TreeId;
    }

    private string Full(string path) => path.Length == 0 ? (_root.Length == 0 ? "/" : _root) : _root + "/" + path;

    private void Check(Errno e, string path)
    {
        if (e != Errno.OK) throw new FsException(e, $"cannot read '{Full(path)}'");
    }

    private InodeAttr Attr(string path)
    {
        Check(_fs.Posix.Lstat(Full(path), out var a), path);
        return a;
    }

    public SendStat Lstat(string path)
    {
        var a = Attr(path);
        return new SendStat(NodeIds.Decode(a.Ino).Ino, a.Mode, a.Nlink, a.Uid, a.Gid, a.Rdev, a.Size, a.Atime, a.Mtime, a.Ctime, a.Btime);
    }

    public IReadOnlyList<string> List(string dir)
    {
        Check(_fs.Engine.ListDir(Attr(dir).Ino, out var entries), dir);
        var names = new List<string>(entries.Count);
        foreach (var e in entries)
            if (e.Name is not ("." or "..") && NodeIds.Decode(e.Ino).TreeId == _tree) names.Add(e.Name);
        return names;
    }

    public string ReadLink(string path)
    {
        Check(_fs.Engine.Readlink(Attr(path).Ino, out string target), path);
        return target;
    }

    public IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path)
    {
        ulong ino = Attr(path).Ino;
        Check(_fs.Engine.ListXattrNames(ino, out var names), path);
        var result = new List<(byte[], byte[])>(names.Count);
        foreach (var n in names)
        {
            var e = _fs.Engine.GetXattr(ino, n, out var v);
            if (e == Errno.ENODATA) continue; // removed since listed (not in a read-only subvolume)
            Check(e, path);
            result.Add((n, v));
        }
        return result;
    }

    public IReadOnlyCollection<ulong>? ChangedSince(ISendSource parent)
    {
        if (parent is not ImageSendSource p || p._fs != _fs) return null;
        var e = _fs.Engine.ChangedInodes(p._tree, _tree, out var changes);
        if (e != Errno.OK) throw new FsException(e, $"send: cannot compare '{Full("")}' with '{p.Full("")}'");
        return changes.Inodes;
    }

    public IReadOnlyList<(ulong Dir, string Name)> NamesOf(ulong ino)
    {
        var e = _fs.Engine.InodeNames(NodeIds.Encode(_tree, ino), out var names);
        if (e == Errno.ENOENT) return [];
        if (e != Errno.OK) throw new FsException(e, $"send: cannot read the names of inode {ino} of '{Full("")}'") { Inode = ino };
        return names.ConvertAll(n => (NodeIds.Decode(n.Dir).Ino, n.Name));
    }

    public IReadOnlyCollection<ulong>? InodesReferencing(ulong bytenr)
    {
        var e = _fs.Engine.ExtentReferrers(bytenr, out var inodes);
        if (e != Errno.OK) throw new FsException(e, $"send: cannot read the references of extent {bytenr}");
        return inodes;
    }

    public ISendFile Open(string path)
    {
        ulong ino = Attr(path).Ino;
        Check(_fs.Engine.Open(ino, out _), path);
        return new File(_fs.Engine, ino, Full(path));
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

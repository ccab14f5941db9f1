using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>
/// Receives into a directory of an open filesystem through the engine: an image opened with
/// <see cref="ReservoirFileSystem"/>, or the one a mount's daemon serves (a receive through the
/// mount that the daemon applies itself, <see cref="DaemonReceive"/>). Paths are resolved from
/// the destination directory, without following a final symbolic link (a stream's CHOWN, xattrs
/// and times of a link are the link's own); a parent or clone source the stream names is found
/// by its path from the image's root. Consecutive WRITEs to one file keep it open. The received
/// subvolume is made read-only at its END, with the sent subvolume's uuid recorded as its
/// received uuid, and deleted if the stream fails.
/// </summary>
public sealed class ImageReceiveTarget : IReceiveTarget
{
    private readonly Filesystem _engine;
    private readonly PosixApi _posix;
    private readonly string _shown;
    private string? _subvolume;
    private string? _openPath;
    private ulong _openIno;

    /// <summary>The names of the subvolumes this receive made in the destination, kept or
    /// deleted (a mount's daemon tells the kernel to forget what it knew of them).</summary>
    public List<string> Made { get; } = new();

    /// <param name="destination">an existing directory inside the image</param>
    public ImageReceiveTarget(ReservoirFileSystem fs, string destination)
        : this(fs.Engine, DirectoryNode(fs, destination), destination)
    {
    }

    /// <param name="destination">the node id of an existing directory</param>
    /// <param name="shownAs">how messages name it</param>
    public ImageReceiveTarget(Filesystem engine, ulong destination, string shownAs)
    {
        _engine = engine;
        _posix = new PosixApi(engine, destination);
        _shown = shownAs.Length > 0 && shownAs.TrimEnd('/').Length == 0 ? "/" : shownAs.TrimEnd('/');
        if (engine.GetAttr(destination, out var a) != Errno.OK || !a.IsDir)
            throw new FsException(Errno.ENOTDIR, $"receive: '{shownAs}' is not a directory");
        _paths = new ReceivePaths(p => P.Lstat(Full(p), out var at) == Errno.OK && at.IsLnk);
    }

    private static ulong DirectoryNode(ReservoirFileSystem fs, string destination)
    {
        string d = destination.TrimEnd('/');
        if (fs.Posix.Stat(d.Length == 0 ? "/" : d, out var a) != Errno.OK || !a.IsDir)
            throw new FsException(Errno.ENOTDIR, $"receive: '{destination}' is not a directory in the image");
        return a.Ino;
    }

    private readonly ReceivePaths _paths;

    private PosixApi P => _posix;
    private Filesystem E => _engine;

    /// <summary>A path of the subvolume being received, relative to the destination.</summary>
    private string Full(string path) => path.Length == 0 ? _subvolume! : _subvolume + "/" + path;

    /// <summary>How messages name a path of the subvolume being received.</summary>
    private string Shown(string path) => _shown.Length == 0 ? Full(path) : _shown.EndsWith('/') ? _shown + Full(path) : _shown + "/" + Full(path);

    /// <summary><see cref="Full"/> of a path a command names, once no directory on the way is a
    /// symbolic link (<see cref="ReceivePaths"/>).</summary>
    private string Safe(string path)
    {
        _paths.Check(path);
        return Full(path);
    }

    private void Check(Errno e, string what, string path)
    {
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot {what} '{Shown(path)}'");
    }

    private ulong Node(string path, string what)
    {
        Check(P.Lstat(Safe(path), out var a), what, path);
        return a.Ino;
    }

    public void BeginSubvolume(string name)
    {
        _subvolume = name;
        var e = P.CreateSubvolume(_subvolume);
        if (e == Errno.EEXIST) throw new FsException(e, $"receive: '{Shown("")}' exists already");
        if (e == Errno.OK) Made.Add(name);
        Check(e, "create the subvolume", "");
    }

    public void BeginSnapshot(string name, string parent)
    {
        _subvolume = name;
        var e = P.CreateSnapshot(parent, _subvolume, readOnly: false);
        if (e == Errno.EEXIST) throw new FsException(e, $"receive: '{Shown("")}' exists already");
        if (e == Errno.OK) Made.Add(name);
        Check(e, $"snapshot '{parent}' as", "");
    }

    public string? FindSubvolume(Guid uuid, ulong ctransid)
    {
        var le = E.ListSubvolumes(out var all);
        if (le != Errno.OK) throw new FsException(le, "receive: cannot list the subvolumes");
        int at = StreamIdentity.Find(all.Select(x => (x.Uuid, x.ReceivedUuid, x.Generation, x.ReadOnly)).ToList(), uuid, ctransid);
        return at < 0 ? null : "/" + all[at].Path;
    }

    public void Mkfile(string path)
    {
        Close();
        Check(P.Open(Safe(path), OpenFlags.WriteOnly | OpenFlags.Create | OpenFlags.Exclusive, 0x180, out var a), "create", path);
        P.Close(a.Ino);
    }

    public void Mkdir(string path) => Check(P.Mkdir(Safe(path), 0x1C0), "create the directory", path);
    public void Mknod(string path, uint mode, ulong rdev) => Check(P.Mknod(Safe(path), mode, rdev), "create", path);
    public void Symlink(string path, string target) => Check(P.Symlink(target, Safe(path)), "create the symbolic link", path);

    public void Rename(string from, string to)
    {
        Close();
        Check(P.Rename(Safe(from), Safe(to)), $"rename to '{Full(to)}'", from);
        _paths.Changed();
    }

    public void Link(string path, string existing) => Check(P.Link(Safe(existing), Safe(path)), $"link to '{Full(existing)}' as", path);

    public void Unlink(string path)
    {
        Close();
        Check(P.Unlink(Safe(path)), "remove", path);
        _paths.Changed();
    }

    public void Rmdir(string path)
    {
        Check(P.Rmdir(Safe(path)), "remove the directory", path);
        _paths.Changed();
    }

    public void SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) =>
        Check(E.SetXattr(Node(path, "set an xattr of"), name, value), $"set attribute {Encoding.UTF8.GetString(name)} of", path);

    public void RemoveXattr(string path, ReadOnlySpan<byte> name) =>
        Check(E.RemoveXattr(Node(path, "remove an xattr of"), name), $"remove attribute {Encoding.UTF8.GetString(name)} of", path);

    private ulong OpenForWrite(string path)
    {
        if (_openPath == path) return _openIno;
        Close();
        Check(P.Open(Safe(path), OpenFlags.WriteOnly | OpenFlags.NoFollow, 0, out var a), "open", path);
        if (!a.IsReg) { P.Close(a.Ino); Check(Errno.EINVAL, "write to", path); }
        _openPath = path;
        _openIno = a.Ino;
        return a.Ino;
    }

    public void Write(string path, long offset, ReadOnlySpan<byte> data)
    {
        ulong ino = OpenForWrite(path);
        while (data.Length > 0)
        {
            Check(E.Write(ino, (ulong)offset, data, out int n), "write to", path);
            if (n <= 0) Check(Errno.EIO, "write to", path);
            data = data[n..];
            offset += n;
        }
    }

    public void Clone(string path, long offset, long length, string? sourceSubvolume, string source, long sourceOffset)
    {
        ulong dst = OpenForWrite(path);
        // The source too stays inside its subvolume (another one's links may point anywhere).
        if (sourceSubvolume != null)
            new ReceivePaths(p => P.Lstat(sourceSubvolume + "/" + p, out var at) == Errno.OK && at.IsLnk).Check(source);
        string from = sourceSubvolume == null ? Safe(source) : sourceSubvolume + "/" + source;
        Check(P.Lstat(from, out var src), $"clone '{from}' into", path);
        Check(E.CloneRange(src.Ino, (ulong)sourceOffset, dst, (ulong)offset, (ulong)length), $"clone '{from}' into", path);
    }

    public void Fallocate(string path, int mode, long offset, long length) =>
        Check(E.Fallocate(OpenForWrite(path), (Engine.Data.FallocateMode)mode, (ulong)offset, (ulong)length), "fallocate", path);

    public void Truncate(string path, long size)
    {
        var req = new SetAttrRequest { Mask = SetAttrMask.Size, Size = (ulong)size };
        Check(E.SetAttr(Node(path, "truncate"), req, out _), "truncate", path);
    }

    public void Chmod(string path, uint mode)
    {
        var req = new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = mode };
        Check(E.SetAttr(Node(path, "chmod"), req, out _), "chmod", path);
    }

    public void Chown(string path, uint uid, uint gid)
    {
        var req = new SetAttrRequest { Mask = SetAttrMask.Uid | SetAttrMask.Gid, Uid = uid, Gid = gid };
        Check(E.SetAttr(Node(path, "chown"), req, out _), "chown", path);
    }

    public void Utimes(string path, Timespec atime, Timespec mtime)
    {
        var req = new SetAttrRequest { Mask = SetAttrMask.Atime | SetAttrMask.Mtime, Atime = atime, Mtime = mtime };
        Check(E.SetAttr(Node(path, "set the times of"), req, out _), "set the times of", path);
    }

    private void Close()
    {
        if (_openPath == null) return;
        _openPath = null;
        P.Close(_openIno);
    }

    public void EndSubvolume(Guid receivedUuid, ulong stransid)
    {
        Close();
        ulong root = Node("", "finish");
        Check(E.SetReceivedSubvolume(root, receivedUuid, stransid), "record the received uuid of", "");
        Check(E.SetSubvolumeReadOnly(root, true), "make read-only", "");
    }

    public void Abandon()
    {
        Close();
        if (_subvolume == null) return;
        var e = P.DeleteSubvolume(_subvolume);
        if (e != Errno.OK) throw new FsException(e, $"the partly received subvolume '{Shown("")}' is left (delete it with `reservoir subvolume delete`)");
    }
}

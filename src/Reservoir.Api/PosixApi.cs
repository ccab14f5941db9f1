using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir;

[Flags]
public enum OpenFlags
{
    ReadOnly = 0,
    WriteOnly = 1,
    ReadWrite = 2,
    Create = 0x40,     // O_CREAT
    Exclusive = 0x80,  // O_EXCL
    Truncate = 0x200,  // O_TRUNC
    Append = 0x400,    // O_APPEND
    NoFollow = 0x20000,// O_NOFOLLOW
    Directory = 0x10000,
}

/// <summary>
/// Path-based operations with exact POSIX semantics, for programs that want errno values rather
/// than exceptions. Paths are absolute within the filesystem ("/" is its root); ownership of
/// new files comes from <see cref="Uid"/> and <see cref="Gid"/>.
/// </summary>
public sealed class PosixApi
{
    private readonly Filesystem _fs;
    private readonly PathWalker _walk;
    public uint Uid { get; set; }
    public uint Gid { get; set; }

    /// <param name="start">where relative paths start (the root unless given)</param>
    internal PosixApi(Filesystem fs, ulong start = Filesystem.RootIno)
    {
        _fs = fs;
        _walk = new PathWalker(fs, start);
    }

    public Errno Stat(string path, out InodeAttr attr) => _walk.Resolve(path, true, out attr);
    public Errno Lstat(string path, out InodeAttr attr) => _walk.Resolve(path, false, out attr);

    public Errno Mkdir(string path, uint mode = 0x1ED)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.Mkdir(dir, name, mode, Uid, Gid, out _);
    }

    public Errno Mknod(string path, uint mode, ulong rdev = 0)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.Mknod(dir, name, mode, rdev, Uid, Gid, out _);
    }

    public Errno Unlink(string path)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EISDIR;
        return _fs.Unlink(dir, name);
    }

    /// <summary>Creates a subvolume at <paramref name="path"/> (btrfs subvolume create).</summary>
    public Errno CreateSubvolume(string path)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.CreateSubvolume(dir, name, Uid, Gid, out _);
    }

    /// <summary>Snapshots the subvolume at <paramref name="source"/> as <paramref name="dest"/>
    /// (btrfs subvolume snapshot [-r]).</summary>
    public Errno CreateSnapshot(string source, string dest, bool readOnly)
    {
        var e = _walk.Resolve(source, true, out var src);
        if (e != Errno.OK) return e;
        e = _walk.Parent(dest, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.CreateSnapshot(src.Ino, dir, name, readOnly, out _);
    }

    /// <summary>Deletes the subvolume at <paramref name="path"/> with everything in it.</summary>
    public Errno DeleteSubvolume(string path)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EBUSY;
        return _fs.DeleteSubvolume(dir, name);
    }

    public Errno Rmdir(string path)
    {
        var e = _walk.Parent(path, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EBUSY;
        return _fs.Rmdir(dir, name);
    }

    public Errno Rename(string from, string to, RenameFlags flags = RenameFlags.None)
    {
        var e = _walk.Parent(from, out ulong od, out var on);
        if (e != Errno.OK) return e;
        e = _walk.Parent(to, out ulong nd, out var nn);
        if (e != Errno.OK) return e;
        if (on.Length == 0 || nn.Length == 0) return Errno.EBUSY;
        return _fs.Rename(od, on, nd, nn, flags, Uid, Gid);
    }

    public Errno Symlink(string target, string linkPath)
    {
        var e = _walk.Parent(linkPath, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.Symlink(dir, name, System.Text.Encoding.UTF8.GetBytes(target), Uid, Gid, out _);
    }

    public Errno Readlink(string path, out string target)
    {
        target = "";
        var e = _walk.Resolve(path, false, out var a);
        if (e != Errno.OK) return e;
        return _fs.Readlink(a.Ino, out target);
    }

    public Errno Link(string existing, string newPath)
    {
        var e = _walk.Resolve(existing, false, out var a);
        return e != Errno.OK ? e : LinkOpen(a.Ino, newPath);
    }

    /// <summary>linkat(fd, "", AT_FDCWD, newPath, AT_EMPTY_PATH): names the inode an open
    /// handle holds, a nameless one from <see cref="OpenTmpfile"/> too.</summary>
    public Errno LinkOpen(ulong ino, string newPath)
    {
        var e = _walk.Parent(newPath, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return Errno.EEXIST;
        return _fs.Link(ino, dir, name, out _);
    }

    /// <summary>open(O_TMPFILE): a nameless regular file in the directory <paramref name="dir"/>,
    /// the caller's, open for writing (<see cref="Close"/>); <see cref="LinkOpen"/> names it.</summary>
    public Errno OpenTmpfile(string dir, uint mode, out InodeAttr attr)
    {
        var e = _walk.Resolve(dir, true, out var d);
        if (e != Errno.OK) { attr = default; return e; }
        e = _fs.Tmpfile(d.Ino, mode, Uid, Gid, out attr);
        return e != Errno.OK ? e : _fs.Open(attr.Ino, true, out attr);
    }

    /// <summary>open(2): returns the inode to use with <see cref="Filesystem"/> Read/Write; the
    /// caller must <see cref="Close"/> it.</summary>
    public Errno Open(string path, OpenFlags flags, uint mode, out InodeAttr attr)
    {
        attr = default;
        var e = _walk.Resolve(path, (flags & OpenFlags.NoFollow) == 0, out attr);
        if (e == Errno.ENOENT && (flags & OpenFlags.Create) != 0)
        {
            e = _walk.Parent(path, out ulong dir, out var name);
            if (e != Errno.OK) return e;
            if (name.Length == 0) return Errno.EISDIR;
            e = _fs.Create(dir, name, mode, Uid, Gid, out attr);
            if (e == Errno.EEXIST && (flags & OpenFlags.Exclusive) == 0) e = _walk.Resolve(path, true, out attr);
            if (e != Errno.OK) return e;
        }
        else if (e != Errno.OK) return e;
        else if ((flags & (OpenFlags.Create | OpenFlags.Exclusive)) == (OpenFlags.Create | OpenFlags.Exclusive)) return Errno.EEXIST;
        if (attr.IsLnk) return Errno.ELOOP;
        bool writing = (flags & (OpenFlags.WriteOnly | OpenFlags.ReadWrite)) != 0;
        if (attr.IsDir && writing) return Errno.EISDIR;
        if ((flags & OpenFlags.Directory) != 0 && !attr.IsDir) return Errno.ENOTDIR;
        e = _fs.Open(attr.Ino, writing && attr.IsReg, out attr);
        if (e != Errno.OK) return e;
        if ((flags & OpenFlags.Truncate) != 0 && writing && attr.IsReg && attr.Size != 0)
        {
            e = _fs.Truncate(attr.Ino, 0);
            if (e != Errno.OK) { _fs.Release(attr.Ino); return e; }
            _fs.GetAttr(attr.Ino, out attr);
        }
        return Errno.OK;
    }

    public Errno Close(ulong ino) => _fs.Release(ino);

    /// <summary>FICLONERANGE between two existing files by path (see <see cref="Filesystem.CloneRange"/>).</summary>
    public Errno CloneRange(string source, ulong srcOff, string dest, ulong dstOff, ulong len)
    {
        var e = ResolveBoth(source, dest, out var src, out var dst);
        return e != Errno.OK ? e : _fs.CloneRange(src.Ino, srcOff, dst.Ino, dstOff, len);
    }

    /// <summary>Two existing paths (links followed), the source's first.</summary>
    private Errno ResolveBoth(string source, string dest, out InodeAttr src, out InodeAttr dst)
    {
        dst = default;
        var e = _walk.Resolve(source, true, out src);
        return e != Errno.OK ? e : _walk.Resolve(dest, true, out dst);
    }

    /// <summary>copy_file_range(2) to completion (or the source's end): extents are shared
    /// where the ranges allow, copied otherwise. <paramref name="len"/> 0: to the end.</summary>
    public Errno CopyFileRange(string source, ulong srcOff, string dest, ulong dstOff, ulong len) =>
        CopyFileRange(source, srcOff, dest, dstOff, len, out _);

    /// <summary>As above; <paramref name="copied"/> says how much was copied before an error
    /// stopped the loop (EDQUOT or ENOSPC part way leaves a prefix copied, as with write(2)).</summary>
    public Errno CopyFileRange(string source, ulong srcOff, string dest, ulong dstOff, ulong len, out ulong copied)
    {
        copied = 0;
        var e = ResolveBoth(source, dest, out var src, out var dst);
        if (e != Errno.OK) return e;
        if (len == 0) len = src.Size > srcOff ? src.Size - srcOff : 0;
        while (len > 0)
        {
            e = _fs.CopyFileRange(src.Ino, srcOff, dst.Ino, dstOff, len, out ulong n);
            if (e != Errno.OK) return e;
            if (n == 0) break;
            srcOff += n; dstOff += n; len -= n; copied += n;
        }
        return Errno.OK;
    }

    /// <summary>
    /// Copies <paramref name="source"/> to <paramref name="dest"/> as a reflink (cp
    /// --reflink=always): dest is created (or truncated) and shares all of source's data
    /// extents. Small files whose data is inline in the tree are copied instead (there is no
    /// extent to share). Across subvolumes too, as on btrfs; with quotas on, EDQUOT (before any
    /// change) when the destination's group or one above it would pass a limit.
    /// </summary>
    public Errno CloneFile(string source, string dest)
    {
        var e = _walk.Resolve(source, true, out var src);
        if (e != Errno.OK) return e;
        if (src.IsDir) return Errno.EISDIR;
        if (!src.IsReg) return Errno.EINVAL;
        // Opened without O_TRUNC: dest may be the source itself (the same path, or another
        // link to it), which a truncation first would empty; cp refuses that too.
        e = Open(dest, OpenFlags.WriteOnly | OpenFlags.Create, src.Mode & 0xFFF, out var dst);
        if (e != Errno.OK) return e;
        try
        {
            if (dst.Ino == src.Ino) return Errno.EINVAL;
            e = _fs.Truncate(dst.Ino, 0);
            if (e != Errno.OK) return e;
            e = _fs.CloneRange(src.Ino, 0, dst.Ino, 0, 0);
            if (e != Errno.OK) return e;
            return _fs.GetAttr(dst.Ino, out var d) == Errno.OK && d.Size == src.Size ? Errno.OK : Errno.EIO;
        }
        finally { _fs.Release(dst.Ino); }
    }

    public Errno Truncate(string path, ulong size)
    {
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.Truncate(a.Ino, size);
    }

    public Errno Chmod(string path, uint mode) => SetAttr(path, new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = mode });
    public Errno Chown(string path, uint uid, uint gid) => SetAttr(path, new SetAttrRequest { Mask = SetAttrMask.Uid | SetAttrMask.Gid, Uid = uid, Gid = gid });

    public Errno Utimens(string path, Format.Timespec atime, Format.Timespec mtime) =>
        SetAttr(path, new SetAttrRequest { Mask = SetAttrMask.Atime | SetAttrMask.Mtime, Atime = atime, Mtime = mtime });

    public Errno SetAttr(string path, in SetAttrRequest req)
    {
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.SetAttr(a.Ino, req, out _);
    }

    public Errno ReadDir(string path, out List<DirEntryInfo> entries)
    {
        entries = new();
        var e = _walk.Resolve(path, true, out var a);
        if (e != Errno.OK) return e;
        return _fs.ListDir(a.Ino, out entries);
    }

    public Errno GetXattr(string path, string name, out byte[] value) => GetXattr(path, System.Text.Encoding.UTF8.GetBytes(name), out value);

    public Errno SetXattr(string path, string name, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.Any) =>
        SetXattr(path, System.Text.Encoding.UTF8.GetBytes(name), value, flags);

    public Errno RemoveXattr(string path, string name)
    {
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.RemoveXattr(a.Ino, name);
    }

    /// <summary>The attribute names byte for byte (<see cref="ListXattr"/> decodes them as UTF-8).</summary>
    public Errno ListXattrNames(string path, out List<byte[]> names)
    {
        names = new();
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.ListXattrNames(a.Ino, out names);
    }

    public Errno GetXattr(string path, ReadOnlySpan<byte> name, out byte[] value)
    {
        value = [];
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.GetXattr(a.Ino, name, out value);
    }

    public Errno SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.Any)
    {
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.SetXattr(a.Ino, name, value, flags);
    }

    public Errno ListXattr(string path, out List<string> names)
    {
        names = new();
        var e = _walk.Resolve(path, true, out var a);
        return e != Errno.OK ? e : _fs.ListXattr(a.Ino, out names);
    }
}

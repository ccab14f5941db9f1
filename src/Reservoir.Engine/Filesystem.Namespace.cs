using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    public Errno Lookup(ulong dir, string name, out InodeAttr attr) => Lookup(dir, Utf8(name), out attr);

    public Errno Lookup(ulong dir, ReadOnlySpan<byte> name, out InodeAttr attr)
    {
        attr = default;
        var e = LookupIno(dir, name, out ulong ino, out _);
        if (e != Errno.OK) return e;
        return GetAttr(ino, out attr);
    }

    /// <summary>Finds a name in a directory without taking the directory's lock for long.</summary>
    internal Errno LookupIno(ulong dir, ReadOnlySpan<byte> name, out ulong ino, out byte type)
    {
        ino = 0; type = 0;
        if (name.Length > FormatConstants.MaxNameLength) return Errno.ENAMETOOLONG;
        var e = Get(dir, out var d);
        if (e != Errno.OK) return e;
        try
        {
            using var lk = d.Lock.Read();
            if (!d.IsDir) return Errno.ENOTDIR;
            if (d.Deleted) return Errno.ENOENT;
            if (name.SequenceEqual("."u8)) { ino = dir; type = FileTypes.Dir; return Errno.OK; }
            if (name.SequenceEqual(".."u8))
            {
                if (d.Ino == RootIno) ino = ParentOfSubvolumeRoot(d.Subvol);
                else
                {
                    using var lk2 = d.Subvol.Tree.Lock.Read();
                    ino = NodeIds.Encode(d.Subvol.Id, DirItems.ParentOf(d.Subvol.Tree, d.Ino));
                }
                type = FileTypes.Dir;
                return Errno.OK;
            }
            return LookupLocked(d, name, out ino, out type);
        }
        catch (FsException ex) { return Guard(dir, () => throw ex); }
        finally { Put(d); }
    }

    /// <summary>Caller holds the directory's lock. Answers the node id of the entry.</summary>
    private Errno LookupLocked(Inode dir, ReadOnlySpan<byte> name, out ulong ino, out byte type)
    {
        ino = 0; type = 0;
        var t = dir.Subvol.Tree;
        using var lk = t.Lock.Read();
        if (!DirItems.Find(t, dir.Ino, KeyTypes.DirItem, name, out var loc, out type, out _)) return Errno.ENOENT;
        ino = EntryNodeId(dir.Subvol, loc);
        return Errno.OK;
    }

    /// <summary>The node id a directory entry of <paramref name="sv"/> names: an inode of the
    /// same tree, or the root directory of another subvolume (location = its ROOT_ITEM key).</summary>
    internal static ulong EntryNodeId(Subvolume sv, Key location) =>
        location.Type == KeyTypes.RootItem ? NodeIds.Encode(location.ObjectId, RootIno) : NodeIds.Encode(sv.Id, location.ObjectId);

    public Errno GetAttr(ulong ino, out InodeAttr attr)
    {
        attr = default;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            using var lk = inode.Lock.Read();
            if (inode.Deleted) return Errno.ENOENT;
            attr = Attr(inode);
            return Errno.OK;
        }
        finally { Put(inode); }
    }

    public Errno Create(ulong dir, string name, uint mode, uint uid, uint gid, out InodeAttr attr) =>
        MakeNode(dir, Utf8(name), Inodes.Mode.IFREG | (mode & Inodes.Mode.PermMask), 0, uid, gid, default, 0, false, out attr);

    public Errno Mknod(ulong dir, string name, uint mode, ulong rdev, uint uid, uint gid, out InodeAttr attr) =>
        Mknod(dir, Utf8(name), mode, rdev, uid, gid, out attr);

    /// <summary>mknod(2). <paramref name="umask"/> applies unless the directory has a default
    /// ACL (the FUSE front end passes the caller's; 0 from the embedded API). Likewise
    /// <see cref="Mkdir(ulong, ReadOnlySpan{byte}, uint, uint, uint, out InodeAttr, uint)"/> and
    /// <see cref="Create(ulong, ReadOnlySpan{byte}, uint, uint, uint, out InodeAttr, uint)"/>.</summary>
    public Errno Mknod(ulong dir, ReadOnlySpan<byte> name, uint mode, ulong rdev, uint uid, uint gid, out InodeAttr attr, uint umask = 0)
    {
        attr = default;
        if ((mode & Inodes.Mode.IFMT) == 0) mode |= Inodes.Mode.IFREG;
        if (!Inodes.Mode.ValidType(mode) || Inodes.Mode.IsDir(mode) || Inodes.Mode.IsLnk(mode)) return Errno.EINVAL;
        return MakeNode(dir, name, mode, rdev, uid, gid, default, umask, false, out attr);
    }

    public Errno Mkdir(ulong dir, string name, uint mode, uint uid, uint gid, out InodeAttr attr) =>
        Mkdir(dir, Utf8(name), mode, uid, gid, out attr);

    public Errno Mkdir(ulong dir, ReadOnlySpan<byte> name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0) =>
        MakeNode(dir, name, Inodes.Mode.IFDIR | (mode & Inodes.Mode.PermMask), 0, uid, gid, default, umask, false, out attr);

    public Errno Symlink(ulong dir, string name, string target, uint uid, uint gid, out InodeAttr attr) =>
        Symlink(dir, Utf8(name), Utf8(target), uid, gid, out attr);

    public Errno Symlink(ulong dir, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, uint uid, uint gid, out InodeAttr attr)
    {
        attr = default;
        if (target.Length == 0) return Errno.ENOENT;
        if (target.Length >= 4096 || target.Length + FileExtentItem.HeaderSize > Top.Tree.MaxItemData) return Errno.ENAMETOOLONG;
        return MakeNode(dir, name, Inodes.Mode.IFLNK | 0x1FF, 0, uid, gid, target, 0, false, out attr);
    }

    public Errno Create(ulong dir, ReadOnlySpan<byte> name, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0) =>
        MakeNode(dir, name, Inodes.Mode.IFREG | (mode & Inodes.Mode.PermMask), 0, uid, gid, default, umask, false, out attr);

    /// <summary>
    /// open(O_TMPFILE): a regular file in <paramref name="dir"/>'s subvolume with no name, its
    /// link count 0 and an orphan item written with it (so a crash, or the last close without
    /// a link, deletes it, as an unlinked open file goes), owned and permitted as a file created
    /// in <paramref name="dir"/> would be. linkat gives it a name (<see cref="Link(ulong, ulong, ReadOnlySpan{byte}, out InodeAttr)"/>
    /// revives an orphan). The caller opens it before anything can evict it.
    /// </summary>
    public Errno Tmpfile(ulong dir, uint mode, uint uid, uint gid, out InodeAttr attr, uint umask = 0) =>
        MakeNode(dir, default, Inodes.Mode.IFREG | (mode & Inodes.Mode.PermMask), 0, uid, gid, default, umask, true, out attr);

    /// <summary>Creates an inode of any type and links it into <paramref name="dirIno"/> (or,
    /// <paramref name="tmpfile"/>, leaves it nameless and orphaned: <see cref="Tmpfile"/>).
    /// New inodes take the directory's group when it is setgid, as POSIX allows and Linux does,
    /// and their ACLs from its default ACL, else the umask (<see cref="InheritAclLocked"/>).</summary>
    private Errno MakeNode(ulong dirIno, ReadOnlySpan<byte> name, uint mode, ulong rdev, uint uid, uint gid, ReadOnlySpan<byte> symlinkTarget, uint umask, bool tmpfile, out InodeAttr attr)
    {
        attr = default;
        var e = tmpfile ? Errno.OK : CheckNewName(name);
        if (e != Errno.OK) return e;
        e = GetWritable(dirIno, out var dir);
        if (e != Errno.OK) return e;
        var nameCopy = name.ToArray();
        var target = symlinkTarget.ToArray();
        InodeAttr result = default;
        try
        {
            e = Guard(dirIno, () =>
            {
                using var lk = dir.Lock.Write();
                bool isDir = Inodes.Mode.IsDir(mode);
                var ce = tmpfile ? (!dir.IsDir ? Errno.ENOTDIR : dir.Deleted || dir.Item.Nlink == 0 ? Errno.ENOENT : Errno.OK) : CanAddEntryLocked(dir, nameCopy, isDir);
                if (ce != Errno.OK) return ce;
                var (accessAcl, defaultAcl) = InheritAclLocked(dir, ref mode, umask, dirIno);
                var se = Fs.TryStart(accessAcl != null || defaultAcl != null ? 8 : 6, out var h);
                if (se != Errno.OK) return se;
                using (h)
                {
                    ulong ino = dir.Subvol.AllocIno();
                    var now = Timespec.Now();
                    if ((dir.Item.Mode & Inodes.Mode.ISGID) != 0)
                    {
                        gid = dir.Item.Gid;
                        if (isDir) mode |= Inodes.Mode.ISGID;
                    }
                    var item = new InodeItem
                    {
                        Generation = h.Transid, Transid = h.Transid, Nlink = tmpfile ? 0u : isDir ? 2u : 1u, Uid = uid, Gid = gid, Mode = mode,
                        Rdev = rdev, Atime = now, Ctime = now, Mtime = now, Otime = now,
                        FileSize = (ulong)target.Length,
                        // A no-CoW directory's (chattr +C) files and directories start no-CoW
                        // (btrfs_inherit_iflags); files then keep no checksums either.
                        Flags = (dir.Item.Flags & InodeFlags.NoDataCow) == 0 ? InodeFlags.None
                            : Inodes.Mode.IsReg(mode) ? InodeFlags.NoDataCow | InodeFlags.NoDataSum
                            : isDir ? InodeFlags.NoDataCow : InodeFlags.None,
                    };
                    var t = dir.Subvol.Tree;
                    using (t.Lock.Write())
                    {
                        DirItems.PutInode(h, t, ino, item);
                        if (accessAcl != null) DirItems.AddHashed(h, t, ino, KeyTypes.XattrItem, PosixAcl.AccessName, default, 0, accessAcl.ToXattr());
                        if (defaultAcl != null) DirItems.AddHashed(h, t, ino, KeyTypes.XattrItem, PosixAcl.DefaultName, default, 0, defaultAcl.ToXattr());
                        if (tmpfile)
                        {
                            // Nameless: the directory does not change (Linux leaves its times
                            // alone too); the orphan item deletes it after a crash.
                            t.Put(h, DirItems.OrphanKey(ino), ReadOnlySpan<byte>.Empty);
                        }
                        else
                        {
                            if (dir.NextDirIndex == 0) dir.NextDirIndex = DirItems.FindNextIndex(t, dir.Ino);
                            DirItems.AddDirEntry(h, t, dir.Ino, nameCopy, ino, FileTypes.FromMode(mode), dir.NextDirIndex++);
                            if (target.Length > 0) FileExtents.InsertInline(h, t, ino, target);
                            dir.Item.FileSize += (ulong)nameCopy.Length * 2;
                            if (isDir) dir.Item.Nlink++;
                            Touch(ref dir.Item, h.Transid);
                            DirItems.PutInode(h, t, dir);
                        }
                    }
                    var inode = dir.Subvol.Adopt(ino, item);
                    inode.Orphaned = tmpfile;
                    inode.AccessAcl = KnownAcl.Of(accessAcl);
                    if (isDir) inode.DefaultAcl = KnownAcl.Of(defaultAcl);
                    result = Attr(inode);
                    Put(inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(dir); }
        attr = result;
        return e;
    }

    /// <summary>A name for a new entry: <see cref="CheckName"/>, with "." and ".." answering
    /// EEXIST (they always exist), as mkdir(2) and friends do.</summary>
    private static Errno CheckNewName(ReadOnlySpan<byte> name)
    {
        var e = CheckName(name);
        return e == Errno.EINVAL && (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) ? Errno.EEXIST : e;
    }

    /// <summary>Whether <paramref name="dir"/> can take a new entry <paramref name="name"/>
    /// (a directory, still linked, the name free, and room for one more subdirectory's link
    /// when <paramref name="isDir"/>). Caller holds the directory's lock.</summary>
    private Errno CanAddEntryLocked(Inode dir, byte[] name, bool isDir)
    {
        if (!dir.IsDir) return Errno.ENOTDIR;
        if (dir.Deleted || dir.Item.Nlink == 0) return Errno.ENOENT;
        if (LookupLocked(dir, name, out _, out _) == Errno.OK) return Errno.EEXIST;
        if (isDir && dir.Item.Nlink >= 65000) return Errno.EMLINK;
        return NameRoomLocked(dir, name);
    }

    /// <summary>EOVERFLOW when the directory's DIR_ITEM for the name's hash cannot take one more
    /// entry (<see cref="DirItems.HashedRoom"/>: only names made to collide fill it), as btrfs
    /// answers; checked before a transaction changes anything, so the refusal leaves the
    /// filesystem as it was. Caller holds the directory's lock, which keeps its names.</summary>
    private static Errno NameRoomLocked(Inode dir, byte[] name)
    {
        var t = dir.Subvol.Tree;
        using (t.Lock.Read())
            return DirItems.HashedRoom(t, dir.Ino, KeyTypes.DirItem, name, 0) ? Errno.OK : Errno.EOVERFLOW;
    }

    /// <summary>EMLINK when the inode's back-references cannot take one more name in the
    /// directory (<see cref="DirItems.InodeRefRoom"/>). Caller holds the inode's lock and the
    /// directory's.</summary>
    private static Errno InodeRefRoomLocked(Inode inode, Inode dir, byte[] name)
    {
        var t = dir.Subvol.Tree;
        using (t.Lock.Read())
            return DirItems.InodeRefRoom(t, inode.Ino, dir.Ino, name) ? Errno.OK : Errno.EMLINK;
    }

    public Errno Readlink(ulong ino, out byte[] target)
    {
        target = [];
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        byte[] result = [];
        try
        {
            e = Guard(ino, () =>
            {
                using var lk = inode.Lock.Read();
                if (!inode.IsLnk) return Errno.EINVAL;
                using var lk2 = inode.Subvol.Tree.Lock.Read();
                var maps = FileExtents.Overlapping(inode.Subvol.Tree, inode.Ino, 0, 1);
                if (maps.Count != 1 || maps[0].Inline == null) throw new CorruptionException("symlink without an inline target", inode: ino);
                result = maps[0].Inline!;
                return Errno.OK;
            });
        }
        finally { Put(inode); }
        target = result;
        return e;
    }

    public Errno Readlink(ulong ino, out string target)
    {
        var e = Readlink(ino, out byte[] b);
        target = e == Errno.OK ? Encoding.UTF8.GetString(b) : "";
        return e;
    }

    public Errno Link(ulong ino, ulong newDir, string name, out InodeAttr attr) => Link(ino, newDir, Utf8(name), out attr);

    public Errno Link(ulong ino, ulong newDir, ReadOnlySpan<byte> name, out InodeAttr attr)
    {
        attr = default;
        var e = CheckName(name);
        if (e != Errno.OK) return e == Errno.EINVAL && (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) ? Errno.EEXIST : e;
        e = GetWritable(newDir, out var dir);
        if (e != Errno.OK) return e;
        var nameCopy = name.ToArray();
        InodeAttr result = default;
        Inode? target = null;
        try
        {
            e = Get(ino, out target);
            if (e != Errno.OK) return e;
            if (target.IsDir) return Errno.EPERM;
            if (target.Subvol != dir.Subvol) return Errno.EXDEV; // hard links stay inside a subvolume
            var tgt = target;
            e = Guard(ino, () =>
            {
                // Directory before the inode it gains a name for (lock order, FsInfo).
                using var lk = dir.Lock.Write();
                using var lk2 = tgt.Lock.Write();
                if (!dir.IsDir) return Errno.ENOTDIR;
                if (dir.Deleted || dir.Item.Nlink == 0) return Errno.ENOENT;
                if (tgt.Deleted || (tgt.Item.Nlink == 0 && !tgt.Orphaned)) return Errno.ENOENT;
                if (tgt.Item.Nlink >= 65000) return Errno.EMLINK;
                if (LookupLocked(dir, nameCopy, out _, out _) == Errno.OK) return Errno.EEXIST;
                // Refused before anything changes: a name the directory's hash chain or the
                // inode's back-references cannot take.
                var re = NameRoomLocked(dir, nameCopy);
                if (re == Errno.OK) re = InodeRefRoomLocked(tgt, dir, nameCopy);
                if (re != Errno.OK) return re;
                var t = dir.Subvol.Tree;
                var se = Fs.TryStart(6, out var h);
                if (se != Errno.OK) return se;
                using (h)
                {
                    using (t.Lock.Write())
                    {
                        if (dir.NextDirIndex == 0) dir.NextDirIndex = DirItems.FindNextIndex(t, dir.Ino);
                        DirItems.AddDirEntry(h, t, dir.Ino, nameCopy, tgt.Ino, FileTypes.FromMode(tgt.Item.Mode), dir.NextDirIndex++);
                        if (tgt.Item.Nlink == 0 && tgt.Orphaned)
                        {
                            t.Delete(h, DirItems.OrphanKey(tgt.Ino)); // linkat(O_TMPFILE-like) revival
                            tgt.Orphaned = false;
                        }
                        tgt.Item.Nlink++;
                        Touch(ref tgt.Item, h.Transid, mtime: false);
                        DirItems.PutInode(h, t, tgt);
                        dir.Item.FileSize += (ulong)nameCopy.Length * 2;
                        Touch(ref dir.Item, h.Transid);
                        DirItems.PutInode(h, t, dir);
                    }
                    result = Attr(tgt);
                }
                return Errno.OK;
            });
        }
        finally { Put(target); Put(dir); }
        attr = result;
        return e;
    }

    public Errno Unlink(ulong dir, string name) => Remove(dir, Utf8(name), wantDir: false);
    public Errno Unlink(ulong dir, ReadOnlySpan<byte> name) => Remove(dir, name, wantDir: false);
    public Errno Rmdir(ulong dir, string name) => Remove(dir, Utf8(name), wantDir: true);
    public Errno Rmdir(ulong dir, ReadOnlySpan<byte> name) => Remove(dir, name, wantDir: true);

    private Errno Remove(ulong dirIno, ReadOnlySpan<byte> name, bool wantDir)
    {
        if (name.SequenceEqual("."u8)) return wantDir ? Errno.EINVAL : Errno.EISDIR;
        if (name.SequenceEqual(".."u8)) return wantDir ? Errno.ENOTEMPTY : Errno.EISDIR;
        var e = CheckName(name);
        if (e != Errno.OK) return e;
        e = GetWritable(dirIno, out var dir);
        if (e != Errno.OK) return e;
        var nameCopy = name.ToArray();
        Inode? victim = null;
        bool subvolume = false;
        try
        {
            e = Guard(dirIno, () =>
            {
                using var lk = dir.Lock.Write();
                if (!dir.IsDir) return Errno.ENOTDIR;
                var le = LookupLocked(dir, nameCopy, out ulong ino, out _);
                if (le != Errno.OK) return le;
                if (NodeIds.Decode(ino).TreeId != dir.Subvol.Id)
                {
                    // A subvolume: unlink refuses it like any directory; rmdir deletes it
                    // when it is empty (as btrfs does since Linux 4.18).
                    if (!wantDir) return Errno.EISDIR;
                    subvolume = true;
                    return Errno.OK;
                }
                le = Get(ino, out victim);
                if (le != Errno.OK) throw new CorruptionException($"directory {dirIno} names missing inode {ino}", inode: dirIno);
                using var lk2 = victim.Lock.Write();
                if (wantDir && !victim.IsDir) return Errno.ENOTDIR;
                if (!wantDir && victim.IsDir) return Errno.EISDIR;
                if (victim.IsDir && !IsEmptyDir(victim)) return Errno.ENOTEMPTY;
                var se = Fs.TryStart(8, out var h, useGlobalReserve: true);
                if (se != Errno.OK) return se;
                using (h)
                {
                    var t = dir.Subvol.Tree;
                    using (t.Lock.Write()) UnlinkLocked(h, dir, nameCopy, victim);
                }
                if (victim.Item.Nlink == 0 && victim.Subvol.OpenCountOf(victim) == 0) EvictLocked(victim);
                return Errno.OK;
            });
        }
        finally { Put(victim); Put(dir); }
        return e == Errno.OK && subvolume ? DeleteSubvolume(dirIno, nameCopy, requireEmpty: true) : e;
    }

    /// <summary>Removes one name of <paramref name="victim"/> from <paramref name="dir"/> and
    /// drops its link count; an inode left with no names gets an orphan item so that its space
    /// is reclaimed even across a crash. Caller holds both inode locks and the tree lock.</summary>
    private void UnlinkLocked(Tx.TransHandle h, Inode dir, byte[] name, Inode victim)
    {
        var t = dir.Subvol.Tree;
        DirItems.RemoveDirEntry(h, t, dir.Ino, name, victim.Ino);
        dir.Item.FileSize -= Math.Min(dir.Item.FileSize, (ulong)name.Length * 2);
        if (victim.IsDir)
        {
            victim.Item.Nlink = 0;
            dir.Item.Nlink--;
        }
        else victim.Item.Nlink--;
        Touch(ref dir.Item, h.Transid);
        DirItems.PutInode(h, t, dir);
        Touch(ref victim.Item, h.Transid, mtime: false);
        DirItems.PutInode(h, t, victim);
        if (victim.Item.Nlink == 0 && !victim.Orphaned)
        {
            t.Put(h, DirItems.OrphanKey(victim.Ino), ReadOnlySpan<byte>.Empty);
            victim.Orphaned = true;
        }
    }

    private static bool IsEmptyDir(Inode dir)
    {
        ulong ino = dir.Ino;
        var t = dir.Subvol.Tree;
        using var lk = t.Lock.Read();
        var path = new Tree.TreePath();
        if (!t.SeekGE(new Key(ino, KeyTypes.DirIndex, 0), path)) return true;
        var k = path.Key;
        return !(k.ObjectId == ino && k.Type == KeyTypes.DirIndex);
    }
}

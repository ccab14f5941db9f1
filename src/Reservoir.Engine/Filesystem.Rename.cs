using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>Serialises renames between directories, so that "is this directory an ancestor
    /// of that one" cannot change while a rename decides lock order and checks for loops
    /// (Linux's s_vfs_rename_mutex).</summary>
    private FsMutex? _renameLock;
    private FsMutex RenameLock => LazyLocks.Mutex(ref _renameLock, Fs.Sched, "rename");

    public Errno Rename(ulong oldDir, string oldName, ulong newDir, string newName, RenameFlags flags = RenameFlags.None) =>
        Rename(oldDir, Utf8(oldName), newDir, Utf8(newName), flags);

    /// <summary>
    /// rename(2)/renameat2(2). Lock order: the rename lock (between directories), then the
    /// two directories ancestor first (else by number), then the source and target inodes by
    /// number. A target that is an ancestor of the source's directory is refused before its
    /// lock is taken (it cannot be empty).
    /// </summary>
    /// <remarks>RENAME_WHITEOUT (overlayfs's upper layer) leaves a whiteout at the old name: a
    /// character device 0:0 with no permission bits, owned by <paramref name="uid"/> and
    /// <paramref name="gid"/> (the directory's group when it is set-group-ID), made in the same
    /// transaction, as ext4 and btrfs do. The kernel lets only callers with CAP_MKNOD ask.</remarks>
    public Errno Rename(ulong oldDirIno, ReadOnlySpan<byte> oldName, ulong newDirIno, ReadOnlySpan<byte> newName, RenameFlags flags, uint uid = 0, uint gid = 0)
    {
        var whiteoutOwner = (uid, gid);
        var e = RenameOnce(oldDirIno, oldName, newDirIno, newName, flags, whiteoutOwner, holdsSubvolumeOps: false, out bool movesSubvolume);
        if (!movesSubvolume) return e;
        // A subvolume's entry moves: with SubvolumeOps, which a snapshot holds between reading
        // its source's ROOT_REFs and copying its tree (a nested subvolume renamed in between
        // would leave the snapshot a name its ROOT_REF no longer gives). It is taken before any
        // inode lock, so the first attempt only found out and changed nothing.
        using var ops = SubvolumeOps.Lock();
        return RenameOnce(oldDirIno, oldName, newDirIno, newName, flags, whiteoutOwner, holdsSubvolumeOps: true, out _);
    }

    /// <summary><see cref="Rename"/> once; <paramref name="movesSubvolume"/>: the source is a
    /// subvolume's entry and <paramref name="holdsSubvolumeOps"/> was false, so nothing was done
    /// (the caller goes again holding it).</summary>
    private Errno RenameOnce(ulong oldDirIno, ReadOnlySpan<byte> oldName, ulong newDirIno, ReadOnlySpan<byte> newName, RenameFlags flags,
        (uint Uid, uint Gid) whiteoutOwner, bool holdsSubvolumeOps, out bool movesSubvolume)
    {
        movesSubvolume = false;
        if ((flags & ~(RenameFlags.NoReplace | RenameFlags.Exchange | RenameFlags.Whiteout)) != 0) return Errno.EINVAL;
        // As the VFS refuses them: an exchange leaves no name empty to put a whiteout in.
        if ((flags & RenameFlags.Exchange) != 0 && (flags & (RenameFlags.NoReplace | RenameFlags.Whiteout)) != 0) return Errno.EINVAL;
        bool whiteout = (flags & RenameFlags.Whiteout) != 0;
        foreach (var n in new[] { oldName.ToArray(), newName.ToArray() })
        {
            if (n.AsSpan().SequenceEqual("."u8) || n.AsSpan().SequenceEqual(".."u8)) return Errno.EBUSY;
            var ne = CheckName(n);
            if (ne != Errno.OK) return ne;
        }
        var on = oldName.ToArray();
        var nn = newName.ToArray();
        bool cross = oldDirIno != newDirIno;
        Inode? od = null, nd = null, src = null, tgt = null;
        var e = GetWritable(oldDirIno, out od);
        if (e != Errno.OK) return e;
        try
        {
            if (cross)
            {
                e = GetWritable(newDirIno, out nd);
                if (e != Errno.OK) return e;
            }
            else nd = null;
            var odir = od;
            var ndir = nd ?? od;
            bool needsOps = false;
            var result = Guard(oldDirIno, () =>
            {
                FsMutex.Scope? rl = cross ? RenameLock.Lock() : null;
                var held = new List<FsRwLock>();
                try
                {
                    if (!odir.IsDir || !ndir.IsDir) return Errno.ENOTDIR;
                    // As on btrfs: names move within a subvolume, and a subvolume's own entry
                    // also into another one.
                    if (odir.Subvol != ndir.Subvol)
                        return MoveSubvolumeAcross(odir, on, ndir, nn, flags, whiteoutOwner, holdsSubvolumeOps, ref needsOps);
                    var sv = odir.Subvol;
                    // Parents: ancestor first, else by inode number.
                    Inode first = odir, second = ndir;
                    if (cross)
                    {
                        bool newIsAncestor = IsAncestor(sv, ndir.Ino, odir.Ino);
                        bool oldIsAncestor = IsAncestor(sv, odir.Ino, ndir.Ino);
                        if (newIsAncestor || (!oldIsAncestor && ndir.Ino < odir.Ino)) (first, second) = (ndir, odir);
                    }
                    first.Lock.EnterWrite(); held.Add(first.Lock);
                    if (cross) { second.Lock.EnterWrite(); held.Add(second.Lock); }
                    if (odir.Deleted || ndir.Deleted || odir.Item.Nlink == 0 || ndir.Item.Nlink == 0) return Errno.ENOENT;

                    var le = LookupLocked(odir, on, out ulong srcIno, out _);
                    if (le != Errno.OK) return le;
                    bool hasTarget = LookupLocked(ndir, nn, out ulong tgtIno, out _) == Errno.OK;
                    if ((flags & RenameFlags.Exchange) != 0 && !hasTarget) return Errno.ENOENT;
                    if ((flags & RenameFlags.NoReplace) != 0 && hasTarget) return Errno.EEXIST;
                    if (hasTarget && tgtIno == srcIno) return Errno.OK; // two names of one inode: nothing to do

                    if (Get(srcIno, out src) != Errno.OK) throw new CorruptionException($"directory {odir.Ino} names missing inode {srcIno}", inode: odir.Ino);
                    if (hasTarget && Get(tgtIno, out tgt) != Errno.OK) throw new CorruptionException($"directory {ndir.Ino} names missing inode {tgtIno}", inode: ndir.Ino);
                    // A subvolume's entry (its root, in a tree of its own) moves within its parent
                    // subvolume as on btrfs, and trades places with any other name in it
                    // (RENAME_EXCHANGE); nothing is renamed over a subvolume (btrfs: ENOTEMPTY).
                    bool exchange = (flags & RenameFlags.Exchange) != 0;
                    bool subvolume = src.Subvol != sv, tgtSubvolume = tgt != null && tgt.Subvol != sv;
                    if (tgtSubvolume && !exchange) return Errno.ENOTEMPTY;
                    if ((subvolume || tgtSubvolume) && !holdsSubvolumeOps)
                    {
                        needsOps = true;
                        return Errno.OK;
                    }

                    // Loops: a directory may not move below itself. (A subvolume's root is in a tree
                    // of its own, so below it lies no directory of this one; its inode number, 256,
                    // is this tree's root's too.)
                    if (cross && src.IsDir && !subvolume && IsAncestor(sv, src.Ino, ndir.Ino)) return Errno.EINVAL;
                    if (cross && tgt != null && tgt.IsDir && exchange && !tgtSubvolume && IsAncestor(sv, tgt.Ino, odir.Ino)) return Errno.EINVAL;
                    if (tgt != null && tgt.IsDir && !exchange && IsAncestor(sv, tgt.Ino, odir.Ino)) return Errno.ENOTEMPTY;

                    // Children by inode number.
                    var kids = tgt == null ? new[] { src } : src.Ino < tgt.Ino ? new[] { src, tgt } : new[] { tgt, src };
                    foreach (var k in kids) { k.Lock.EnterWrite(); held.Add(k.Lock); }

                    if (!exchange && tgt != null)
                    {
                        if (src.IsDir && !tgt.IsDir) return Errno.ENOTDIR;
                        if (!src.IsDir && tgt.IsDir) return Errno.EISDIR;
                        if (tgt.IsDir && !IsEmptyDir(tgt)) return Errno.ENOTEMPTY;
                    }
                    if (cross && src.IsDir && tgt == null && ndir.Item.Nlink >= 65000) return Errno.EMLINK;
                    // Refused before anything changes (removals only make room): a new name the
                    // directory's hash chain cannot take (an exchange keeps both chains' sizes),
                    // back-references the moved inodes cannot take.
                    var re = exchange || tgt != null ? Errno.OK : NameRoomLocked(ndir, nn);
                    if (re == Errno.OK && !subvolume) re = InodeRefRoomLocked(src, ndir, nn);
                    if (re == Errno.OK && exchange && !tgtSubvolume) re = InodeRefRoomLocked(tgt!, odir, on);
                    if (re != Errno.OK) return re;

                    var se = Fs.TryStart(whiteout ? 26 : 20, out var h, useGlobalReserve: tgt != null);
                    if (se != Errno.OK) return se;
                    using (h)
                    {
                        // The whiteout's number before the tree's lock: the first number a
                        // subvolume hands out after a mount is found by reading its tree.
                        ulong whiteoutIno = whiteout ? sv.AllocIno() : 0;
                        using (sv.Tree.Lock.Write())
                        {
                            var t = sv.Tree;
                            if (odir.NextDirIndex == 0) odir.NextDirIndex = DirItems.FindNextIndex(t, odir.Ino);
                            if (ndir.NextDirIndex == 0) ndir.NextDirIndex = DirItems.FindNextIndex(t, ndir.Ino);
                            if (exchange)
                            {
                                ExchangeEntriesLocked(h, odir, on, src, ndir, nn, tgt!);
                                if (cross && src.IsDir != tgt!.IsDir)
                                {
                                    if (src.IsDir) { odir.Item.Nlink--; ndir.Item.Nlink++; }
                                    else { odir.Item.Nlink++; ndir.Item.Nlink--; }
                                }
                                if (!tgtSubvolume)
                                {
                                    Touch(ref tgt!.Item, h.Transid, mtime: false);
                                    DirItems.PutInode(h, t, tgt);
                                }
                            }
                            else if (subvolume)
                            {
                                if (tgt != null) UnlinkLocked(h, ndir, nn, tgt);
                                MoveSubvolumeEntryLocked(h, odir, on, ndir, nn, src);
                            }
                            else
                            {
                                if (tgt != null) UnlinkLocked(h, ndir, nn, tgt);
                                DirItems.RemoveDirEntry(h, t, odir.Ino, on, src.Ino);
                                odir.Item.FileSize -= Math.Min(odir.Item.FileSize, (ulong)on.Length * 2);
                                DirItems.AddDirEntry(h, t, ndir.Ino, nn, src.Ino, FileTypes.FromMode(src.Item.Mode), ndir.NextDirIndex++);
                                ndir.Item.FileSize += (ulong)nn.Length * 2;
                                if (cross && src.IsDir) { odir.Item.Nlink--; ndir.Item.Nlink++; }
                            }
                            if (whiteout) AddWhiteoutLocked(h, odir, on, whiteoutIno, whiteoutOwner);
                            // A subvolume's root stays as it is: it is in a tree of its own, which
                            // may be read-only (btrfs leaves it alone too).
                            if (!subvolume)
                            {
                                Touch(ref src.Item, h.Transid, mtime: false);
                                DirItems.PutInode(h, t, src);
                            }
                            Touch(ref odir.Item, h.Transid);
                            DirItems.PutInode(h, t, odir);
                            if (cross)
                            {
                                Touch(ref ndir.Item, h.Transid);
                                DirItems.PutInode(h, t, ndir);
                            }
                        }
                    }
                    if (tgt != null && !exchange && tgt.Item.Nlink == 0 && sv.OpenCountOf(tgt) == 0)
                        EvictLocked(tgt);
                    return Errno.OK;
                }
                finally
                {
                    for (int i = held.Count - 1; i >= 0; i--) held[i].ExitWrite();
                    rl?.Dispose();
                }
            });
            movesSubvolume = needsOps;
            return result;
        }
        finally { Put(tgt); Put(src); Put(nd); Put(od); }
    }

    /// <summary>True if directory <paramref name="a"/> is <paramref name="b"/> or one of its
    /// ancestors. Reads parent references; callers hold the rename lock so they cannot change.</summary>
    private static bool IsAncestor(Subvolume sv, ulong a, ulong b)
    {
        using var lk = sv.Tree.Lock.Read();
        for (int depth = 0; depth < 100_000; depth++)
        {
            if (b == a) return true;
            if (b == RootIno) return false;
            b = DirItems.ParentOf(sv.Tree, b);
        }
        throw new CorruptionException("directory parent chain does not reach the root (loop)", inode: b);
    }

    /// <summary>Makes the whiteout RENAME_WHITEOUT leaves at <paramref name="name"/> in
    /// <paramref name="dir"/>: a character device 0:0 with mode 0 (what overlayfs recognises as
    /// one), its owner's group the directory's when that is set-group-ID. Caller holds the
    /// directory's lock and its tree's write lock, inside <paramref name="h"/>, and allocated
    /// <paramref name="ino"/> before taking the latter (<see cref="Inodes.Subvolume.AllocIno"/>
    /// may read the tree); the name has just left the directory, so its hash chain has room
    /// for it again.</summary>
    private void AddWhiteoutLocked(Tx.TransHandle h, Inode dir, byte[] name, ulong ino, (uint Uid, uint Gid) owner)
    {
        var t = dir.Subvol.Tree;
        var now = Timespec.Now();
        var item = new InodeItem
        {
            Generation = h.Transid, Transid = h.Transid, Nlink = 1, Mode = Inodes.Mode.IFCHR, Rdev = 0,
            Uid = owner.Uid, Gid = (dir.Item.Mode & Inodes.Mode.ISGID) != 0 ? dir.Item.Gid : owner.Gid,
            Atime = now, Ctime = now, Mtime = now, Otime = now,
        };
        DirItems.PutInode(h, t, ino, item);
        if (dir.NextDirIndex == 0) dir.NextDirIndex = DirItems.FindNextIndex(t, dir.Ino);
        DirItems.AddDirEntry(h, t, dir.Ino, name, ino, FileTypes.FromMode(item.Mode), dir.NextDirIndex++);
        dir.Item.FileSize += (ulong)name.Length * 2;
        DirItems.PutInode(h, t, dir);
        Put(dir.Subvol.Adopt(ino, item));
    }
}

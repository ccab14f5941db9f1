using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>Serialises renames between directories, so that "is this directory an ancestor
    /// of that one" cannot change while a rename decides lock order and checks for loops
    /// (Linux's s_vfs_rename_mutex).</summary>
    private FsMutex? _renameLock;
    private FsMutex RenameLock => _renameLock ??= Fs.Sched.CreateMutex("rename");

    public Errno Rename(ulong oldDir, string oldName, ulong newDir, string newName, RenameFlags flags = RenameFlags.None) =>
        Rename(oldDir, Utf8(oldName), newDir, Utf8(newName), flags);

    /// <summary>
    /// rename(2)/renameat2(2). Lock order: the rename lock (between directories), then the
    /// two directories ancestor first (else by number), then the source and target inodes by
    /// number. A target that is an ancestor of the source's directory is refused before its
    /// lock is taken (it cannot be empty).
    /// </summary>
    public Errno Rename(ulong oldDirIno, ReadOnlySpan<byte> oldName, ulong newDirIno, ReadOnlySpan<byte> newName, RenameFlags flags)
    {
        if ((flags & RenameFlags.Whiteout) != 0) return Errno.EINVAL;
        if ((flags & ~(RenameFlags.NoReplace | RenameFlags.Exchange)) != 0) return Errno.EINVAL;
        if (flags == (RenameFlags.NoReplace | RenameFlags.Exchange)) return Errno.EINVAL;
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
            return Guard(oldDirIno, () =>
            {
                FsMutex.Scope? rl = cross ? RenameLock.Lock() : null;
                var held = new List<FsRwLock>();
                try
                {
                    if (!odir.IsDir || !ndir.IsDir) return Errno.ENOTDIR;
                    if (odir.Subvol != ndir.Subvol) return Errno.EXDEV; // as on btrfs: names move within a subvolume
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
                    // A subvolume's entry does not move yet (btrfs can rename it within its
                    // parent subvolume; here mv falls back to copying).
                    if (src.Subvol != sv || (tgt != null && tgt.Subvol != sv)) return Errno.EXDEV;

                    // Loops: a directory may not move below itself.
                    if (cross && src.IsDir && IsAncestor(sv, src.Ino, ndir.Ino)) return Errno.EINVAL;
                    if (cross && tgt != null && tgt.IsDir && (flags & RenameFlags.Exchange) != 0 && IsAncestor(sv, tgt.Ino, odir.Ino)) return Errno.EINVAL;
                    if (tgt != null && tgt.IsDir && (flags & RenameFlags.Exchange) == 0 && IsAncestor(sv, tgt.Ino, odir.Ino)) return Errno.ENOTEMPTY;

                    // Children by inode number.
                    var kids = tgt == null ? new[] { src } : src.Ino < tgt.Ino ? new[] { src, tgt } : new[] { tgt, src };
                    foreach (var k in kids) { k.Lock.EnterWrite(); held.Add(k.Lock); }

                    if ((flags & RenameFlags.Exchange) == 0 && tgt != null)
                    {
                        if (src.IsDir && !tgt.IsDir) return Errno.ENOTDIR;
                        if (!src.IsDir && tgt.IsDir) return Errno.EISDIR;
                        if (tgt.IsDir && !IsEmptyDir(tgt)) return Errno.ENOTEMPTY;
                    }
                    if (cross && src.IsDir && tgt == null && ndir.Item.Nlink >= 65000) return Errno.EMLINK;

                    var se = Fs.TryStart(20, out var h, useGlobalReserve: tgt != null);
                    if (se != Errno.OK) return se;
                    using (h)
                    using (sv.Tree.Lock.Write())
                    {
                        var t = sv.Tree;
                        if (odir.NextDirIndex == 0) odir.NextDirIndex = DirItems.FindNextIndex(t, odir.Ino);
                        if (ndir.NextDirIndex == 0) ndir.NextDirIndex = DirItems.FindNextIndex(t, ndir.Ino);
                        if ((flags & RenameFlags.Exchange) != 0)
                        {
                            DirItems.RemoveDirEntry(h, t, odir.Ino, on, src.Ino);
                            DirItems.RemoveDirEntry(h, t, ndir.Ino, nn, tgt!.Ino);
                            DirItems.AddDirEntry(h, t, odir.Ino, on, tgt.Ino, FileTypes.FromMode(tgt.Item.Mode), odir.NextDirIndex++);
                            DirItems.AddDirEntry(h, t, ndir.Ino, nn, src.Ino, FileTypes.FromMode(src.Item.Mode), ndir.NextDirIndex++);
                            if (cross && src.IsDir != tgt.IsDir)
                            {
                                if (src.IsDir) { odir.Item.Nlink--; ndir.Item.Nlink++; }
                                else { odir.Item.Nlink++; ndir.Item.Nlink--; }
                            }
                            Touch(ref tgt.Item, h.Transid, mtime: false);
                            DirItems.PutInode(h, t, tgt);
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
                        Touch(ref src.Item, h.Transid, mtime: false);
                        DirItems.PutInode(h, t, src);
                        Touch(ref odir.Item, h.Transid);
                        DirItems.PutInode(h, t, odir);
                        if (cross)
                        {
                            Touch(ref ndir.Item, h.Transid);
                            DirItems.PutInode(h, t, ndir);
                        }
                    }
                    if (tgt != null && (flags & RenameFlags.Exchange) == 0 && tgt.Item.Nlink == 0 && sv.OpenCountOf(tgt) == 0)
                        EvictLocked(tgt);
                    return Errno.OK;
                }
                finally
                {
                    for (int i = held.Count - 1; i >= 0; i--) held[i].ExitWrite();
                    rl?.Dispose();
                }
            });
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
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>
/// rename(2) and renameat2(2) of a subvolume's entry (docs/SNAPSHOTS.md §1), as btrfs: within
/// its parent subvolume, into another subvolume, and RENAME_EXCHANGE with any name of its
/// parent or with another subvolume's entry. A subvolume's entry is a directory entry whose
/// location is its ROOT_ITEM, named again by its ROOT_REF and ROOT_BACKREF in the root tree,
/// which every move rewrites with the entry; the subvolume's own tree is never touched (it may
/// be read-only). <see cref="RenameOnce"/> decides which case a rename is.
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>
    /// rename(2) between directories of two subvolumes: only a subvolume's own entry moves so
    /// (btrfs allows it; any other name answers EXDEV), and not into itself or a subvolume below
    /// it (EINVAL); RENAME_EXCHANGE trades two subvolumes' entries (with any other name: EXDEV).
    /// The directories are locked the one nearer the top level first (a directory is locked
    /// before a subvolume root inside it everywhere else: rmdir of an empty subvolume),
    /// and cross-directory renames hold the rename lock, so no two of them interleave. Caller
    /// holds the rename lock; <paramref name="needsOps"/> as in <see cref="RenameOnce"/>.
    /// </summary>
    private Errno MoveSubvolumeAcross(Inode odir, byte[] on, Inode ndir, byte[] nn, RenameFlags flags, (uint Uid, uint Gid) whiteoutOwner, bool holdsSubvolumeOps, ref bool needsOps)
    {
        var held = new List<FsRwLock>();
        Inode? src = null, tgt = null;
        try
        {
            var (first, second) = SubvolumeDepth(odir.Subvol.Id) <= SubvolumeDepth(ndir.Subvol.Id) ? (odir, ndir) : (ndir, odir);
            first.Lock.EnterWrite(); held.Add(first.Lock);
            second.Lock.EnterWrite(); held.Add(second.Lock);
            if (odir.Deleted || ndir.Deleted || odir.Item.Nlink == 0 || ndir.Item.Nlink == 0) return Errno.ENOENT;
            var le = LookupLocked(odir, on, out ulong srcIno, out _);
            if (le != Errno.OK) return le;
            var (srcTree, srcInode) = NodeIds.Decode(srcIno);
            if (srcInode != RootIno || srcTree == odir.Subvol.Id) return Errno.EXDEV; // a name of this subvolume's own
            bool hasTarget = LookupLocked(ndir, nn, out ulong tgtIno, out _) == Errno.OK;
            bool exchange = (flags & RenameFlags.Exchange) != 0;
            if (exchange && !hasTarget) return Errno.ENOENT;
            if ((flags & RenameFlags.NoReplace) != 0 && hasTarget) return Errno.EEXIST;
            var (tgtTree, tgtInode) = hasTarget ? NodeIds.Decode(tgtIno) : (0UL, 0UL);
            // Two subvolumes trade places between subvolumes (btrfs: they are links with fixed
            // inode numbers); any other name stays in its subvolume.
            if (exchange && (tgtInode != RootIno || tgtTree == ndir.Subvol.Id)) return Errno.EXDEV;
            if (hasTarget && !exchange && tgtTree != ndir.Subvol.Id) return Errno.ENOTEMPTY; // over a subvolume
            // Not into itself, nor into a subvolume below it; in an exchange, the other way too.
            if (IsSubvolumeAtOrBelow(ndir.Subvol.Id, srcTree, ndir.Ino)) return Errno.EINVAL;
            if (exchange && IsSubvolumeAtOrBelow(odir.Subvol.Id, tgtTree, odir.Ino)) return Errno.EINVAL;
            if (!holdsSubvolumeOps)
            {
                needsOps = true;
                return Errno.OK;
            }
            if (Get(srcIno, out src) != Errno.OK) throw new CorruptionException($"directory {odir.Ino} names missing subvolume {srcTree}", inode: odir.Ino);
            if (exchange)
            {
                if (Get(tgtIno, out tgt) != Errno.OK) throw new CorruptionException($"directory {ndir.Ino} names missing subvolume {tgtTree}", inode: ndir.Ino);
                // Children by inode number, as a rename inside one subvolume takes them.
                var (a, b) = src.Ino < tgt.Ino ? (src, tgt) : (tgt, src);
                a.Lock.EnterWrite(); held.Add(a.Lock);
                b.Lock.EnterWrite(); held.Add(b.Lock);
                var xe = Fs.TryStart(32, out var xh);
                if (xe != Errno.OK) return xe;
                using (xh) ExchangeSubvolumesAcross(xh, odir, on, srcTree, ndir, nn, tgtTree);
                return Errno.OK;
            }
            src.Lock.EnterWrite(); held.Add(src.Lock);
            if (hasTarget)
            {
                if (Get(tgtIno, out tgt) != Errno.OK) throw new CorruptionException($"directory {ndir.Ino} names missing inode {tgtIno}", inode: ndir.Ino);
                tgt.Lock.EnterWrite(); held.Add(tgt.Lock);
                if (!tgt.IsDir) return Errno.ENOTDIR;
                if (!IsEmptyDir(tgt)) return Errno.ENOTEMPTY;
            }
            else if (ndir.Item.Nlink >= 65000) return Errno.EMLINK;
            else if (NameRoomLocked(ndir, nn) is var re && re != Errno.OK) return re;
            var se = Fs.TryStart((flags & RenameFlags.Whiteout) != 0 ? 30 : 24, out var h, useGlobalReserve: tgt != null);
            if (se != Errno.OK) return se;
            using (h)
            {
                var (_, link) = BackrefOf(srcTree) ?? throw new CorruptionException($"subvolume {srcTree} has no ROOT_BACKREF", inode: odir.Ino);
                // An fsync of either directory in this transaction commits (the fsync log
                // carries no subvolume entries).
                DirItems.BlockLog(h, odir.Subvol.Tree, odir.Ino);
                DirItems.BlockLog(h, ndir.Subvol.Tree, ndir.Ino);
                RemoveSubvolumeEntryLocked(h, odir, on, link.Index);
                if ((flags & RenameFlags.Whiteout) != 0)
                {
                    ulong whiteoutIno = odir.Subvol.AllocIno(); // before the tree's lock: it may read the tree
                    using (odir.Subvol.Tree.Lock.Write()) AddWhiteoutLocked(h, odir, on, whiteoutIno, whiteoutOwner);
                }
                if (tgt != null)
                    using (ndir.Subvol.Tree.Lock.Write()) UnlinkLocked(h, ndir, nn, tgt);
                ulong index = AddSubvolumeEntryLocked(h, ndir, nn, srcTree);
                // Both references at once: a ".." looked up meanwhile finds the old or the new.
                using (Fs.RootTree.Lock.Write())
                {
                    DeleteRootRefsLocked(h, odir.Subvol.Id, srcTree);
                    PutRootRefsLocked(h, ndir.Subvol.Id, srcTree, ndir.Ino, index, nn);
                }
                // The subvolume's root stays as it is (its tree may be read-only).
            }
            if (tgt != null && tgt.Item.Nlink == 0 && ndir.Subvol.OpenCountOf(tgt) == 0) EvictLocked(tgt);
            return Errno.OK;
        }
        finally
        {
            for (int i = held.Count - 1; i >= 0; i--) held[i].ExitWrite();
            Put(tgt);
            Put(src);
        }
    }

    /// <summary>Whether subvolume <paramref name="id"/> is <paramref name="ancestor"/> or nested
    /// in it, from the ROOT_BACKREFs.</summary>
    private bool IsSubvolumeAtOrBelow(ulong id, ulong ancestor, ulong dirIno)
    {
        for (int depth = 0; id != TreeIds.FsTree && depth < 100_000; depth++)
        {
            if (id == ancestor) return true;
            id = (BackrefOf(id) ?? throw new CorruptionException($"subvolume {id} has no ROOT_BACKREF", inode: dirIno)).Parent;
        }
        return ancestor == TreeIds.FsTree;
    }

    /// <summary>
    /// RENAME_EXCHANGE of two subvolumes' entries in two subvolumes: <paramref name="srcTree"/>'s
    /// entry <paramref name="oldName"/> in <paramref name="odir"/> and <paramref name="tgtTree"/>'s
    /// <paramref name="newName"/> in <paramref name="ndir"/> trade places, each name staying in its
    /// directory (so sizes and link counts come out as they were), and both ROOT_REF/ROOT_BACKREF
    /// pairs are rewritten under their new parents in one hold of the root tree's lock (a ".."
    /// looked up meanwhile finds the old or the new). Caller holds both directories' and both
    /// roots' locks, the rename lock and SubvolumeOps.
    /// </summary>
    private void ExchangeSubvolumesAcross(Tx.TransHandle h, Inode odir, byte[] oldName, ulong srcTree, Inode ndir, byte[] newName, ulong tgtTree)
    {
        var (_, srcLink) = BackrefOf(srcTree) ?? throw new CorruptionException($"subvolume {srcTree} has no ROOT_BACKREF", inode: odir.Ino);
        var (_, tgtLink) = BackrefOf(tgtTree) ?? throw new CorruptionException($"subvolume {tgtTree} has no ROOT_BACKREF", inode: ndir.Ino);
        // An fsync of either directory in this transaction commits (the fsync log carries no
        // subvolume entries).
        DirItems.BlockLog(h, odir.Subvol.Tree, odir.Ino);
        DirItems.BlockLog(h, ndir.Subvol.Tree, ndir.Ino);
        RemoveSubvolumeEntryLocked(h, odir, oldName, srcLink.Index);
        RemoveSubvolumeEntryLocked(h, ndir, newName, tgtLink.Index);
        ulong tgtIndex = AddSubvolumeEntryLocked(h, odir, oldName, tgtTree);
        ulong srcIndex = AddSubvolumeEntryLocked(h, ndir, newName, srcTree);
        var (op, np) = (odir.Subvol.Id, ndir.Subvol.Id);
        using (Fs.RootTree.Lock.Write())
        {
            DeleteRootRefsLocked(h, op, srcTree);
            DeleteRootRefsLocked(h, np, tgtTree);
            PutRootRefsLocked(h, np, srcTree, ndir.Ino, srcIndex, newName);
            PutRootRefsLocked(h, op, tgtTree, odir.Ino, tgtIndex, oldName);
        }
    }

    /// <summary>How many subvolumes a subvolume is nested in (the top level: 0), from the
    /// ROOT_BACKREFs.</summary>
    private int SubvolumeDepth(ulong id)
    {
        int depth = 0;
        while (id != TreeIds.FsTree && BackrefOf(id) is { } b && depth < 100_000) (id, depth) = (b.Parent, depth + 1);
        return depth;
    }

    /// <summary>
    /// Moves the entry of subvolume <paramref name="root"/> (its root directory) from
    /// <paramref name="oldName"/> in <paramref name="odir"/> to <paramref name="newName"/> in
    /// <paramref name="ndir"/>, both in its parent subvolume: the directory entries (location:
    /// its ROOT_ITEM), the directories' sizes and link counts (the root's ".." is the directory
    /// holding it), and the ROOT_REF and ROOT_BACKREF, which name the directory, the index and
    /// the name, rewritten in the same hold of the parent tree's lock (taken before the root
    /// tree's, as a snapshot takes them). Caller holds both directories' and the root's locks, a
    /// handle, the parent tree's write lock and SubvolumeOps.
    /// </summary>
    private void MoveSubvolumeEntryLocked(Tx.TransHandle h, Inode odir, byte[] oldName, Inode ndir, byte[] newName, Inode root)
    {
        var t = odir.Subvol.Tree;
        ulong parent = odir.Subvol.Id, id = root.Subvol.Id;
        var (_, link) = BackrefOf(id) ?? throw new CorruptionException($"subvolume {id} has no ROOT_BACKREF", inode: odir.Ino);
        // An fsync of either directory in this transaction commits (the fsync log does not
        // carry subvolume entries, nor the ROOT_REF beside them).
        DirItems.BlockLog(h, t, odir.Ino);
        DirItems.BlockLog(h, t, ndir.Ino);
        DirItems.RemoveSubvolumeEntry(h, t, odir.Ino, oldName, link.Index);
        odir.Item.FileSize -= Math.Min(odir.Item.FileSize, (ulong)oldName.Length * 2);
        ulong index = ndir.NextDirIndex++;
        DirItems.AddSubvolumeEntry(h, t, ndir.Ino, newName, id, index);
        ndir.Item.FileSize += (ulong)newName.Length * 2;
        if (odir != ndir) { odir.Item.Nlink--; ndir.Item.Nlink++; }
        using (Fs.RootTree.Lock.Write()) PutRootRefsLocked(h, parent, id, ndir.Ino, index, newName);
    }

    /// <summary>
    /// RENAME_EXCHANGE within one subvolume: <paramref name="oldName"/> in <paramref name="odir"/>
    /// names <paramref name="tgt"/> and <paramref name="newName"/> in <paramref name="ndir"/> names
    /// <paramref name="src"/>. Either may be another subvolume's root (btrfs trades a subvolume's
    /// entry with any name of its parent): its entry's location is its ROOT_ITEM and its ROOT_REF
    /// and ROOT_BACKREF name the directory, index and name, rewritten in the same hold of the
    /// parent tree's lock; a plain inode's INODE_REF (its "..") moves with its entry. The names
    /// stay in their directories, so their sizes do not change; the caller fixes the link
    /// counts. Caller holds both directories' and both inodes' locks, a handle, the tree's write
    /// lock and, when a subvolume is involved, SubvolumeOps.
    /// </summary>
    private void ExchangeEntriesLocked(Tx.TransHandle h, Inode odir, byte[] oldName, Inode src, Inode ndir, byte[] newName, Inode tgt)
    {
        var t = odir.Subvol.Tree;
        ulong parent = odir.Subvol.Id;
        bool srcSubvolume = src.Subvol != odir.Subvol, tgtSubvolume = tgt.Subvol != odir.Subvol;
        if (srcSubvolume || tgtSubvolume)
        {
            // The fsync log carries no subvolume entries (nor the ROOT_REFs beside them).
            DirItems.BlockLog(h, t, odir.Ino);
            DirItems.BlockLog(h, t, ndir.Ino);
        }
        ulong IndexOf(Inode root) => (BackrefOf(root.Subvol.Id) ?? throw new CorruptionException($"subvolume {root.Subvol.Id} has no ROOT_BACKREF", inode: odir.Ino)).Link.Index;
        if (srcSubvolume) DirItems.RemoveSubvolumeEntry(h, t, odir.Ino, oldName, IndexOf(src));
        else DirItems.RemoveDirEntry(h, t, odir.Ino, oldName, src.Ino);
        if (tgtSubvolume) DirItems.RemoveSubvolumeEntry(h, t, ndir.Ino, newName, IndexOf(tgt));
        else DirItems.RemoveDirEntry(h, t, ndir.Ino, newName, tgt.Ino);
        ulong tgtIndex = odir.NextDirIndex++;
        if (tgtSubvolume) DirItems.AddSubvolumeEntry(h, t, odir.Ino, oldName, tgt.Subvol.Id, tgtIndex);
        else DirItems.AddDirEntry(h, t, odir.Ino, oldName, tgt.Ino, FileTypes.FromMode(tgt.Item.Mode), tgtIndex);
        ulong srcIndex = ndir.NextDirIndex++;
        if (srcSubvolume) DirItems.AddSubvolumeEntry(h, t, ndir.Ino, newName, src.Subvol.Id, srcIndex);
        else DirItems.AddDirEntry(h, t, ndir.Ino, newName, src.Ino, FileTypes.FromMode(src.Item.Mode), srcIndex);
        if (!srcSubvolume && !tgtSubvolume) return;
        using (Fs.RootTree.Lock.Write())
        {
            if (srcSubvolume) PutRootRefsLocked(h, parent, src.Subvol.Id, ndir.Ino, srcIndex, newName);
            if (tgtSubvolume) PutRootRefsLocked(h, parent, tgt.Subvol.Id, odir.Ino, tgtIndex, oldName);
        }
    }
}

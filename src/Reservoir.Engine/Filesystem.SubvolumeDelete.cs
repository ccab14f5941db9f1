using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>
/// Subvolume deletion: the name goes at once (`subvolume delete`, or rmdir of an empty one),
/// then the cleaner empties the tree in bounded transactions, its frees accounted to its
/// quota group, and a mount finishes a drop a crash interrupted (the orphan item).
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>Tree blocks dropped per transaction when a deleted subvolume's tree is emptied.</summary>
    private const int DropBatch = 32;

    public Errno DeleteSubvolume(ulong dir, string name) => DeleteSubvolume(dir, Utf8(name));

    public Errno DeleteSubvolume(ulong dirIno, ReadOnlySpan<byte> name) => DeleteSubvolume(dirIno, name, requireEmpty: false);

    /// <summary>
    /// Deletes subvolume <paramref name="id"/> wherever it is linked, as btrfs's
    /// SNAP_DESTROY_V2 with SUBVOL_SPEC_BY_ID (`subvolume delete -i`): found through its
    /// ROOT_BACKREF, so one a `subvol=` mount cannot reach is deleted too. ENOENT if no live
    /// subvolume has that id, EINVAL for the top level; otherwise as deleting it by name.
    /// </summary>
    /// <param name="dirNode">Where it was linked: the directory's node id …</param>
    /// <param name="name">… and the name (for the front end's cached entries).</param>
    public Errno DeleteSubvolumeById(ulong id, out ulong dirNode, out byte[] name)
    {
        dirNode = 0;
        name = [];
        if (id == TreeIds.FsTree) return Errno.EINVAL;
        // A rename between the look-up and the deletion (which takes SubvolumeOps) could put
        // something else under that name: the deletion checks it still names this id, and the
        // look-up is taken again if not.
        for (int attempt = 0; attempt < 8; attempt++)
        {
            if (id < TreeIds.FirstSubvolume || SubvolumeOf(id) == null) return Errno.ENOENT;
            (ulong Parent, (ulong DirId, ulong Index, byte[] Name) Link)? back = null;
            var e = Guard(0, () => { back = BackrefOf(id); return Errno.OK; });
            if (e != Errno.OK) return e;
            if (back is not { } b) return Errno.ENOENT;
            (dirNode, name) = (NodeIds.Encode(b.Parent, b.Link.DirId), b.Link.Name);
            e = DeleteSubvolumeNamed(dirNode, name, expectId: id);
            if (e != Errno.ESTALE) return e;
        }
        return Errno.EAGAIN;
    }

    /// <summary>A deletion by id's second step: the name found for <paramref name="expectId"/>,
    /// deleted if it still names that subvolume (ESTALE if not: renamed meanwhile).</summary>
    internal Errno DeleteSubvolumeNamed(ulong dirIno, ReadOnlySpan<byte> name, ulong expectId) =>
        DeleteSubvolume(dirIno, name, requireEmpty: false, expectId);

    /// <summary>
    /// Deletes the subvolume named <paramref name="name"/> in <paramref name="dirIno"/>, with
    /// everything in it: EINVAL if the name is not a subvolume, ENOTEMPTY if other subvolumes
    /// are linked inside it, EBUSY if it is the default subvolume. The name goes now (one
    /// transaction, with an orphan item for the subvolume); files of it open now stay usable
    /// until closed, as on btrfs, and nothing else of it can be reached. After the last close
    /// the cleaner empties its tree in bounded transactions, each dropped data reference freeing
    /// its extent when it was the last, and removes its root, its ROOT_ITEM and its quota group.
    /// <see cref="SyncSubvolumeDeletions"/> waits for that (and so for those closes).
    /// </summary>
    /// <param name="requireEmpty">rmdir's rule: ENOTEMPTY unless the subvolume's root
    /// directory is empty.</param>
    /// <param name="expectId">When not 0: the subvolume the name must still name (ESTALE if it
    /// names anything else now).</param>
    private Errno DeleteSubvolume(ulong dirIno, ReadOnlySpan<byte> name, bool requireEmpty, ulong expectId = 0)
    {
        var e = CheckName(name);
        if (e != Errno.OK) return e;
        using var ops = SubvolumeOps.Lock();
        e = GetWritable(dirIno, out var dir);
        if (e != Errno.OK) return e;
        var nameCopy = name.ToArray();
        Subvolume? victim = null;
        try
        {
            e = Guard(dirIno, () =>
            {
                using var lk = dir.Lock.Write();
                if (!dir.IsDir) return Errno.ENOTDIR;
                var t = dir.Subvol.Tree;
                Key loc;
                using (t.Lock.Read())
                    if (!DirItems.Find(t, dir.Ino, KeyTypes.DirItem, nameCopy, out loc, out _, out _)) return expectId != 0 ? Errno.ESTALE : Errno.ENOENT;
                if (expectId != 0 && (loc.Type != KeyTypes.RootItem || loc.ObjectId != expectId)) return Errno.ESTALE;
                if (loc.Type != KeyTypes.RootItem) return Errno.EINVAL; // not a subvolume
                ulong id = loc.ObjectId;
                if (id == Fs.Super.DefaultSubvolume) return Errno.EBUSY;
                using (Fs.RootTree.Lock.Read())
                {
                    var path = new TreePath();
                    if (Fs.RootTree.SeekGE(new Key(id, KeyTypes.RootRef, 0), path) && path.Key.ObjectId == id && path.Key.Type == KeyTypes.RootRef)
                        return Errno.ENOTEMPTY; // subvolumes inside it: delete those first, as btrfs asks
                }
                var sv = SubvolumeOf(id) ?? throw new CorruptionException($"directory {dir.Ino} names missing subvolume {id}", inode: dir.Ino);
                if (requireEmpty)
                {
                    if (sv.Acquire(RootIno, out var root) != Errno.OK) throw new CorruptionException($"subvolume {id} has no root directory");
                    try
                    {
                        using var rl = root.Lock.Read();
                        if (!IsEmptyDir(root)) return Errno.ENOTEMPTY;
                    }
                    finally { sv.Release(root); }
                }
                // Dead from here (nothing of it is acquired or opened any more but through the
                // files open now): undone if the name cannot go.
                sv.MarkDead();
                bool gone = false;
                try
                {
                    var (_, link) = BackrefOf(id) ?? throw new CorruptionException($"subvolume {id} has no ROOT_BACKREF");
                    var se = Fs.TryStart(12, out var h, useGlobalReserve: true);
                    if (se != Errno.OK) return se;
                    using (h)
                    {
                        RemoveSubvolumeEntryLocked(h, dir, nameCopy, link.Index);
                        using (Fs.RootTree.Lock.Write())
                        {
                            DeleteRootRefsLocked(h, dir.Subvol.Id, id);
                            Fs.RootTree.Put(h, DirItems.OrphanKey(id), ReadOnlySpan<byte>.Empty);
                        }
                    }
                    gone = true;
                }
                finally { if (!gone) sv.Revive(); }
                // Only now, with the name gone for good, its cached data (dirty pages included)
                // goes: a deletion that failed above leaves the files as they were.
                QuiesceSubvolume(sv);
                using (_subvolsLock.Lock())
                {
                    _subvols.Remove(id);
                    _deadSubvols[id] = sv;
                }
                victim = sv;
                return Errno.OK;
            });
        }
        finally { Put(dir); }
        if (e != Errno.OK) return e;
        QueueDrop(victim!.Tree);
        return Errno.OK;
    }

    /// <summary>Once a dead subvolume's name is gone: every cached page is dropped with its
    /// reservation and every ordered extent finished, so nothing will write into the tree while
    /// it is emptied; but an open file's pages stay, for its reads and writes until its last
    /// close (the cleaner waits for that, and for operations still under way, and then runs
    /// this again).</summary>
    private void QuiesceSubvolume(Subvolume sv)
    {
        var inodes = sv.LoadedInodeList();
        foreach (var inode in inodes)
        {
            if (inode.Mapping is not { } m || sv.OpenCountOf(inode) > 0) continue;
            using var lk = inode.Lock.Write();
            Data.WaitOrdered(m, 0, ulong.MaxValue);
            Data.Invalidate(m, 0, ulong.MaxValue);
            Data.CheckMappingQuiescent(m, "subvolume deletion");
        }
        Data.DropIdleMappings(sv);
    }

    /// <summary>
    /// Empties a deleted subvolume's tree in bounded transactions (<see cref="BTree.DropFromLeft"/>:
    /// blocks shared with snapshots lose one reference, blocks it alone owns go with the data
    /// references of their file extent items, which free an extent with its last one), commits
    /// so that the frees are accounted to its quota group, then removes the empty root, the
    /// ROOT_ITEM, the orphan item and the group. Run by the cleaner; returns false when
    /// <paramref name="stop"/> asked it to stop before the end (the orphan item stays).
    /// </summary>
    private bool DropSubvolumeTree(BTree t, Func<bool> stop)
    {
        // With quotas on, the subvolume first stops referencing its extents one EXTENT_OWNER_REF
        // at a time, including those in leaves shared with snapshots (which the drop below does
        // not enter): each is a transition the commit accounts, so whoever is left holding an
        // extent alone sees it in its exclusive (btrfs traces the shared subtrees instead).
        while (Fs.Quota.Enabled)
        {
            if (stop()) return false;
            var se = Fs.StartDeletion(DropBatch / 4, out var h);
            if (se != Errno.OK) throw new FsException(se, $"subvolume {t.Id}: cannot continue dropping its references");
            using (h)
            using (t.Lock.Write())
            {
                var batch = Tx.OwnerRefs.Scan(t).Take(DropBatch / 2).ToList();
                if (batch.Count == 0) break;
                foreach (var (bytenr, count, len) in batch) Tx.OwnerRefs.Change(h, t, bytenr, len, -(long)count);
            }
        }
        while (true)
        {
            if (stop()) return false;
            var se = Fs.StartDeletion(DropBatch / 4, out var h);
            if (se != Errno.OK) throw new FsException(se, $"subvolume {t.Id}: cannot continue dropping its tree");
            bool empty;
            using (h)
            using (t.Lock.Write())
            {
                try { empty = t.DropFromLeft(h, DropBatch); }
                catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException)
                {
                    // Half a batch is in the running transaction: it must not commit.
                    Fs.MarkFailed($"subvolume {t.Id}: dropping its tree failed part way: {ex.Message}");
                    throw;
                }
            }
            if (empty) break;
        }
        Fs.ForceCommit = true;
        Fs.Commit(); // accounts the frees to the subvolume's group before the group goes
        var e2 = Fs.StartDeletion(4, out var h2);
        if (e2 != Errno.OK) throw new FsException(e2, $"subvolume {t.Id}: cannot remove its root");
        using (h2)
        {
            Fs.RemoveFsTree(h2, t);
            using (Fs.RootTree.Lock.Write()) Fs.RootTree.Delete(h2, DirItems.OrphanKey(t.Id));
            // Inside the handle: leaving its groups changes their member sets in place, which a
            // commit's accounting reads without the qgroup lock while no handle is open.
            if (!Fs.Quota.RemoveForSubvolume(t.Id)) Fs.Warn($"subvolume {t.Id}: its quota group still shows usage after its tree was dropped");
        }
        Fs.ForceCommit = true;
        Fs.Commit();
        // The tree is gone from the fs trees: nothing can load it now.
        using (_subvolsLock.Lock()) _deadSubvols.Remove(t.Id);
        return true;
    }

    /// <summary>At mount: finishes dropping subvolumes whose deletion a crash interrupted.</summary>
    private void CleanupDeletedSubvolumes()
    {
        var ids = DirItems.Orphans(Fs.RootTree);
        foreach (var id in ids)
        {
            var t = Fs.FsTree(id);
            using (_subvolsLock.Lock()) if (t != null) _deadSubvols[id] = null;
            if (t == null)
            {
                using var h = Fs.Start(1, useGlobalReserve: true);
                using (Fs.RootTree.Lock.Write()) Fs.RootTree.Delete(h, DirItems.OrphanKey(id));
                continue;
            }
            QueueDrop(t);
        }
        if (ids.Count > 0) Fs.Warn($"resuming the deletion of {ids.Count} subvolume(s) an earlier mount left half deleted");
    }
}

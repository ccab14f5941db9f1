using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    private const int EvictBatch = 32;
    /// <summary>Reservation for one eviction batch: the batch's items are contiguous, so they
    /// touch at most a few leaves, plus the orphan item and the inode.</summary>
    private const int EvictItems = 8;

    /// <summary>
    /// Deletes an inode that has no names and no open handles: every item with its objectid
    /// goes (dropping data references), in handles of bounded size, and its orphan item last.
    /// A crash midway leaves the orphan item, and the next mount finishes the job. Caller holds
    /// the inode's lock.
    /// </summary>
    private void EvictLocked(Inode inode)
    {
        if (inode.Deleted) return;
        if (inode.Mapping is { } m)
        {
            // Nothing of a deleted file will be written: free dirty pages' reservations, and let
            // ordered extents in flight finish before the items go (else they would add extents
            // to a deleted inode).
            Data.WaitOrdered(m, 0, ulong.MaxValue);
            Data.Invalidate(m, 0, ulong.MaxValue);
            Data.WaitOrdered(m, 0, ulong.MaxValue);
            Data.CheckMappingQuiescent(m, "eviction");
        }
        var t = inode.Subvol.Tree;
        while (true)
        {
            // The batch deletes items that are adjacent in key order: a few leaves at most.
            if (Fs.TryStart(EvictItems, out var h, useGlobalReserve: true) != Errno.OK)
            {
                // The name is gone already; the orphan item finishes the job at the next mount.
                Fs.Warn($"inode {inode.Ino}: no space to free its extents now; left as an orphan");
                return;
            }
            using var hh = h;
            using var lk = t.Lock.Write();
            if (DeleteInodeItemsBatch(h, t, inode.Ino))
            {
                t.Delete(h, DirItems.OrphanKey(inode.Ino));
                inode.Deleted = true;
                inode.Orphaned = false;
                return;
            }
        }
    }

    /// <summary>Deletes up to <see cref="EvictBatch"/> items of the inode; true when none remain.</summary>
    private bool DeleteInodeItemsBatch(Tx.TransHandle h, BTree t, ulong ino)
    {
        var keys = new List<(Key Key, FileExtentItem? Fe)>();
        var path = new TreePath();
        if (t.SeekGE(new Key(ino, 0, 0), path))
        {
            do
            {
                var k = path.Key;
                if (k.ObjectId != ino) break;
                FileExtentItem? fe = null;
                if (k.Type == KeyTypes.ExtentData)
                {
                    if (!FileExtentItem.TryRead(path.Data, out var f)) throw new CorruptionException("malformed EXTENT_DATA", inode: ino);
                    fe = f;
                }
                keys.Add((k, fe));
            } while (keys.Count < EvictBatch && t.Next(path));
        }
        foreach (var (k, fe) in keys)
        {
            t.Delete(h, k);
            if (fe is { Type: not FileExtentType.Inline } f && f.DiskBytenr != 0)
                h.FileExtentRef(t, f.DiskBytenr, f.DiskNumBytes, ino, k.Offset - f.Offset, -1);
        }
        return keys.Count < EvictBatch;
    }

    /// <summary>At mount: finishes deleting inodes whose last name went away while they were
    /// open, or whose deletion a crash interrupted.</summary>
    private void CleanupOrphans(Subvolume sv)
    {
        var t = sv.Tree;
        var orphans = DirItems.Orphans(t);
        foreach (var ino in orphans)
        {
            while (true)
            {
                using var h = Fs.Start(EvictItems, useGlobalReserve: true);
                using var lk = t.Lock.Write();
                if (DeleteInodeItemsBatch(h, t, ino))
                {
                    t.Delete(h, DirItems.OrphanKey(ino));
                    break;
                }
            }
        }
        if (orphans.Count > 0) Fs.Warn($"deleted {orphans.Count} orphaned inode(s) left by an earlier mount");
    }
}

using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>The fs trees of subvolumes other than the top-level one (SPEC.md §5.7): loaded at
/// mount, created and forgotten as subvolumes come and go.</summary>
internal sealed partial class FsInfo
{
    private ulong _lastSubvolumeId; // guarded by _treesLock

    /// <summary>The highest subvolume id used on this mount (ids only grow: see
    /// <see cref="NextSubvolumeId"/>).</summary>
    public ulong HighestSubvolumeId
    {
        get { using var _ = _treesLock.Lock(); return Math.Max(_lastSubvolumeId, TreeIds.FsTree); }
    }

    /// <summary>Referrer entries the commit's quota accounting keeps (commit and quota on/off only).</summary>
    internal readonly ReferrerEntries ReferrerEntries = new();

    /// <summary>At mount: every subvolume tree named by a ROOT_ITEM, deleted ones included (their
    /// orphan item says their items are still to be dropped).</summary>
    private void LoadSubvolumeTrees()
    {
        var ids = new List<ulong>();
        var path = new TreePath();
        if (RootTree.SeekGE(new Key(TreeIds.FirstSubvolume, KeyTypes.RootItem, 0), path))
        {
            do
            {
                var k = path.Key;
                if (k.ObjectId >= TreeIds.OrphanObjectId) break;
                if (k.Type == KeyTypes.RootItem) ids.Add(k.ObjectId);
                else if (k.Type == KeyTypes.SnapshotLineage)
                {
                    if (!U64Item.TryRead(path.Data, out var otransid)) throw new CorruptionException($"malformed SNAPSHOT_LINEAGE {k}");
                    Lineage.Add(k.ObjectId, k.Offset, otransid);
                }
            } while (RootTree.Next(path));
        }
        foreach (var id in ids)
        {
            var t = LoadTree(id) ?? throw new CorruptionException($"subvolume {id} vanished while loading");
            using var _ = _treesLock.Lock();
            _fsTrees[id] = t;
            _lastSubvolumeId = Math.Max(_lastSubvolumeId, id);
        }
    }

    /// <summary>A fresh subvolume id: above every id ever used on this mount and every ROOT_ITEM
    /// (ids are not reused while anything may still refer to the old one).</summary>
    public ulong NextSubvolumeId()
    {
        using var _ = _treesLock.Lock();
        ulong max = Math.Max(_lastSubvolumeId, TreeIds.FirstSubvolume - 1);
        foreach (var id in _fsTrees.Keys) max = Math.Max(max, id);
        return _lastSubvolumeId = max + 1;
    }

    /// <summary>Creates an empty fs tree for a new subvolume, writes its ROOT_ITEM and registers
    /// it, and marks the image as having subvolumes (incompat bit). Caller holds a handle.</summary>
    public BTree CreateFsTree(TransHandle h, ulong id, RootItem item)
    {
        var tree = new BTree(id, Store, BTree.NewEmptyRoot(h, id), Sched) { RootChanged = true };
        RegisterFsTree(h, tree, item);
        SetIncompat(Features.IncompatSubvolumes);
        return tree;
    }

    /// <summary>Writes a new fs tree's ROOT_ITEM (pointing at its root node, with its
    /// last_snapshot) and registers the tree. Caller holds a handle.</summary>
    private void RegisterFsTree(TransHandle h, BTree tree, RootItem item)
    {
        item.Bytenr = tree.Root.Bytenr;
        item.Generation = tree.Root.Generation;
        item.Level = (byte)tree.Root.Level;
        item.LastSnapshot = tree.LastSnapshot;
        item.RootDirId = FormatConstants.RootDirObjectId;
        Span<byte> buf = stackalloc byte[RootItem.Size];
        item.Write(buf);
        using (RootTree.Lock.Write()) RootTree.Put(h, new Key(tree.Id, KeyTypes.RootItem, 0), buf);
        using (_treesLock.Lock()) _fsTrees[tree.Id] = tree;
        TreesChanged();
    }

    /// <summary>
    /// Makes tree <paramref name="id"/> a snapshot of <paramref name="source"/>: its ROOT_ITEM
    /// points at the source's root node, whose reference count goes up by one, and nothing
    /// else is copied (O(1)). Both trees record this transaction as their last snapshot, so
    /// from now on copy-on-write looks up whether a block is shared before changing it.
    /// Caller holds a handle and the source tree's write lock.
    /// </summary>
    public BTree CreateSnapshotTree(TransHandle h, ulong id, BTree source, RootItem item)
    {
        var root = source.Root;
        h.Transaction.Refs.AddTreeRef(root.Bytenr, (ulong)NodeSize, root.Owner, root.Level, +1, isNew: false, 0);
        source.LastSnapshot = h.Transid;
        source.RootChanged = true; // its ROOT_ITEM records last_snapshot
        var tree = new BTree(id, Store, root, Sched) { LastSnapshot = h.Transid };
        RegisterFsTree(h, tree, item);
        Span<byte> lin = stackalloc byte[U64Item.Size];
        U64Item.Write(lin, h.Transid);
        using (RootTree.Lock.Write()) RootTree.Put(h, new Key(id, KeyTypes.SnapshotLineage, source.Id), lin);
        Lineage.Add(id, source.Id, h.Transid);
        // What the source references, the snapshot references too (its numbers start as the
        // source's; the source's transitions so far in this transaction are repeated for it).
        h.Transaction.OwnerTransitions.CopyRoot(source.Id, id);
        Quota.InheritSnapshot(source.Id, id);
        SetIncompat(Features.IncompatSubvolumes | Features.IncompatSnapshots);
        return tree;
    }

    /// <summary>Marks the image as using a feature older versions must not mount (written by
    /// the running transaction's commit). Caller holds a handle, so no commit is under way;
    /// other handles may set bits at the same time (a snapshot, a link needing an
    /// INODE_EXTREF), hence the exchange instead of a plain store.</summary>
    /// <summary>Puts a changed copy of the superblock in place (the label): by exchange, as
    /// <see cref="SetIncompat"/>; the caller holds a transaction handle, so no commit is
    /// between its copy of the superblock and publishing it.</summary>
    internal void ReplaceSuper(Action<Superblock> change)
    {
        while (true)
        {
            var cur = _super;
            var sb = cur.Clone();
            change(sb);
            if (Interlocked.CompareExchange(ref _super, sb, cur) == cur) return;
        }
    }

    internal void SetIncompat(ulong bits)
    {
        while (true)
        {
            var cur = _super;
            if ((cur.Incompat & bits) == bits) return;
            var sb = cur.Clone();
            sb.Incompat |= bits;
            if (Interlocked.CompareExchange(ref _super, sb, cur) == cur) return;
        }
    }

    /// <summary>How many parents point at a tree block: its METADATA_ITEM's refs (0 for a
    /// block born in <paramref name="tx"/>) plus the transaction's pending changes.</summary>
    public ulong TreeBlockRefs(ulong bytenr, int level, Transaction tx)
    {
        long refs = tx.Refs.PendingTreeDelta(bytenr);
        byte[]? d;
        using (ExtentTree.Lock.Read()) d = ExtentTree.Get(new Key(bytenr, KeyTypes.MetadataItem, (ulong)level));
        if (d != null)
        {
            if (!ExtentItem.TryRead(d, out var ei)) throw new CorruptionException($"malformed METADATA_ITEM of tree block {bytenr}", bytenr);
            refs += (long)ei.Refs;
        }
        if (refs < 0) throw new CorruptionException($"tree block {bytenr} has a negative reference count", bytenr);
        return (ulong)refs;
    }

    /// <summary>
    /// Whether a data extent may be referenced by anything but the one file range asking:
    /// inode <paramref name="ino"/> of tree <paramref name="root"/> at back-reference offset
    /// <paramref name="refOffset"/> (its file position minus its offset in the extent, which
    /// all pieces cut from one write share). Writing it in place would change the others too
    /// (btrfs's can_nocow_extent). Shared are: an extent born at or before
    /// <paramref name="lastSnapshot"/> (the tree's last snapshot, 0 if none; one born in the
    /// running transaction has no item yet and counts as born now), and one with a reference,
    /// committed or added in the running transaction, from another file, another tree or the
    /// same file at another offset (a clone within the file; btrfs's check_committed_ref
    /// compares the same three fields, and the stress runner, seed 52, caught a check of root
    /// and inode alone). One seek: the EXTENT_ITEM and then its back-references.
    /// </summary>
    public bool DataExtentMayBeShared(ulong bytenr, ulong numBytes, ulong lastSnapshot, ulong root, ulong ino, ulong refOffset)
    {
        if (Running.Refs.AddsDataRefsOtherThan(bytenr, root, ino, refOffset)) return true;
        // A shrink is about to move it (the fence stands below it): data written in place
        // after the move was planned would be left behind at the old address.
        if (Space.PastFence(bytenr, numBytes)) return true;
        using var lk = ExtentTree.Lock.Read();
        var path = new TreePath();
        var itemKey = new Key(bytenr, KeyTypes.ExtentItem, numBytes);
        if (!ExtentTree.SeekGE(itemKey, path)) return lastSnapshot >= Running.Transid;
        if (path.Key == itemKey)
        {
            if (!ExtentItem.TryRead(path.Data, out var ei)) throw new CorruptionException($"malformed EXTENT_ITEM of data extent {bytenr}", bytenr);
            if (ei.Generation <= lastSnapshot) return true;
            if (!ExtentTree.Next(path)) return false;
        }
        else if (lastSnapshot >= Running.Transid) return true;
        do
        {
            var k = path.Key;
            if (k.ObjectId != bytenr || k.Type != KeyTypes.ExtentDataRef) return false;
            if (!ExtentDataRef.TryRead(path.Data, out var r)) throw new CorruptionException($"malformed EXTENT_DATA_REF of data extent {bytenr}", bytenr);
            if (r.Root != root || r.Inode != ino || r.Offset != refOffset) return true;
        } while (ExtentTree.Next(path));
        return false;
    }

    /// <summary>Forgets a subvolume tree whose items are all gone: frees its (empty) root node
    /// and deletes its ROOT_ITEM. Caller holds a handle and has checked the tree is empty.</summary>
    public void RemoveFsTree(TransHandle h, BTree tree)
    {
        using (tree.Lock.Write())
        {
            if (tree.Root.Level != 0 || tree.Root.NrItems != 0)
                ThrowHelper.Invariant($"subvolume {tree.Id} removed with items left");
            h.FreeNode(tree.Root, tree.Id);
        }
        using (RootTree.Lock.Write())
        {
            RootTree.Delete(h, new Key(tree.Id, KeyTypes.RootItem, 0));
            // Its group's usage goes with it (the group itself follows, Qgroups.RemoveForSubvolume).
            DeleteLevel0Usage(h, tree.Id);
        }
        using (_treesLock.Lock()) _fsTrees.Remove(tree.Id);
        TreesChanged();
        ForgetLineage(h, tree.Id);
    }

    /// <summary>A subvolume that is gone leaves the lineage once no snapshot of it is left, and
    /// takes with it any gone source that was kept only for its sake.</summary>
    private void ForgetLineage(TransHandle h, ulong id)
    {
        while (!Lineage.HasSnapshots(id) && Lineage.ParentOf(id) is { } p)
        {
            using (_treesLock.Lock()) if (_fsTrees.ContainsKey(id)) return;
            using (RootTree.Lock.Write()) RootTree.Delete(h, new Key(id, KeyTypes.SnapshotLineage, p.Parent));
            Lineage.Remove(id);
            id = p.Parent;
        }
    }

    /// <summary>The ROOT_ITEM of a tree as it is now (null if there is none).</summary>
    public RootItem? RootItemOf(ulong id)
    {
        byte[]? d;
        using (RootTree.Lock.Read()) d = RootTree.Get(new Key(id, KeyTypes.RootItem, 0));
        return d == null || d.Length != RootItem.Size ? null : RootItem.Read(d);
    }

    /// <summary>Records the default subvolume in the superblock (written by the next commit).
    /// Under the commit lock: the superblock object is replaced, never changed in place.</summary>
    public void SetDefaultSubvolumeId(ulong id)
    {
        _commitLock.EnterWrite();
        try
        {
            var sb = Super.Clone();
            sb.DefaultSubvolume = id;
            Super = sb;
            ForceCommit = true;
        }
        finally { _commitLock.ExitWrite(); }
    }
}

using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// One operation's membership in the running transaction (btrfs's trans handle). Created by
/// <see cref="FsInfo.Start"/> after the metadata the operation may dirty has been reserved;
/// node allocations draw on that reservation; disposing returns what was not used and lets a
/// waiting commit proceed. While a handle lives its transaction cannot commit, so an
/// operation's changes are always committed together.
/// </summary>
internal sealed class TransHandle : ITreeContext, IDisposable
{
    private readonly FsInfo _fs;
    private readonly bool _holdsCommitLock;
    private ulong _metaLeft;
    private bool _disposed;
    public Transaction Transaction { get; }
    public ulong Transid => Transaction.Transid;
    /// <summary>Open handles on this thread that have begun changing trees. An exception seen
    /// while this is non-zero means an operation stopped halfway through its changes (read by
    /// exception filters, which run before the handle's Dispose unwinds).</summary>
    [ThreadStatic] private static int _changingOnThread;
    public static int ChangingOnThisThread => _changingOnThread;
    private bool _changing;
    /// <summary>Nodes this handle allocated beyond its reservation (0 when estimates hold).</summary>
    public int Overruns { get; private set; }

    internal TransHandle(FsInfo fs, Transaction tx, ulong metaReserved, bool holdsCommitLock)
    {
        _fs = fs;
        Transaction = tx;
        _metaLeft = metaReserved;
        _holdsCommitLock = holdsCommitLock;
    }

    /// <summary>The transaction writes a structure behind an incompat feature bit (SPEC.md §6);
    /// its commit's superblock carries the bit.</summary>
    public void UsesFeature(ulong incompatBit) => _fs.SetIncompat(incompatBit);

    public void NoteChange()
    {
        if (_changing || !_holdsCommitLock) return;
        _changing = true;
        _changingOnThread++;
    }

    public TreeNode AllocNode(ulong owner, int level)
    {
        ulong ns = (ulong)_fs.NodeSize;
        bool fromRes = _metaLeft >= ns;
        if (fromRes) _metaLeft -= ns;
        else if (_holdsCommitLock) { Overruns++; Interlocked.Increment(ref _fs.Stats.ReservationOverruns); }
        ulong bytenr = _fs.Space.AllocNode(fromRes);
        _fs.NoteNodeLevel(level);
        var node = TreeNode.CreateEmpty(_fs.NodeSize, _fs.Fsid, bytenr, Transid, owner, level);
        node.Dirty = true;
        Transaction.AddDirty(node);
        _fs.Store.Add(node);
        Transaction.Refs.AddTreeRef(bytenr, ns, owner, level, +1, isNew: true, Transid);
        return node;
    }

    public void FreeNode(TreeNode node, ulong owner)
    {
        ulong ns = (ulong)_fs.NodeSize;
        Transaction.Refs.AddTreeRef(node.Bytenr, ns, owner, node.Level, -1, isNew: false, 0);
        // A node born in this transaction was never part of a committed tree: its space can be
        // reused at once. Older nodes stay pinned until this transaction commits. Inside a
        // commit (a handle without the commit lock) even a node born here stays pinned: its
        // reference head may already have been applied in an earlier round (its item exists),
        // and an address reused in the same commit, perhaps at another level, would share a
        // head with it (the stress runner, seed 32, caught "new tree block ... delta -1").
        bool bornHere = node.Dirty && node.Generation == Transid;
        if (bornHere)
        {
            Transaction.RemoveDirty(node);
            node.Dirty = false;
        }
        _fs.Store.Remove(node.Bytenr);
        _fs.Space.Free(node.Bytenr, ns, pin: !(bornHere && _holdsCommitLock));
    }

    public ulong TreeBlockRefs(TreeNode node) => _fs.TreeBlockRefs(node.Bytenr, node.Level, Transaction);

    public void ReplaceNode(TreeNode old, TreeNode copy, ulong owner, bool mayBeShared)
    {
        if (!mayBeShared) { FreeNode(old, owner); return; }
        // The lookup and the changes it decides on are one step: two trees copying the same
        // shared block at once must not both see "shared" and leave it with no referrer.
        using var _ = _fs.SharingLock.Lock();
        if (TreeBlockRefs(old) > 1)
        {
            // btrfs's update_ref_for_cow: the copy is a new referrer of everything below it.
            AddContentRefs(copy, owner, +1);
            Transaction.Refs.AddTreeRef(old.Bytenr, (ulong)_fs.NodeSize, old.Owner, old.Level, -1, isNew: false, 0);
            return;
        }
        // Ours alone: the copy takes over its references. A leaf's data back-references name
        // the tree that owns the leaf, so a leaf inherited from a snapshot source moves them.
        if (old.IsLeaf && old.Owner != owner)
        {
            AddLeafDataRefs(old, old.Owner, -1);
            AddLeafDataRefs(old, owner, +1);
        }
        FreeNode(old, owner);
    }

    /// <summary>A file extent item of <paramref name="tree"/> naming a data extent was added
    /// (delta &gt; 0) or removed: its back-reference, and while quotas are on the tree's
    /// EXTENT_OWNER_REF (SPEC.md §5.9). Copy-on-write of shared leaves changes back-references
    /// only (the owner refs travel inside the leaves). Caller holds the tree's write lock.</summary>
    public void FileExtentRef(BTree tree, ulong bytenr, ulong numBytes, ulong ino, ulong offset, int delta, bool isNew = false)
    {
        Transaction.Refs.AddDataRef(bytenr, numBytes, tree.Id, ino, offset, delta, isNew, isNew ? Transid : 0);
        if (_fs.Quota.Enabled) OwnerRefs.Change(this, tree, bytenr, numBytes, delta, isNew);
    }

    public bool DropIfShared(TreeNode node)
    {
        using var _ = _fs.SharingLock.Lock();
        if (TreeBlockRefs(node) <= 1) return false;
        Transaction.Refs.AddTreeRef(node.Bytenr, (ulong)_fs.NodeSize, node.Owner, node.Level, -1, isNew: false, 0);
        return true;
    }

    public void DropLeaf(TreeNode leaf, ulong owner) => AddLeafDataRefs(leaf, owner, -1);

    /// <summary>A new referrer (or one fewer) of everything a node points at: its children, or
    /// for a leaf the data extents of its file extent items.</summary>
    private void AddContentRefs(TreeNode node, ulong owner, int delta)
    {
        if (node.IsLeaf) { AddLeafDataRefs(node, owner, delta); return; }
        ulong ns = (ulong)_fs.NodeSize;
        for (int i = 0; i < node.NrItems; i++)
            Transaction.Refs.AddTreeRef(node.ChildAt(i), ns, 0, node.Level - 1, delta, isNew: false, 0);
    }

    private void AddLeafDataRefs(TreeNode leaf, ulong root, int delta)
    {
        for (int i = 0; i < leaf.NrItems; i++)
        {
            var k = leaf.KeyAt(i);
            if (k.Type != KeyTypes.ExtentData) continue;
            if (!FileExtentItem.TryRead(leaf.ItemDataRO(i), out var fe))
                throw new CorruptionException($"tree {leaf.Owner}: malformed EXTENT_DATA {k}", leaf.Bytenr);
            if (fe.Type == FileExtentType.Inline || fe.DiskBytenr == 0) continue;
            Transaction.Refs.AddDataRef(fe.DiskBytenr, fe.DiskNumBytes, root, k.ObjectId, k.Offset - fe.Offset, delta, isNew: false, 0);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _fs.Space.Release(false, _metaLeft);
        _metaLeft = 0;
        if (_changing) _changingOnThread--;
        if (_holdsCommitLock) _fs.EndHandle(this);
    }
}

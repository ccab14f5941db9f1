using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>
/// A copy-on-write B+tree (SPEC.md §3). Reads descend from <see cref="Root"/>; writes first copy
/// every node on the path that is not yet dirty in the running transaction, then change the
/// copies in place, so the last committed tree is never touched.
///
/// Invariants kept by every operation:
/// - a parent's key for child i equals the first key of child i (low keys are fixed up);
/// - keys are strictly increasing within a node and across siblings;
/// - no node but the root is empty; an internal root has at least two children.
/// Locking: <see cref="Lock"/> guards the node structure. Readers hold it shared; any caller
/// passing an <see cref="ITreeContext"/> holds it exclusively.
/// </summary>
internal sealed partial class BTree
{
    private readonly NodeStore _store;
    public ulong Id { get; }
    public FsRwLock Lock { get; }
    public TreeNode Root { get; private set; }
    /// <summary>The root moved in the running transaction; the root item needs rewriting. Set
    /// under the tree's write lock; setting it notes the tree in its store's
    /// <see cref="NodeStore.MovedRoots"/>, which the commit reads.</summary>
    public bool RootChanged
    {
        get => _rootChanged;
        set
        {
            _rootChanged = value;
            if (value) _store.MovedRoots.Add(this);
        }
    }
    private bool _rootChanged;
    /// <summary>The last transaction in which a snapshot shared this tree's root (ROOT_ITEM
    /// last_snapshot; 0 for trees never snapshotted). A block written after it cannot be shared,
    /// so copy-on-write skips the reference lookup for it (btrfs_block_can_be_shared).</summary>
    public ulong LastSnapshot { get; set; }

    public BTree(ulong id, NodeStore store, TreeNode root, IScheduler sched)
    {
        Id = id;
        _store = store;
        Root = root;
        Lock = sched.CreateRwLock($"tree-{id}");
    }

    public int Height => Root.Level + 1;
    private int LeafCapacity => _store.NodeSize - NodeLayout.HeaderSize;
    public int MaxItemData => NodeLayout.MaxItemData(_store.NodeSize);

    public TreeNode ReadChild(TreeNode parent, int slot) =>
        _store.Read(parent.ChildAt(slot), parent.ChildGenAt(slot), parent.Level - 1);

    /// <summary>
    /// Positions <paramref name="path"/> at <paramref name="key"/> (returns true) or where it
    /// would be inserted (false; the slot may equal the leaf's item count). With a context,
    /// every node on the path is made dirty first.
    /// </summary>
    public bool Search(ITreeContext? tx, Key key, TreePath path)
    {
        path.Reset();
        var node = Root;
        if (tx != null)
        {
            tx.NoteChange();
            node = CowRoot(tx);
        }
        for (int level = node.Level; ; level--)
        {
            path.Nodes[level] = node;
            bool found = node.Search(key, out int slot);
            if (level == 0)
            {
                path.Slots[0] = slot;
                return found;
            }
            if (!found && slot > 0) slot--;
            path.Slots[level] = slot;
            node = tx != null ? CowChild(tx, node, slot) : ReadChild(node, slot);
        }
    }

    /// <summary>
    /// A read-only <see cref="Search"/> that starts from where <paramref name="path"/> already
    /// is: when its leaf spans <paramref name="key"/> (first key ≤ key ≤ last key) only that leaf
    /// is searched, and the levels above stay as they were, which is where a full search would
    /// lead. For a caller visiting keys in order (the commit's accounting reads the extents it
    /// changed in address order). The caller must not have changed the tree since the path was
    /// made.
    /// </summary>
    public bool SearchNear(Key key, TreePath path)
    {
        var leaf = path.Nodes[0];
        if (leaf != null && leaf.Level == 0 && leaf.Spans(key))
        {
            bool found = leaf.SearchFrom(key, path.Slots[0], out int slot);
            path.Slots[0] = slot;
            return found;
        }
        return Search(null, key, path);
    }

    /// <summary>Moves past the end of a leaf to the first item of the next leaf. Returns false
    /// at the end of the tree. Read-only paths only.</summary>
    public bool NormalizeForward(TreePath path)
    {
        while (path.Slots[0] >= path.Leaf.NrItems)
        {
            int level = 1;
            while (true)
            {
                if (level > Root.Level || path.Nodes[level] == null) return false;
                if (path.Slots[level] + 1 < path.Nodes[level]!.NrItems) break;
                level++;
            }
            path.Slots[level]++;
            for (int l = level - 1; l >= 0; l--)
            {
                path.Nodes[l] = ReadChild(path.Nodes[l + 1]!, path.Slots[l + 1]);
                path.Slots[l] = 0;
            }
        }
        return true;
    }

    /// <summary>Advances to the next item; false at the end of the tree.</summary>
    public bool Next(TreePath path)
    {
        path.Slots[0]++;
        return NormalizeForward(path);
    }

    /// <summary>Positions at the first item with key ≥ <paramref name="key"/>; false if none.</summary>
    public bool SeekGE(Key key, TreePath path)
    {
        Search(null, key, path);
        return NormalizeForward(path);
    }

    /// <summary>Positions at the last item with key ≤ <paramref name="key"/>; false if none.</summary>
    public bool SeekLE(Key key, TreePath path)
    {
        if (Search(null, key, path)) return true;
        if (path.Slots[0] > 0) { path.Slots[0]--; return true; }
        // The previous item, if any, is the last of the previous leaf: search just below our
        // leaf's first key is not possible without a key, so walk up for a left sibling.
        int level = 1;
        while (level <= Root.Level && path.Slots[level] == 0) level++;
        if (level > Root.Level) return false;
        path.Slots[level]--;
        for (int l = level - 1; l >= 0; l--)
        {
            path.Nodes[l] = ReadChild(path.Nodes[l + 1]!, path.Slots[l + 1]);
            path.Slots[l] = path.Nodes[l]!.NrItems - 1;
        }
        return path.Slots[0] >= 0;
    }

    /// <summary>Copies an item's data, or returns null.</summary>
    public byte[]? Get(Key key)
    {
        using var lease = TreePath.Rent(out var path);
        return Search(null, key, path) ? path.Data.ToArray() : null;
    }

    /// <summary>An item's length in bytes, or 0 when there is none (no copy).</summary>
    public int ItemSize(Key key)
    {
        using var lease = TreePath.Rent(out var path);
        return Search(null, key, path) ? path.Data.Length : 0;
    }

    // ---------------------------------------------------------------- copy-on-write

    /// <summary>Whether this tree may change <paramref name="n"/> in place: it was copied (or
    /// created) in the running transaction by this tree and no snapshot taken since shares it.
    /// Only in the transaction that took a snapshot of this tree does the last test need a
    /// lookup. The owner test matters there too: a node the snapshot source copied away from
    /// in that transaction is the snapshot's alone but still the source's (its data
    /// back-references name the source), so the snapshot copies it rather than change it.</summary>
    private bool ChangeableInPlace(ITreeContext tx, TreeNode n) =>
        n.Dirty && n.Owner == Id && (n.Generation > LastSnapshot || tx.TreeBlockRefs(n) == 1);

    private bool MayBeShared(TreeNode n) => n.Generation <= LastSnapshot;

    private TreeNode CowRoot(ITreeContext tx)
    {
        if (ChangeableInPlace(tx, Root)) return Root;
        var copy = CopyNode(tx, Root);
        Root = copy;
        RootChanged = true;
        return copy;
    }

    /// <summary>Returns child <paramref name="slot"/> of a dirty parent, made dirty.</summary>
    private TreeNode CowChild(ITreeContext tx, TreeNode parent, int slot)
    {
        var child = ReadChild(parent, slot);
        if (ChangeableInPlace(tx, child)) return child;
        var copy = CopyNode(tx, child);
        parent.SetPtr(slot, copy.Bytenr, copy.Generation);
        return copy;
    }

    private TreeNode CopyNode(ITreeContext tx, TreeNode node)
    {
        var copy = tx.AllocNode(Id, node.Level);
        ulong bytenr = copy.Bytenr, gen = copy.Generation;
        node.Data.AsSpan(NodeLayout.OffFlags).CopyTo(copy.Data.AsSpan(NodeLayout.OffFlags));
        copy.Bytenr = bytenr;
        copy.Generation = gen;
        copy.Owner = Id;
        tx.ReplaceNode(node, copy, Id, MayBeShared(node));
        return copy;
    }

    /// <summary>A relocation (a shrink moving tree blocks, FsInfo.Relocate.cs) wrote the root
    /// elsewhere with the same contents and generation: the tree reads from there now. The
    /// caller rewrites the ROOT_ITEM itself (the tree did not change, so its ctransid stays)
    /// and holds the tree's write lock.</summary>
    public void RootRelocated(TreeNode root)
    {
        if (root.Generation != Root.Generation || root.Level != Root.Level)
            throw new InvalidOperationException($"tree {Id}: a relocated root keeps its generation and level");
        Root = root;
    }

    /// <summary>Makes the tree's root an empty leaf (used when creating a tree).</summary>
    public static TreeNode NewEmptyRoot(ITreeContext tx, ulong id) => tx.AllocNode(id, 0);

    private void FixupLowKeys(TreePath path, int fromLevel, Key key)
    {
        for (int l = fromLevel + 1; l <= Root.Level; l++)
        {
            var n = path.Nodes[l];
            if (n == null) break;
            n.SetKey(path.Slots[l], key);
            if (path.Slots[l] != 0) break;
        }
    }
}

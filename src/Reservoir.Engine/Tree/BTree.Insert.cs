using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Engine.Tree;

internal sealed partial class BTree
{
    /// <summary>
    /// Inserts an item of <paramref name="size"/> bytes and returns its data to fill in, or
    /// returns false (and leaves the tree unchanged) if the key exists.
    /// </summary>
    public bool TryInsert(ITreeContext tx, Key key, int size, out Span<byte> data)
    {
        if (size > MaxItemData) ThrowHelper.Invariant($"item of {size} bytes cannot fit a leaf");
        using var lease = TreePath.Rent(out var path);
        while (true)
        {
            if (Search(tx, key, path)) { data = default; return false; }
            var leaf = path.Leaf;
            int slot = path.Slot;
            if (leaf.LeafFreeSpace >= size + NodeLayout.ItemSize)
            {
                data = leaf.InsertItem(slot, key, size);
                if (slot == 0) FixupLowKeys(path, 0, key);
                return true;
            }
            // A neighbour with room takes items, and the search is made again: the key may
            // belong to the neighbour now.
            if (PushToNeighbour(tx, path, size + NodeLayout.ItemSize)) continue;
            if (SplitLeafForInsert(tx, path, key, size, out data)) return true;
        }
    }

    public Span<byte> Insert(ITreeContext tx, Key key, int size)
    {
        if (!TryInsert(tx, key, size, out var d)) ThrowHelper.Invariant($"tree {Id}: key {key} already exists");
        return d;
    }

    /// <summary>Inserts or replaces the whole item.</summary>
    public void Put(ITreeContext tx, Key key, ReadOnlySpan<byte> value)
    {
        using var lease = TreePath.Rent(out var path);
        if (Search(tx, key, path))
        {
            if (path.Leaf.ItemSize(path.Slot) == value.Length) { value.CopyTo(path.MutableData); return; }
            DeleteAt(tx, path);
        }
        value.CopyTo(Insert(tx, key, value.Length));
    }

    /// <summary>
    /// Splits the full leaf on the path so the new item fits. Considers the leaf's items with the
    /// new one in its place and picks the most balanced two-way cut where both halves fit; the
    /// new item is inserted as part of the split (returns true). If no two-way cut exists (a
    /// large item between two large neighbours), cuts the leaf at the insertion point without
    /// inserting (returns false) so that the next attempt finds a two-way cut.
    /// </summary>
    private bool SplitLeafForInsert(ITreeContext tx, TreePath path, Key key, int size, out Span<byte> data)
    {
        var leaf = path.Leaf;
        int n = leaf.NrItems, k = path.Slot, cap = LeafCapacity;
        int newBytes = size + NodeLayout.ItemSize;
        int total = leaf.LeafUsed + newBytes;
        int best = -1, bestDiff = int.MaxValue, left = 0;
        // m = number of virtual items (n old + 1 new) on the left; 1..n.
        for (int m = 1; m <= n; m++)
        {
            int vi = m - 1; // virtual index just added to the left
            left += vi == k ? newBytes : ItemBytes(leaf, vi < k ? vi : vi - 1);
            int right = total - left;
            if (left <= cap && right <= cap && Math.Abs(left - right) < bestDiff)
            {
                best = m;
                bestDiff = Math.Abs(left - right);
            }
        }
        if (best < 0)
        {
            if (k == 0 || k == n) ThrowHelper.Invariant("leaf split found no cut at an edge");
            var r = SplitLeafAt(tx, path, k);
            InsertPtr(tx, path, 1, r.KeyAt(0), r.Bytenr);
            data = default;
            return false;
        }
        bool newLeft = k < best;
        int origSplit = newLeft ? best - 1 : best;
        var right2 = SplitLeafAt(tx, path, origSplit);
        if (newLeft)
        {
            data = leaf.InsertItem(k, key, size);
            if (k == 0) FixupLowKeys(path, 0, key);
        }
        else
        {
            data = right2.InsertItem(k - origSplit, key, size);
        }
        InsertPtr(tx, path, 1, right2.KeyAt(0), right2.Bytenr);
        return true;
    }

    private static int ItemBytes(TreeNode leaf, int i) => leaf.ItemSize(i) + NodeLayout.ItemSize;

    /// <summary>Moves items [at, n) of the path's leaf to a new right sibling and returns it;
    /// the caller links it into the parent.</summary>
    private TreeNode SplitLeafAt(ITreeContext tx, TreePath path, int at)
    {
        var leaf = path.Leaf;
        var right = tx.AllocNode(Id, 0);
        right.AppendItemsFrom(leaf, at, leaf.NrItems);
        if (leaf.NrItems > at) leaf.DeleteItems(at, leaf.NrItems - at);
        return right;
    }

    /// <summary>Inserts a pointer to <paramref name="bytenr"/> right after the path's node at
    /// <paramref name="level"/>-1, splitting full nodes upward and growing a new root if needed.
    /// Invalidates the path above level-1.</summary>
    private void InsertPtr(ITreeContext tx, TreePath path, int level, Key key, ulong bytenr)
    {
        if (level > Root.Level)
        {
            var oldRoot = path.Nodes[level - 1]!;
            var newRoot = tx.AllocNode(Id, level);
            newRoot.InsertPtr(0, oldRoot.KeyAt(0), oldRoot.Bytenr, oldRoot.Generation);
            Root = newRoot;
            RootChanged = true;
            path.Nodes[level] = newRoot;
            path.Slots[level] = 0;
        }
        var node = path.Nodes[level]!;
        int slot = path.Slots[level] + 1;
        if (node.NrItems < node.MaxPtrs)
        {
            node.InsertPtr(slot, key, bytenr, tx.Transid);
            return;
        }
        int mid = node.NrItems / 2;
        var right = tx.AllocNode(Id, level);
        node.MovePtrsTo(right, mid);
        InsertPtr(tx, path, level + 1, right.KeyAt(0), right.Bytenr);
        if (slot <= mid) node.InsertPtr(slot, key, bytenr, tx.Transid);
        else right.InsertPtr(slot - mid, key, bytenr, tx.Transid);
    }

    /// <summary>
    /// Resizes an existing item (keeping its prefix) and returns its data. Grows through
    /// delete-and-reinsert when the leaf has no room.
    /// </summary>
    public Span<byte> Resize(ITreeContext tx, Key key, int newSize)
    {
        if (newSize > MaxItemData) ThrowHelper.Invariant($"item of {newSize} bytes cannot fit a leaf");
        using var lease = TreePath.Rent(out var path);
        if (!Search(tx, key, path)) ThrowHelper.Invariant($"tree {Id}: resize of missing key {key}");
        int old = path.Leaf.ItemSize(path.Slot);
        if (newSize <= old || path.Leaf.LeafFreeSpace >= newSize - old)
        {
            path.Leaf.ResizeItem(path.Slot, newSize);
            return path.MutableData;
        }
        var copy = path.Data.ToArray();
        DeleteAt(tx, path);
        var d = Insert(tx, key, newSize);
        copy.CopyTo(d);
        d[old..].Clear();
        return d;
    }
}

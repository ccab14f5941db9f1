using Reservoir.Format;

namespace Reservoir.Engine.Tree;

internal sealed partial class BTree
{
    /// <summary>A neighbour with less room than this is not worth a push: the split follows
    /// soon anyway, and each push moves up to a leaf's worth of bytes.</summary>
    private int MinPushRoom => LeafCapacity / 8;

    /// <summary>
    /// Before a full leaf splits, moves items into a neighbour with room, as btrfs does
    /// (push_leaf_right, then push_leaf_left): a split leaves two half-full leaves, and keys
    /// inserted in order (extent addresses at the end of the extent tree, new inodes, a tree's
    /// EXTENT_OWNER_REFs) would leave a trail of half-full leaves behind them, so every commit
    /// that touches such a tree writes up to twice the nodes it needs. The items are shared out
    /// so that both leaves end about equally full with the new item in the one it will land in;
    /// the caller searches again and inserts there. Only into a neighbour this transaction may
    /// change without copying a shared block (a copy of a snapshot's leaf costs more than the
    /// split saves). Returns false, changing nothing, when no neighbour can take enough.
    /// </summary>
    private bool PushToNeighbour(ITreeContext tx, TreePath path, int newBytes)
    {
        if (path.Leaf.Level == Root.Level) return false; // the root leaf has no neighbours
        var parent = path.Nodes[1]!;
        int ps = path.Slots[1];
        return (ps + 1 < parent.NrItems && PushRight(tx, path, parent, ps, newBytes))
            || (ps > 0 && PushLeft(tx, path, parent, ps, newBytes));
    }

    /// <summary>Whether <paramref name="n"/> can take items without a copy of a shared block:
    /// already this transaction's, or written after the tree's last snapshot.</summary>
    private bool CheapToChange(ITreeContext tx, TreeNode n) => ChangeableInPlace(tx, n) || !MayBeShared(n);

    /// <summary>Moves the leaf's last items to the head of its right neighbour. After moving
    /// items [j, n), a key whose slot k is above j lands in the neighbour, else in the leaf.</summary>
    private bool PushRight(ITreeContext tx, TreePath path, TreeNode parent, int ps, int newBytes)
    {
        var leaf = path.Leaf;
        var right = ReadChild(parent, ps + 1);
        if (right.LeafFreeSpace < MinPushRoom || !CheapToChange(tx, right)) return false;
        int n = leaf.NrItems, k = path.Slot, cap = LeafCapacity;
        int best = -1, bestDiff = int.MaxValue;
        // Fewer items left behind (smaller j) only fill the neighbour more.
        for (int j = n - 1; j >= 1; j--)
        {
            int moved = leaf.ItemsBytes(j, n);
            bool inRight = k > j;
            int rightAfter = right.LeafUsed + moved + (inRight ? newBytes : 0);
            if (rightAfter > cap) break;
            int leafAfter = leaf.LeafUsed - moved + (inRight ? 0 : newBytes);
            if (leafAfter > cap) continue;
            int diff = Math.Abs(leafAfter - rightAfter);
            if (diff < bestDiff) (best, bestDiff) = (j, diff);
        }
        if (best < 0) return false;
        var writable = CowChild(tx, parent, ps + 1);
        writable.InsertItemsFrom(0, leaf, best, n);
        leaf.DeleteItems(best, n - best);
        parent.SetKey(ps + 1, writable.KeyAt(0)); // ps + 1 > 0: the levels above keep their key
        return true;
    }

    /// <summary>Moves the leaf's first items to the end of its left neighbour. After moving
    /// items [0, j), a key whose slot k is at most j lands in the neighbour, else in the leaf.</summary>
    private bool PushLeft(ITreeContext tx, TreePath path, TreeNode parent, int ps, int newBytes)
    {
        var leaf = path.Leaf;
        var left = ReadChild(parent, ps - 1);
        if (left.LeafFreeSpace < MinPushRoom || !CheapToChange(tx, left)) return false;
        int n = leaf.NrItems, k = path.Slot, cap = LeafCapacity;
        int best = -1, bestDiff = int.MaxValue;
        // j < n: the leaf keeps an item (no node but the root is empty).
        for (int j = 1; j < n; j++)
        {
            int moved = leaf.ItemsBytes(0, j);
            bool inLeft = k <= j;
            int leftAfter = left.LeafUsed + moved + (inLeft ? newBytes : 0);
            if (leftAfter > cap) break;
            int leafAfter = leaf.LeafUsed - moved + (inLeft ? 0 : newBytes);
            if (leafAfter > cap) continue;
            int diff = Math.Abs(leafAfter - leftAfter);
            if (diff < bestDiff) (best, bestDiff) = (j, diff);
        }
        if (best < 0) return false;
        var writable = CowChild(tx, parent, ps - 1);
        writable.InsertItemsFrom(writable.NrItems, leaf, 0, best);
        leaf.DeleteItems(0, best);
        parent.SetKey(ps, leaf.KeyAt(0)); // ps > 0: the levels above keep their key
        return true;
    }
}

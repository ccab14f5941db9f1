using Reservoir.Format;

namespace Reservoir.Engine.Tree;

internal sealed partial class BTree
{
    /// <summary>Deletes the item with this key; false if it does not exist.</summary>
    public bool Delete(ITreeContext tx, Key key)
    {
        using var lease = TreePath.Rent(out var path);
        if (!Search(tx, key, path)) return false;
        DeleteAt(tx, path);
        return true;
    }

    /// <summary>Deletes the item at a path obtained from a copy-on-write search, then restores
    /// the tree's shape: empty nodes leave their parents, underfull nodes merge with a
    /// sibling when both fit in one, and a root with one child gives way to that child.</summary>
    public void DeleteAt(ITreeContext tx, TreePath path)
    {
        var leaf = path.Leaf;
        int slot = path.Slot;
        leaf.DeleteItems(slot, 1);
        if (leaf.Level == Root.Level) return; // the root leaf may be empty
        if (leaf.NrItems == 0)
        {
            RemoveChild(tx, path, 0);
            return;
        }
        if (slot == 0) FixupLowKeys(path, 0, leaf.KeyAt(0));
        if (leaf.LeafUsed < LeafCapacity / 4) TryMerge(tx, path, 0);
    }

    /// <summary>Unlinks the (empty) node at <paramref name="level"/> from its parent.</summary>
    private void RemoveChild(ITreeContext tx, TreePath path, int level)
    {
        var node = path.Nodes[level]!;
        var parent = path.Nodes[level + 1]!;
        int ps = path.Slots[level + 1];
        parent.DeletePtrs(ps, 1);
        FreeTreeNode(tx, node);
        if (parent.NrItems == 0)
        {
            if (parent.Level == Root.Level)
            {
                // The tree became empty: an empty leaf is the canonical empty tree (allocated
                // before the old root is freed, so a failed allocation leaves the tree whole).
                var empty = tx.AllocNode(Id, 0);
                FreeTreeNode(tx, parent);
                Root = empty;
                RootChanged = true;
                return;
            }
            RemoveChild(tx, path, level + 1);
            return;
        }
        if (ps == 0) FixupLowKeys(path, level + 1, parent.KeyAt(0));
        AfterShrink(tx, path, level + 1);
    }

    /// <summary>After the internal node at <paramref name="level"/> lost a pointer: collapse a
    /// one-child root, or merge an underfull node.</summary>
    private void AfterShrink(ITreeContext tx, TreePath path, int level)
    {
        var node = path.Nodes[level]!;
        if (node.Level == Root.Level)
        {
            CollapseRoot(tx);
            return;
        }
        if (node.NrItems < node.MaxPtrs / 4) TryMerge(tx, path, level);
    }

    private void CollapseRoot(ITreeContext tx)
    {
        while (Root.Level > 0 && Root.NrItems == 1)
        {
            var child = CowChild(tx, Root, 0);
            FreeTreeNode(tx, Root);
            Root = child;
            RootChanged = true;
        }
    }

    private void TryMerge(ITreeContext tx, TreePath path, int level)
    {
        var node = path.Nodes[level]!;
        var parent = path.Nodes[level + 1]!;
        int ps = path.Slots[level + 1];
        if (ps + 1 < parent.NrItems)
        {
            var right = CowChild(tx, parent, ps + 1);
            if (Fits(node, right))
            {
                MergeInto(node, right);
                parent.DeletePtrs(ps + 1, 1);
                FreeTreeNode(tx, right);
                AfterShrink(tx, path, level + 1);
                return;
            }
        }
        if (ps > 0)
        {
            var left = CowChild(tx, parent, ps - 1);
            if (Fits(left, node))
            {
                MergeInto(left, node);
                parent.DeletePtrs(ps, 1);
                FreeTreeNode(tx, node);
                AfterShrink(tx, path, level + 1);
            }
        }
    }

    private bool Fits(TreeNode a, TreeNode b) => a.IsLeaf
        ? a.LeafUsed + b.LeafUsed <= LeafCapacity
        : a.NrItems + b.NrItems <= a.MaxPtrs;

    private static void MergeInto(TreeNode dst, TreeNode src)
    {
        if (dst.IsLeaf) dst.AppendItemsFrom(src, 0, src.NrItems);
        else src.MovePtrsTo(dst, 0);
    }

    private void FreeTreeNode(ITreeContext tx, TreeNode node) => tx.FreeNode(node, Id);
}

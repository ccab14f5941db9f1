using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>
/// The items of a tree in key order from a key on, stepping over every subtree that no
/// transaction since a given generation has written (btrfs's btrfs_search_forward with
/// min_trans, what its tree-search ioctl and `subvolume find-new` use). Copy-on-write gives
/// every node the generation of the transaction that wrote it, and every parent pointer that
/// generation too; an item written in transaction g sits in a leaf written in g or later, so a
/// pointer older than g leads to nothing written since g and is not read. The cost is the
/// nodes on the paths to what changed, not the size of the tree.
///
/// The caller holds the tree's read lock for one call; a long walk is done in calls of a
/// bounded number of items, each resuming from the key the last one returned, so writers wait
/// for one batch at a time, never for the whole walk.
/// </summary>
internal static class GenerationSearch
{
    /// <summary>Calls <paramref name="item"/> for every item with key ≥ <paramref name="from"/>
    /// in a leaf whose pointer generation is ≥ <paramref name="minGeneration"/>, in key order
    /// (items of older generations in such a leaf come too: the leaf is read whole; the caller
    /// filters by what the item says). Stops at the end of the first leaf after which at least
    /// <paramref name="maxItems"/> were given, returning the key to resume from; null when the
    /// tree is done. <paramref name="nodesRead"/> grows by the nodes read.</summary>
    public static Key? Run(BTree tree, Key from, ulong minGeneration, int maxItems, ItemVisitor item, ref long nodesRead)
    {
        int given = 0;
        Key? resume = null;
        var root = tree.Root;
        nodesRead++;
        // Copy-on-write rewrites every node on the path to what it changes, so no pointer is
        // newer than the node holding it: a root older than minGeneration has nothing newer
        // below it. (A leaf root is weighed by its generation in Visit, as any leaf.)
        if (root.NrItems == 0 || (root.Level > 0 && root.Generation < minGeneration)) return null;
        Visit(tree, root, from, minGeneration, maxItems, item, ref given, ref resume, ref nodesRead);
        return resume;
    }

    public delegate void ItemVisitor(Key key, ReadOnlySpan<byte> data);

    /// <summary>False once the budget is spent (<paramref name="resume"/> set, or null when
    /// nothing can follow).</summary>
    private static bool Visit(BTree tree, TreeNode node, Key from, ulong minGeneration, int maxItems, ItemVisitor item,
        ref int given, ref Key? resume, ref long nodesRead)
    {
        bool found = node.Search(from, out int slot);
        if (node.IsLeaf)
        {
            if (node.Generation < minGeneration) return true;
            for (int i = slot; i < node.NrItems; i++)
            {
                item(node.KeyAt(i), node.ItemDataRO(i));
                given++;
            }
            if (given < maxItems) return true;
            // Budget spent: resume after this leaf's last key (none can follow Key.Max).
            var last = node.KeyAt(node.NrItems - 1);
            resume = last == Key.Max ? null : last.Next();
            return false;
        }
        // The child whose range holds `from`: the last pointer whose key is ≤ it.
        if (!found && slot > 0) slot--;
        for (int i = slot; i < node.NrItems; i++)
        {
            if (node.ChildGenAt(i) < minGeneration) continue;
            var child = tree.ReadChild(node, i);
            nodesRead++;
            if (!Visit(tree, child, from, minGeneration, maxItems, item, ref given, ref resume, ref nodesRead)) return false;
        }
        return true;
    }
}

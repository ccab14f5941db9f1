using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Check;

/// <summary>
/// Visits every node of a tree independently of the B-tree code, checking what a parent
/// promises about each child (address, generation, level, key range). A bad subtree is
/// reported and skipped; the walk goes on with its siblings. Blocks shared between trees
/// (snapshots) are walked again for each tree that reaches them, so that each tree's namespace
/// is whole, and counted as one more reference.
/// </summary>
internal sealed class TreeWalker(NodeStore store, FsckReport report, ulong superGeneration)
{
    public delegate void ItemVisitor(Key key, ReadOnlySpan<byte> data);

    /// <summary>A tree block as the walk found it: the first tree that reached it, its level,
    /// the owner in its header, and how many parents (roots or internal nodes) point at it.</summary>
    public sealed class BlockInfo(ulong tree, int level, ulong owner)
    {
        public ulong Tree { get; } = tree;
        public int Level { get; } = level;
        public ulong Owner { get; set; } = owner;
        public long Refs { get; set; } = 1;
        /// <summary>The trees that reach it (for reports).</summary>
        public List<ulong> Trees { get; } = [tree];
    }

    /// <summary>Every tree block seen.</summary>
    public Dictionary<ulong, BlockInfo> Blocks { get; } = new();
    private readonly HashSet<ulong> _inThisTree = new();

    /// <summary>While items are visited: the header owner of their leaf (the tree its data
    /// back-references name), and whether this is the first walk to reach the leaf (its data
    /// references are counted once, however many trees share it).</summary>
    public ulong LeafOwner { get; private set; }
    public bool FirstVisit { get; private set; }

    public void Walk(ulong treeId, ulong bytenr, ulong gen, int level, ItemVisitor visit)
    {
        _inThisTree.Clear();
        WalkNode(treeId, bytenr, gen, level, null, null, visit, newParent: true);
    }

    private static bool IsFsTree(ulong id) => id == TreeIds.FsTree || (id >= TreeIds.FirstSubvolume && id < TreeIds.OrphanObjectId);

    /// <param name="newParent">Whether the pointer followed here belongs to a parent seen for the
    /// first time (or is a root): a shared parent walked again for another tree's namespace
    /// points at the same children, which count it once.</param>
    private void WalkNode(ulong treeId, ulong bytenr, ulong gen, int level, Key? low, Key? high, ItemVisitor visit, bool newParent)
    {
        string where = $"tree {treeId} block {bytenr}";
        if (!_inThisTree.Add(bytenr))
        {
            report.Add(FindingKind.Structure, where, "block referenced twice within one tree");
            return;
        }
        bool firstVisit = !Blocks.TryGetValue(bytenr, out var seen);
        if (!firstVisit)
        {
            if (newParent) seen!.Refs++;
            if (!seen!.Trees.Contains(treeId)) seen.Trees.Add(treeId);
            // Only subvolume trees share blocks (snapshots).
            if (!IsFsTree(treeId) || !IsFsTree(seen.Tree))
            {
                report.Add(FindingKind.Structure, where, $"block also referenced from tree {seen.Tree}");
                return;
            }
            if (seen.Level != level) { report.Add(FindingKind.Structure, where, $"shared block reached as level {level} and {seen.Level}"); return; }
        }
        else Blocks[bytenr] = seen = new BlockInfo(treeId, level, 0);
        TreeNode node;
        try { node = store.Read(bytenr, gen, level); }
        catch (FsException ex)
        {
            report.Add(FindingKind.Structure, where, ex.Message);
            return;
        }
        if (firstVisit)
        {
            report.TreeBlocks++;
            seen.Owner = node.Owner;
            if (node.Generation > superGeneration) report.Add(FindingKind.Structure, where, $"generation {node.Generation} is newer than the superblock's {superGeneration}");
            // A block of a subvolume may have been written by the snapshot source that shares it.
            if (node.Owner != treeId && !(IsFsTree(treeId) && IsFsTree(node.Owner)))
                report.Add(FindingKind.Structure, where, $"owner {node.Owner}, expected {treeId}");
        }
        int n = node.NrItems;
        if (n > 0)
        {
            var first = node.KeyAt(0);
            var last = node.KeyAt(n - 1);
            if (low is { } lo && first != lo) report.Add(FindingKind.Structure, where, $"first key {first} differs from the parent's {lo}");
            if (high is { } hi && last >= hi) report.Add(FindingKind.Structure, where, $"last key {last} is not below the next sibling's {hi}");
        }
        else if (level > 0 || low != null) report.Add(FindingKind.Structure, where, "empty non-root node");
        if (level == 0)
        {
            LeafOwner = node.Owner;
            FirstVisit = firstVisit;
            for (int i = 0; i < n; i++)
            {
                if (firstVisit) report.Items++;
                visit(node.KeyAt(i), node.ItemDataRO(i));
            }
            return;
        }
        for (int i = 0; i < n; i++)
        {
            Key? next = i + 1 < n ? node.KeyAt(i + 1) : high;
            WalkNode(treeId, node.ChildAt(i), node.ChildGenAt(i), level - 1, node.KeyAt(i), next, visit, newParent: firstVisit);
        }
    }
}

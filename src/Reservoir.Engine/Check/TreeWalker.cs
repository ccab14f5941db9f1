using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Check;

/// <summary>
/// Visits every node of a tree independently of the B-tree code, checking what a parent
/// promises about each child (address, generation, level, key range). A bad subtree is
/// reported and skipped; the walk goes on with its siblings.
/// </summary>
internal sealed class TreeWalker(NodeStore store, FsckReport report, ulong superGeneration)
{
    public delegate void ItemVisitor(Key key, ReadOnlySpan<byte> data);

    /// <summary>Every tree block seen, with the tree that reached it.</summary>
    public Dictionary<ulong, (ulong Tree, int Level)> Blocks { get; } = new();

    public void Walk(ulong treeId, ulong bytenr, ulong gen, int level, ItemVisitor visit)
    {
        WalkNode(treeId, bytenr, gen, level, null, null, visit);
    }

    private void WalkNode(ulong treeId, ulong bytenr, ulong gen, int level, Key? low, Key? high, ItemVisitor visit)
    {
        string where = $"tree {treeId} block {bytenr}";
        if (Blocks.TryGetValue(bytenr, out var seen))
        {
            report.Add(FindingKind.Structure, where, $"block also referenced from tree {seen.Tree} (shared or looping)");
            return;
        }
        Blocks[bytenr] = (treeId, level);
        TreeNode node;
        try { node = store.Read(bytenr, gen, level); }
        catch (FsException ex)
        {
            report.Add(FindingKind.Structure, where, ex.Message);
            return;
        }
        report.TreeBlocks++;
        if (node.Generation > superGeneration) report.Add(FindingKind.Structure, where, $"generation {node.Generation} is newer than the superblock's {superGeneration}");
        if (node.Owner != treeId) report.Add(FindingKind.Structure, where, $"owner {node.Owner}, expected {treeId}");
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
            for (int i = 0; i < n; i++)
            {
                report.Items++;
                visit(node.KeyAt(i), node.ItemDataRO(i));
            }
            return;
        }
        for (int i = 0; i < n; i++)
        {
            Key? next = i + 1 < n ? node.KeyAt(i + 1) : high;
            WalkNode(treeId, node.ChildAt(i), node.ChildGenAt(i), level - 1, node.KeyAt(i), next, visit);
        }
    }
}

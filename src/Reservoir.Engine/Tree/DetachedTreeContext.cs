namespace Reservoir.Engine.Tree;

/// <summary>
/// A tree context outside any transaction, for exercising and measuring one B+tree alone (the
/// tree tests and the benchmark): nodes live only in the node store's cache, freed addresses
/// are reused, and the tree is never snapshotted, so every block has exactly one parent.
/// </summary>
internal sealed class DetachedTreeContext(NodeStore store, int nodeSize) : ITreeContext
{
    private ulong _next = 1UL << 20;
    private readonly Stack<ulong> _free = new();
    /// <summary>Nodes allocated and not freed (the tree's size, for leak checks).</summary>
    public int Live { get; private set; }
    public ulong Transid => 1;

    public TreeNode AllocNode(ulong owner, int level)
    {
        ulong b = _free.Count > 0 ? _free.Pop() : (_next += (ulong)nodeSize);
        var n = TreeNode.CreateEmpty(nodeSize, store.Fsid, b, 1, owner, level);
        n.Dirty = true;
        store.Add(n);
        Live++;
        return n;
    }

    public void NoteChange() { }

    public void FreeNode(TreeNode node, ulong owner)
    {
        store.Remove(node.Bytenr);
        _free.Push(node.Bytenr);
        Live--;
    }

    public ulong TreeBlockRefs(TreeNode node) => 1;
    public void ReplaceNode(TreeNode old, TreeNode copy, ulong owner, bool mayBeShared) => FreeNode(old, owner);
    public bool DropIfShared(TreeNode node) => false;
    public void DropLeaf(TreeNode leaf, ulong owner) { }
}

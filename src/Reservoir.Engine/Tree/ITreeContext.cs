namespace Reservoir.Engine.Tree;

/// <summary>
/// What the B+tree needs from the transaction layer above it: the running transaction id, and
/// allocation and release of tree blocks (which the transaction turns into extent-tree
/// references and space accounting at commit). Defined here so the tree does not depend upward.
/// </summary>
internal interface ITreeContext
{
    ulong Transid { get; }
    /// <summary>A new, zeroed, dirty node owned by <paramref name="owner"/> at
    /// <paramref name="level"/>, already registered in the node store.</summary>
    TreeNode AllocNode(ulong owner, int level);
    /// <summary>The node is no longer referenced by its tree in this transaction.</summary>
    void FreeNode(TreeNode node, ulong owner);
    /// <summary>A tree is about to change under this context (every copy-on-write search).</summary>
    void NoteChange();
    /// <summary>How many parents (tree roots or internal nodes) point at this block now: its
    /// committed reference count plus the changes of the running transaction.</summary>
    ulong TreeBlockRefs(TreeNode node);
    /// <summary><paramref name="copy"/> replaces <paramref name="old"/> in tree
    /// <paramref name="owner"/> (copy-on-write). If <paramref name="old"/> is shared with other
    /// trees it stays for them and the copy's children gain a reference; otherwise it is freed
    /// and the copy inherits its references. <paramref name="mayBeShared"/> false skips the
    /// reference lookup (the block was written after the tree's last snapshot).</summary>
    void ReplaceNode(TreeNode old, TreeNode copy, ulong owner, bool mayBeShared);
    /// <summary>For a tree being dropped: if the block is shared, drop this tree's reference
    /// and return true (the subtree stays for the others); false if this tree is its only
    /// referrer (the caller frees it and what only it references).</summary>
    bool DropIfShared(TreeNode node);
    /// <summary>For a tree being dropped: a leaf only it referenced goes; the data extents its
    /// file extent items name lose those references.</summary>
    void DropLeaf(TreeNode leaf, ulong owner);
}

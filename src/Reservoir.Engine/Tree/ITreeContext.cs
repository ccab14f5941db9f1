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
}

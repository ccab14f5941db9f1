namespace Reservoir.Engine.Tree;

internal sealed partial class BTree
{
    /// <summary>
    /// Drops a deleted tree from its left end, at most <paramref name="budget"/> blocks per
    /// call (one transaction), the way btrfs's drop_snapshot walks down: a block other trees
    /// still share loses this tree's reference and is not entered, so a snapshot that was
    /// never changed goes in O(1) and any tree costs what it owns alone; a block only this tree
    /// references is entered and freed. Between calls the tree stays a valid tree (keys fixed
    /// up, no empty nodes), so a crash or an unmount resumes from what is on disk. Returns true
    /// once the tree is an empty leaf.
    /// </summary>
    public bool DropFromLeft(ITreeContext tx, int budget)
    {
        tx.NoteChange();
        if (Root.IsLeaf && Root.NrItems == 0) return true;
        if (MayBeShared(Root))
        {
            // The empty root first: once the reference is dropped nothing may fail.
            var empty = tx.AllocNode(Id, 0);
            if (tx.DropIfShared(Root))
            {
                Root = empty;
                RootChanged = true;
                return true;
            }
            tx.FreeNode(empty, Id);
        }
        var node = CowRoot(tx); // only this tree references it now
        if (node.IsLeaf)
        {
            tx.DropLeaf(node, node.Owner);
            node.ClearItems();
            return true;
        }
        // Every node on the stack is this tree's own, dirty, and child 0 of the one below it.
        var stack = new List<TreeNode> { node };
        while (budget > 0)
        {
            var parent = stack[^1];
            var child = ReadChild(parent, 0);
            if (!(MayBeShared(child) && tx.DropIfShared(child)))
            {
                if (!child.IsLeaf)
                {
                    stack.Add(CowChild(tx, parent, 0));
                    continue;
                }
                tx.DropLeaf(child, child.Owner);
                tx.FreeNode(child, Id);
            }
            budget--;
            while (true)
            {
                var p = stack[^1];
                p.DeletePtrs(0, 1);
                if (p.NrItems > 0)
                {
                    for (int j = stack.Count - 2; j >= 0; j--) stack[j].SetKey(0, stack[j + 1].KeyAt(0));
                    break;
                }
                stack.RemoveAt(stack.Count - 1);
                if (stack.Count == 0)
                {
                    var empty = tx.AllocNode(Id, 0); // before the old root goes
                    tx.FreeNode(p, Id);
                    Root = empty;
                    RootChanged = true;
                    return true;
                }
                tx.FreeNode(p, Id);
            }
        }
        return false;
    }
}

namespace Reservoir.Engine.Tree;

/// <summary>
/// The trees whose root moved in the running transaction, so that the commit rewrites the
/// ROOT_ITEMs of those alone instead of asking every tree: with 10,000 snapshots loaded, asking
/// each one in every round of the commit's fold made each commit's cost grow with the number
/// of snapshots. A tree adds itself when its <see cref="BTree.RootChanged"/> is set.
/// </summary>
internal sealed class MovedRoots
{
    // Guards _trees. A leaf lock: taken under a tree's write lock and taking nothing, never
    // held across a scheduling point (so a plain monitor keeps the deterministic scheduler's
    // schedules unchanged).
    private readonly object _lock = new();
    private readonly HashSet<BTree> _trees = new();

    public void Add(BTree tree) { lock (_lock) _trees.Add(tree); }

    /// <summary>Every tree noted since the last call, in tree id order (the commit's root
    /// tree updates then run in the same order every time).</summary>
    public List<BTree> Take()
    {
        lock (_lock)
        {
            var list = _trees.OrderBy(t => t.Id).ToList();
            _trees.Clear();
            return list;
        }
    }
}

using Reservoir.Common.Concurrency;
using Reservoir.Engine.Alloc;
using Reservoir.Engine.Tree;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The running transaction: every node made dirty since the last commit, and the reference
/// changes to apply to the extent tree when it commits. Operations join it through
/// <see cref="TransHandle"/>s; one commit ends it.
/// </summary>
internal sealed class Transaction
{
    private readonly FsMutex _lock; // guards _dirty
    private readonly Dictionary<ulong, TreeNode> _dirty = new();
    public ulong Transid { get; }
    public DelayedRefs Refs { get; }
    /// <summary>Subvolumes that started or stopped referencing a data extent in this
    /// transaction; the commit turns them into qgroup numbers.</summary>
    public Quota.OwnerTransitions OwnerTransitions { get; }
    public long StartedMs { get; }

    public Transaction(IScheduler sched, ulong transid)
    {
        Transid = transid;
        _lock = sched.CreateMutex("transaction-dirty");
        Refs = new DelayedRefs(sched);
        OwnerTransitions = new Quota.OwnerTransitions(sched);
        StartedMs = sched.NowMs;
    }

    private readonly List<(ulong Tree, ulong Bytes)> _qgroupRecords = new(); // guarded by _lock

    /// <summary>A finished ordered extent hands over the qgroup reservation it carried; the
    /// commit that accounts its extent frees it (btrfs's qgroup extent record data_rsv).</summary>
    public void AddQgroupRecord(ulong tree, ulong bytes)
    {
        if (bytes == 0) return;
        using var _ = _lock.Lock();
        _qgroupRecords.Add((tree, bytes));
    }

    public List<(ulong Tree, ulong Bytes)> TakeQgroupRecords()
    {
        using var _ = _lock.Lock();
        var l = _qgroupRecords.ToList();
        _qgroupRecords.Clear();
        return l;
    }

    public ulong PendingQgroupRecordBytes
    {
        get { using var _ = _lock.Lock(); return _qgroupRecords.Aggregate(0UL, (a, r) => a + r.Bytes); }
    }

    public void AddDirty(TreeNode n)
    {
        using var _ = _lock.Lock();
        _dirty[n.Bytenr] = n;
    }

    public void RemoveDirty(TreeNode n)
    {
        using var _ = _lock.Lock();
        _dirty.Remove(n.Bytenr);
    }

    public int DirtyCount { get { using var _ = _lock.Lock(); return _dirty.Count; } }

    public List<TreeNode> TakeDirty()
    {
        using var _ = _lock.Lock();
        var l = _dirty.Values.OrderBy(n => n.Bytenr).ToList();
        _dirty.Clear();
        return l;
    }
}

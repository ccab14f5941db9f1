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
    /// <summary>Data extents the commit's quota accounting found without SHARED_ROOT_REFs: the
    /// delayed refs that free one of them need not look for any. Written and read only by the
    /// commit (accounting first, then the delayed refs), so no lock. The previous
    /// transaction's set, emptied, when it had one (its buckets kept: a new one per commit
    /// was a few microseconds of the accounting).</summary>
    public HashSet<ulong> WithoutSharedRootRefs { get; }

    /// <param name="early">Whether the ledger queues its entries for the early accounting
    /// (quotas on and the mount option on), and how it wakes the worker.</param>
    public Transaction(IScheduler sched, ulong transid, HashSet<ulong>? reuse = null, (bool On, Action? Wake) early = default)
    {
        Transid = transid;
        reuse?.Clear();
        WithoutSharedRootRefs = reuse ?? new();
        _lock = sched.CreateMutex("transaction-dirty");
        Refs = new DelayedRefs(sched);
        OwnerTransitions = new Quota.OwnerTransitions(sched) { EarlyEnabled = early.On, Wake = early.Wake };
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

    // ------------------------------------------------------------ what fsync may log (§9)
    // Both guarded by _lock.
    private readonly Dictionary<(ulong Tree, ulong Ino), List<(ulong Start, ulong End)>> _logSpans = new();
    private readonly HashSet<(ulong Tree, ulong Ino)> _logBlocked = new();

    /// <summary>An ordered extent replaced the file extent items of [start, end) in this
    /// transaction: the inode's next log record carries that span.</summary>
    public void AddLogSpan(ulong tree, ulong ino, ulong start, ulong end)
    {
        using var _ = _lock.Lock();
        if (!_logSpans.TryGetValue((tree, ino), out var l)) _logSpans[(tree, ino)] = l = new();
        l.Add((start, end));
    }

    /// <summary>The inode changed in this transaction in a way a log record does not carry
    /// (a name, an xattr, a truncate, fallocate, a clone): its fsync commits instead. Called
    /// under the inode's write lock, after the change, so an fsync (which reads the inode
    /// under its read lock) never logs a half-made change.</summary>
    public void BlockLog(ulong tree, ulong ino)
    {
        using var _ = _lock.Lock();
        _logBlocked.Add((tree, ino));
    }

    public bool IsLogBlocked(ulong tree, ulong ino)
    {
        using var _ = _lock.Lock();
        return _logBlocked.Contains((tree, ino));
    }

    /// <summary>The spans not yet logged, sorted and merged; forgotten here (the record that
    /// takes them is durable before any later fsync of the inode can return, both being
    /// serialised by the commit mutex).</summary>
    public List<(ulong Start, ulong End)> TakeLogSpans(ulong tree, ulong ino)
    {
        using var _ = _lock.Lock();
        if (!_logSpans.Remove((tree, ino), out var l)) return new();
        l.Sort();
        var merged = new List<(ulong Start, ulong End)>();
        foreach (var (a, b) in l)
        {
            if (merged.Count > 0 && a <= merged[^1].End) merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, b));
            else merged.Add((a, b));
        }
        return merged;
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

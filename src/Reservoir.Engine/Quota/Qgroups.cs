using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>One quota group's numbers. Guarded by <see cref="Qgroups"/>' lock.</summary>
internal sealed class Qgroup(ulong id)
{
    public ulong Id { get; } = id;
    /// <summary>Bytes of data extents charged to this group, as of the last commit.</summary>
    public ulong Referenced, Exclusive;
    public ulong MaxReferenced = ulong.MaxValue, MaxExclusive = ulong.MaxValue;
    /// <summary>Data bytes reserved for writes not yet accounted (btrfs's rsv.values[DATA]).</summary>
    public ulong RsvData;
    public bool Dirty;
    public long Underflows;
}

/// <summary>
/// Quota groups: limits checked at reservation time, all or nothing, and usage kept exact at
/// commit. Ownership of reserved bytes (design notes, invariant 3) moves only through this
/// class: <see cref="Reserve"/> (a write promises bytes), <see cref="Free"/> (bytes that will
/// never be written: invalidated, failed, in-place), and records handed to the transaction by
/// finished ordered extents, released by the commit that accounts their extents.
/// Today every subvolume has a level-0 group only; higher levels arrive with subvolumes.
/// </summary>
internal sealed class Qgroups
{
    private readonly FsMutex _lock; // guards every Qgroup and _enabled
    private readonly Dictionary<ulong, Qgroup> _groups = new();
    public bool Enabled { get; private set; }

    public Qgroups(IScheduler sched) => _lock = sched.CreateMutex("qgroups");

    public static ulong ForSubvolume(ulong treeId) => QgroupId.Of(0, treeId);

    public void Load(bool enabled, IEnumerable<Qgroup> groups)
    {
        using var _ = _lock.Lock();
        Enabled = enabled;
        _groups.Clear();
        foreach (var g in groups) _groups[g.Id] = g;
    }

    public Qgroup GetOrCreate(ulong id)
    {
        using var _ = _lock.Lock();
        if (!_groups.TryGetValue(id, out var g)) _groups[id] = g = new Qgroup(id) { Dirty = true };
        return g;
    }

    public void Enable(IEnumerable<(ulong Id, ulong Bytes)> usage)
    {
        using var _ = _lock.Lock();
        Enabled = true;
        foreach (var (id, bytes) in usage)
        {
            if (!_groups.TryGetValue(id, out var g)) _groups[id] = g = new Qgroup(id);
            g.Referenced = g.Exclusive = bytes;
            g.Dirty = true;
        }
    }

    public void SetLimit(ulong id, ulong maxReferenced, ulong maxExclusive)
    {
        using var _ = _lock.Lock();
        if (!_groups.TryGetValue(id, out var g)) _groups[id] = g = new Qgroup(id);
        g.MaxReferenced = maxReferenced;
        g.MaxExclusive = maxExclusive;
        g.Dirty = true;
    }

    /// <summary>Reserves data bytes for a subvolume's group; EDQUOT if referenced or exclusive
    /// usage plus reservations plus the request would pass a limit (rsv + usage + request ≤ max,
    /// invariant 10).</summary>
    public Errno Reserve(ulong treeId, ulong bytes)
    {
        if (bytes == 0) return Errno.OK;
        using var _ = _lock.Lock();
        if (!Enabled) return Errno.OK;
        var g = GroupUnsynchronized(treeId);
        if (g.RsvData + g.Referenced + bytes > g.MaxReferenced || g.RsvData + g.Exclusive + bytes > g.MaxExclusive) return Errno.EDQUOT;
        g.RsvData += bytes;
        return Errno.OK;
    }

    /// <summary>Gives reserved bytes back (they will never be accounted).</summary>
    public void Free(ulong treeId, ulong bytes)
    {
        if (bytes == 0) return;
        using var _ = _lock.Lock();
        if (!Enabled) return;
        var g = GroupUnsynchronized(treeId);
        if (bytes > g.RsvData) { g.Underflows++; g.RsvData = 0; }
        else g.RsvData -= bytes;
    }

    /// <summary>At commit: a data extent charged to <paramref name="ownerTree"/> appeared
    /// (+bytes) or went away (−bytes).</summary>
    public void Account(ulong ownerTree, long delta)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return;
        var g = GroupUnsynchronized(ownerTree);
        g.Referenced = (ulong)Math.Max(0, (long)g.Referenced + delta);
        g.Exclusive = (ulong)Math.Max(0, (long)g.Exclusive + delta);
        g.Dirty = true;
    }

    private Qgroup GroupUnsynchronized(ulong treeId)
    {
        ulong id = ForSubvolume(treeId);
        if (!_groups.TryGetValue(id, out var g)) _groups[id] = g = new Qgroup(id) { Dirty = true };
        return g;
    }

    public List<Qgroup> TakeDirty()
    {
        using var _ = _lock.Lock();
        var l = _groups.Values.Where(g => g.Dirty).ToList();
        foreach (var g in l) g.Dirty = false;
        return l;
    }

    private readonly List<ulong> _removed = new(); // guarded by _lock

    /// <summary>Forgets a subvolume's level-0 group once its tree and every extent charged to it
    /// are gone (so no stale group is left behind, unlike btrfs). Its items go at the next commit.
    /// Refuses (false) while the group still has usage or reservations.</summary>
    public bool RemoveForSubvolume(ulong treeId)
    {
        using var _ = _lock.Lock();
        ulong id = ForSubvolume(treeId);
        if (!_groups.TryGetValue(id, out var g)) return true;
        if (g.Referenced != 0 || g.Exclusive != 0 || g.RsvData != 0) return false;
        _groups.Remove(id);
        _removed.Add(id);
        return true;
    }

    public List<ulong> TakeRemoved()
    {
        using var _ = _lock.Lock();
        var l = _removed.ToList();
        _removed.Clear();
        return l;
    }

    public List<(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive, ulong RsvData)> Snapshot()
    {
        using var _ = _lock.Lock();
        return _groups.Values.OrderBy(g => g.Id).Select(g => (g.Id, g.Referenced, g.Exclusive, g.MaxReferenced, g.MaxExclusive, g.RsvData)).ToList();
    }

    public ulong TotalRsv { get { using var _ = _lock.Lock(); return _groups.Values.Aggregate(0UL, (a, g) => a + g.RsvData); } }
    public long Underflows { get { using var _ = _lock.Lock(); return _groups.Values.Sum(g => g.Underflows); } }
}

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
/// Every subvolume has a level-0 group; groups of higher levels contain groups of lower ones
/// (btrfs's qgroup relations, a DAG ordered by level). A write reserves against its subvolume's
/// group and every distinct ancestor, all or nothing, and a commit accounts to all of them.
/// While no extent is shared between subvolumes (quotas and snapshots exclude each other for
/// now), a higher group's referenced and exclusive are the sums over its distinct level-0
/// descendants, which assign and remove recompute.
/// </summary>
internal sealed class Qgroups
{
    private readonly FsMutex _lock; // guards every Qgroup and _enabled
    private readonly Dictionary<ulong, Qgroup> _groups = new();
    private readonly Dictionary<ulong, HashSet<ulong>> _parents = new(), _children = new(); // guarded by _lock
    private readonly List<(ulong Child, ulong Parent, bool Added)> _relationChanges = new(); // guarded by _lock
    public bool Enabled { get; private set; }

    public Qgroups(IScheduler sched) => _lock = sched.CreateMutex("qgroups");

    public static ulong ForSubvolume(ulong treeId) => QgroupId.Of(0, treeId);

    public void Load(bool enabled, IEnumerable<Qgroup> groups, IEnumerable<(ulong Child, ulong Parent)> relations)
    {
        using var _ = _lock.Lock();
        Enabled = enabled;
        _groups.Clear();
        _parents.Clear();
        _children.Clear();
        foreach (var g in groups) _groups[g.Id] = g;
        foreach (var (c, p) in relations) Link(c, p);
    }

    private void Link(ulong child, ulong parent)
    {
        (_parents.TryGetValue(child, out var ps) ? ps : _parents[child] = new()).Add(parent);
        (_children.TryGetValue(parent, out var cs) ? cs : _children[parent] = new()).Add(child);
    }

    private void Unlink(ulong child, ulong parent)
    {
        if (_parents.TryGetValue(child, out var ps)) { ps.Remove(parent); if (ps.Count == 0) _parents.Remove(child); }
        if (_children.TryGetValue(parent, out var cs)) { cs.Remove(child); if (cs.Count == 0) _children.Remove(parent); }
    }

    /// <summary>A group and each of its distinct ancestors, once. Caller holds the lock.</summary>
    private List<Qgroup> ChainUnsynchronized(ulong treeId)
    {
        var g = GroupUnsynchronized(treeId);
        var chain = new List<Qgroup> { g };
        if (_parents.Count == 0) return chain;
        var seen = new HashSet<ulong> { g.Id };
        for (int i = 0; i < chain.Count; i++)
            if (_parents.TryGetValue(chain[i].Id, out var ps))
                foreach (var p in ps)
                    if (seen.Add(p) && _groups.TryGetValue(p, out var pg)) chain.Add(pg);
        return chain;
    }

    /// <summary>Recomputes the numbers of <paramref name="id"/> and its ancestors from their
    /// level-0 descendants (after a relation changed). Caller holds the lock.</summary>
    private void RecomputeUpward(ulong id)
    {
        var todo = new Queue<ulong>([id]);
        var seen = new HashSet<ulong>();
        while (todo.Count > 0)
        {
            ulong x = todo.Dequeue();
            if (!seen.Add(x)) continue;
            if (QgroupId.Level(x) > 0 && _groups.TryGetValue(x, out var g))
            {
                ulong rfer = 0, rsv = 0;
                foreach (var l in QgroupId.Level0Below(x, c => _children.GetValueOrDefault(c)))
                    if (_groups.TryGetValue(l, out var lg)) { rfer += lg.Referenced; rsv += lg.RsvData; }
                g.Referenced = g.Exclusive = rfer;
                g.RsvData = rsv;
                g.Dirty = true;
            }
            if (_parents.TryGetValue(x, out var ps)) foreach (var p in ps) todo.Enqueue(p);
        }
    }

    /// <summary>Creates a group of level 1 or above (level-0 groups come and go with their
    /// subvolumes). EEXIST if it exists, EINVAL for level 0.</summary>
    public Errno Create(ulong id)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return Errno.ENOTCONN;
        if (QgroupId.Level(id) == 0) return Errno.EINVAL;
        if (_groups.ContainsKey(id)) return Errno.EEXIST;
        _groups[id] = new Qgroup(id) { Dirty = true };
        return Errno.OK;
    }

    /// <summary>Destroys a group of level 1 or above: EBUSY while it has members; its own
    /// memberships go with it.</summary>
    public Errno Destroy(ulong id)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return Errno.ENOTCONN;
        if (QgroupId.Level(id) == 0) return Errno.EINVAL;
        if (!_groups.ContainsKey(id)) return Errno.ENOENT;
        if (_children.ContainsKey(id)) return Errno.EBUSY;
        if (_parents.TryGetValue(id, out var ps))
            foreach (var p in ps.ToList()) { Unlink(id, p); _relationChanges.Add((id, p, false)); RecomputeUpward(p); }
        _groups.Remove(id);
        _removed.Add(id);
        return Errno.OK;
    }

    /// <summary>Makes <paramref name="child"/> a member of <paramref name="parent"/> (whose level
    /// must be higher): the parent and its ancestors count the child's bytes from now on.</summary>
    public Errno Assign(ulong child, ulong parent, bool add)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return Errno.ENOTCONN;
        if (QgroupId.Level(parent) <= QgroupId.Level(child)) return Errno.EINVAL;
        if (!_groups.ContainsKey(child) || !_groups.ContainsKey(parent)) return Errno.ENOENT;
        bool linked = _parents.TryGetValue(child, out var ps) && ps.Contains(parent);
        if (add == linked) return add ? Errno.EEXIST : Errno.ENOENT;
        if (add) Link(child, parent); else Unlink(child, parent);
        _relationChanges.Add((child, parent, add));
        RecomputeUpward(parent);
        return Errno.OK;
    }

    public bool Exists(ulong id) { using var _ = _lock.Lock(); return _groups.ContainsKey(id); }

    /// <summary>Every relation as (child, parent).</summary>
    public List<(ulong Child, ulong Parent)> Relations()
    {
        using var _ = _lock.Lock();
        return _parents.SelectMany(kv => kv.Value.Select(p => (kv.Key, p))).OrderBy(r => r.Key).ThenBy(r => r.p).ToList();
    }

    public List<(ulong Child, ulong Parent, bool Added)> TakeRelationChanges()
    {
        using var _ = _lock.Lock();
        var l = _relationChanges.ToList();
        _relationChanges.Clear();
        return l;
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
        var chain = ChainUnsynchronized(treeId);
        foreach (var g in chain)
            if (g.RsvData + g.Referenced + bytes > g.MaxReferenced || g.RsvData + g.Exclusive + bytes > g.MaxExclusive) return Errno.EDQUOT;
        foreach (var g in chain) g.RsvData += bytes;
        return Errno.OK;
    }

    /// <summary>Gives reserved bytes back (they will never be accounted).</summary>
    public void Free(ulong treeId, ulong bytes)
    {
        if (bytes == 0) return;
        using var _ = _lock.Lock();
        if (!Enabled) return;
        foreach (var g in ChainUnsynchronized(treeId))
        {
            if (bytes > g.RsvData) { g.Underflows++; g.RsvData = 0; }
            else g.RsvData -= bytes;
        }
    }

    /// <summary>At commit: a data extent charged to <paramref name="ownerTree"/> appeared
    /// (+bytes) or went away (−bytes); its group and every ancestor count it.</summary>
    public void Account(ulong ownerTree, long delta)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return;
        foreach (var g in ChainUnsynchronized(ownerTree))
        {
            g.Referenced = (ulong)Math.Max(0, (long)g.Referenced + delta);
            g.Exclusive = (ulong)Math.Max(0, (long)g.Exclusive + delta);
            g.Dirty = true;
        }
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
        if (_parents.TryGetValue(id, out var ps))
            foreach (var p in ps.ToList()) { Unlink(id, p); _relationChanges.Add((id, p, false)); }
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

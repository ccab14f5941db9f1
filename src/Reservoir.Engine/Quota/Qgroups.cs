using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>
/// Quota groups: limits checked at reservation time, all or nothing, and usage kept exact at
/// commit. Ownership of reserved bytes (design notes, invariant 3) moves only through this
/// class: <see cref="Reserve"/> (a write promises bytes), <see cref="Free"/> (bytes that will
/// never be written: invalidated, failed, in-place), and records handed to the transaction by
/// finished ordered extents, released by the commit that accounts their extents.
/// Every subvolume has a level-0 group; groups of higher levels contain groups of lower ones
/// (btrfs's qgroup relations, a DAG ordered by level). A write reserves against its subvolume's
/// group and every distinct ancestor, all or nothing, and a commit accounts to all of them.
/// Usage follows who references each extent (EXTENT_OWNER_REF transitions, accounted at
/// commit by <see cref="AccountExtent"/>); a snapshot inherits its source's numbers in O(1);
/// a changed relation is followed by a recount.
/// </summary>
internal sealed partial class Qgroups
{
    private readonly FsMutex _lock; // guards every Qgroup and _enabled
    private readonly Dictionary<ulong, Qgroup> _groups = new();
    public bool Enabled { get; private set; }
    /// <summary>Data bytes reserved per subvolume, kept whether quotas are on or off: the
    /// ledgers' qgroup bits, ordered extents and transaction records own exactly these, so
    /// when quotas are turned on or off while writes are in flight each level-0 group starts
    /// with the reservations its subvolume's writers hold, and a byte reserved under one
    /// setting and given back under the other is neither lost nor counted twice.</summary>
    private readonly Dictionary<ulong, ulong> _rsvBySubvol = new(); // guarded by _lock
    private long _rsvUnderflows; // guarded by _lock

    public Qgroups(IScheduler sched) => _lock = sched.CreateMutex("qgroups");

    public static ulong ForSubvolume(ulong treeId) => QgroupId.Of(0, treeId);

    public void Load(bool enabled, IEnumerable<Qgroup> groups, IEnumerable<(ulong Child, ulong Parent)> relations)
    {
        using var _ = _lock.Lock();
        Enabled = enabled;
        _groups.Clear();
        _dirty.Clear();
        _parents.Clear();
        _children.Clear();
        ForgetSetsUnsynchronized();
        foreach (var g in groups)
        {
            _groups[g.Id] = g;
            g.LimitDirty = false; // read from its items
        }
        // The one place groups arrive other than through AddGroupUnsynchronized.
        _higher.Clear();
        _higher.AddRange(_groups.Values.Where(g => QgroupId.Level(g.Id) > 0));
        foreach (var (c, p) in relations) Link(c, p);
        WarmSetsUnsynchronized();
    }

    private readonly List<Qgroup> _chain = new(); // ChainUnsynchronized's answer; guarded by _lock
    private readonly HashSet<ulong> _chainSeen = new(); // ChainUnsynchronized's walk; guarded by _lock

    /// <summary>A group and each of its distinct ancestors, once. Caller holds the lock.
    /// The list is reused by the next call (every write's reservation asks, so a list and a set
    /// per call were an allocation per write): use it before calling again.</summary>
    private List<Qgroup> ChainUnsynchronized(ulong treeId)
    {
        var g = GroupUnsynchronized(treeId);
        var chain = _chain;
        chain.Clear();
        chain.Add(g);
        if (_parents.Count == 0) return chain;
        var seen = _chainSeen;
        seen.Clear();
        seen.Add(g.Id);
        for (int i = 0; i < chain.Count; i++)
            if (_parents.TryGetValue(chain[i].Id, out var ps))
                foreach (var p in ps)
                    if (seen.Add(p) && _groups.TryGetValue(p, out var pg)) chain.Add(pg);
        return chain;
    }

    /// <summary>Creates a group of level 1 or above (level-0 groups come and go with their
    /// subvolumes). EEXIST if it exists, EINVAL for level 0.</summary>
    public Errno Create(ulong id)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return Errno.ENOTCONN;
        if (QgroupId.Level(id) == 0) return Errno.EINVAL;
        if (_groups.ContainsKey(id)) return Errno.EEXIST;
        AddGroupUnsynchronized(id);
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
            foreach (var p in ps.ToList()) { Unlink(id, p); _relationChanges.Add((id, p, false)); } // it had no members: nothing to subtract
        RemoveGroupUnsynchronized(id);
        return Errno.OK;
    }

    public bool Exists(ulong id) { using var _ = _lock.Lock(); return _groups.ContainsKey(id); }

    public Qgroup GetOrCreate(ulong id)
    {
        using var _ = _lock.Lock();
        if (!_groups.TryGetValue(id, out var g)) g = AddGroupUnsynchronized(id);
        return g;
    }

    /// <summary>Quotas on, with every group's numbers from a full recount.</summary>
    public void Enable(IReadOnlyDictionary<ulong, (ulong Referenced, ulong Exclusive)> numbers)
    {
        // One hold of the lock: no reservation sees quotas on without the numbers.
        using (_lock.Lock())
        {
            Enabled = true;
            SetRecountedUnsynchronized(numbers);
            // Writes in flight reserved while quotas were off: their subvolumes' groups hold
            // those bytes from now on, and give them back as the writes complete.
            foreach (var (tree, rsv) in _rsvBySubvol) GroupUnsynchronized(tree).RsvData = rsv;
            foreach (var g in HigherUnsynchronized()) RecomputeReservationsUpward(g.Id);
        }
    }

    /// <summary>Quotas off: every group, relation and limit is forgotten (the caller deletes
    /// their items); reservations stay counted per subvolume for a later enable.</summary>
    public void Disable()
    {
        using var _ = _lock.Lock();
        Enabled = false;
        _groups.Clear();
        _dirty.Clear();
        _parents.Clear();
        _children.Clear();
        ForgetSetsUnsynchronized();
        _higher.Clear();
        _removed.Clear();
        _relationChanges.Clear();
    }

    /// <summary>Sets a group's limits; null keeps that one as it is (btrfs's `qgroup limit` and
    /// `qgroup limit -e` each set one); <see cref="ulong.MaxValue"/> is none.</summary>
    public void SetLimit(ulong id, ulong? maxReferenced, ulong? maxExclusive)
    {
        using var _ = _lock.Lock();
        if (!_groups.TryGetValue(id, out var g)) g = AddGroupUnsynchronized(id);
        g.MaxReferenced = maxReferenced ?? g.MaxReferenced;
        g.MaxExclusive = maxExclusive ?? g.MaxExclusive;
        g.LimitDirty = true;
        MarkDirty(g);
    }

    /// <summary>Reserves data bytes for a subvolume's group; EDQUOT if referenced or exclusive
    /// usage plus reservations plus the request would pass a limit (rsv + usage + request ≤ max,
    /// invariant 10).</summary>
    public Errno Reserve(ulong treeId, ulong bytes)
    {
        if (bytes == 0) return Errno.OK;
        using var _ = _lock.Lock();
        if (Enabled)
        {
            var chain = ChainUnsynchronized(treeId);
            foreach (var g in chain)
                if (g.RsvData + g.Referenced + bytes > g.MaxReferenced || g.RsvData + g.Exclusive + bytes > g.MaxExclusive) return Errno.EDQUOT;
            foreach (var g in chain) g.RsvData += bytes;
        }
        _rsvBySubvol[treeId] = _rsvBySubvol.GetValueOrDefault(treeId) + bytes;
        return Errno.OK;
    }

    /// <summary>Gives reserved bytes back (they will never be accounted).</summary>
    public void Free(ulong treeId, ulong bytes)
    {
        if (bytes == 0) return;
        using var _ = _lock.Lock();
        ulong held = _rsvBySubvol.GetValueOrDefault(treeId);
        if (bytes > held) { _rsvUnderflows++; held = bytes; }
        if (held == bytes) _rsvBySubvol.Remove(treeId); else _rsvBySubvol[treeId] = held - bytes;
        if (!Enabled) return;
        foreach (var g in ChainUnsynchronized(treeId))
        {
            if (bytes > g.RsvData) { g.Underflows++; g.RsvData = 0; }
            else g.RsvData -= bytes;
        }
    }

    /// <summary>Whether any group of level 1 or above exists (then the commit needs every
    /// subvolume referencing a changed extent, not only the first few).</summary>
    public bool HasHigherGroups { get { using var _ = _lock.Lock(); return HigherUnsynchronized().Count > 0; } }

    /// <summary>The groups of level 1 and above, kept as groups come and go (so that asking
    /// costs nothing with 10,000 level-0 groups; working it out lazily by walking every group
    /// put that walk into the first commit after a mount). Guarded by _lock.</summary>
    private readonly List<Qgroup> _higher = new();

    /// <summary>Every group comes and goes through these two (and <see cref="Load"/>), which
    /// keep the list of higher groups and the items to delete right. Caller holds the lock.</summary>
    private Qgroup AddGroupUnsynchronized(ulong id)
    {
        var g = _groups[id] = new Qgroup(id);
        _memberships++;
        MarkDirty(g);
        // A new level-0 group is below no group yet.
        if (QgroupId.Level(id) == 0) foreach (var o in _outside.Values) o.Add(id);
        if (QgroupId.Level(id) > 0)
        {
            _higher.RemoveAll(x => x.Id == id);
            _higher.Add(g);
        }
        return g;
    }

    private void RemoveGroupUnsynchronized(ulong id)
    {
        _groups.Remove(id);
        _memberships++;
        if (QgroupId.Level(id) == 0) foreach (var o in _outside.Values) o.Remove(id);
        else ForgetSetsUnsynchronized();
        if (QgroupId.Level(id) > 0) _higher.RemoveAll(x => x.Id == id);
        _removed.Add(id);
    }

    /// <summary>The groups of level 1 or above (few; the level-0 ones may be thousands, one per
    /// snapshot, and must not be walked per extent). Caller holds the lock.</summary>
    private List<Qgroup> HigherUnsynchronized() => _higher;

    /// <summary>One commit's accounting (<see cref="QgroupDeltas"/>), under one lock: each
    /// group's sums, and what subvolumes wrote alone added to their groups and every group
    /// above them. A level-0 group comes into being if its subvolume has none yet; a higher
    /// group destroyed meanwhile is skipped (it cannot be: the commit holds the commit lock).</summary>
    public void Apply(QgroupDeltas deltas)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return;
        foreach (var (id, (r, e)) in deltas.ByGroup)
        {
            if (QgroupId.Level(id) == 0) Add(GroupUnsynchronized(QgroupId.Id(id)), r, e);
            else if (_groups.TryGetValue(id, out var g)) Add(g, r, e);
        }
        foreach (var (subvolume, bytes) in deltas.WrittenAlone)
            foreach (var g in ChainUnsynchronized(subvolume)) Add(g, (long)bytes, (long)bytes);
    }

    /// <summary>How many level-0 groups there are (one per subvolume).</summary>
    public int Level0Count { get { using var _ = _lock.Lock(); return Level0CountUnsynchronized; } }

    private int Level0CountUnsynchronized => _groups.Count - _higher.Count;

    private void Add(Qgroup g, long rfer, long excl)
    {
        if (rfer == 0 && excl == 0) return;
        long r = (long)g.Referenced + rfer, e = (long)g.Exclusive + excl;
        if (r < 0 || e < 0) g.Underflows++;
        g.Referenced = (ulong)Math.Max(0, r);
        g.Exclusive = (ulong)Math.Max(0, e);
        MarkDirty(g);
    }

    /// <summary>
    /// A snapshot of <paramref name="source"/> appeared: it references what the source does,
    /// so its group starts with the source's referenced, and everything the source held alone
    /// is now shared by the two (both exclusive are 0; docs/SNAPSHOTS.md §3). The snapshot
    /// joins the groups its source is a member of, which keeps every higher group's numbers
    /// as they were (a group that held the source's extents alone still does). O(1).
    /// </summary>
    public void InheritSnapshot(ulong source, ulong snapshot)
    {
        using var _ = _lock.Lock();
        if (!Enabled) return;
        var src = GroupUnsynchronized(source);
        var g = GroupUnsynchronized(snapshot);
        g.Referenced = src.Referenced;
        g.Exclusive = 0;
        src.Exclusive = 0;
        MarkDirty(src);
        MarkDirty(g);
        if (_parents.TryGetValue(src.Id, out var ps))
            foreach (var p in ps.ToList()) { Link(g.Id, p); _relationChanges.Add((g.Id, p, true)); }
    }

    /// <summary>Sets every group's numbers from a full recount (quota enable, a changed
    /// relation). Groups missing from <paramref name="numbers"/> count nothing.</summary>
    public void SetRecounted(IReadOnlyDictionary<ulong, (ulong Referenced, ulong Exclusive)> numbers)
    {
        using var _ = _lock.Lock();
        SetRecountedUnsynchronized(numbers);
    }

    private void SetRecountedUnsynchronized(IReadOnlyDictionary<ulong, (ulong Referenced, ulong Exclusive)> numbers)
    {
        foreach (var (id, (r, e)) in numbers)
            if (!_groups.ContainsKey(id) && QgroupId.Level(id) == 0) AddGroupUnsynchronized(id);
        foreach (var g in _groups.Values)
        {
            var (r, e) = numbers.GetValueOrDefault(g.Id);
            if (g.Referenced != r || g.Exclusive != e) MarkDirty(g);
            g.Referenced = r;
            g.Exclusive = e;
        }
        WarmSetsUnsynchronized();
    }

    private Qgroup GroupUnsynchronized(ulong treeId)
    {
        ulong id = ForSubvolume(treeId);
        if (!_groups.TryGetValue(id, out var g)) g = AddGroupUnsynchronized(id);
        return g;
    }

    /// <summary>Groups whose numbers or limits changed since the last commit took them, kept
    /// apart so a commit costs the same with 10,000 groups as with one. Guarded by _lock.</summary>
    private readonly HashSet<Qgroup> _dirty = new();

    private void MarkDirty(Qgroup g) => _dirty.Add(g);

    /// <summary>The groups to write: their numbers and, when they changed
    /// (<see cref="Qgroup.LimitDirty"/>, taken here), their limits, read under the lock.</summary>
    public List<(ulong Id, ulong Referenced, ulong Exclusive, (ulong MaxReferenced, ulong MaxExclusive)? Limits)> TakeDirty()
    {
        using var _ = _lock.Lock();
        // In id order, so the quota tree changes the same way every time; a group forgotten
        // since it changed has no item to write.
        var l = new List<(ulong, ulong, ulong, (ulong, ulong)?)>(_dirty.Count);
        foreach (var g in _dirty.Where(g => _groups.GetValueOrDefault(g.Id) == g).OrderBy(g => g.Id))
        {
            l.Add((g.Id, g.Referenced, g.Exclusive, g.LimitDirty ? (g.MaxReferenced, g.MaxExclusive) : null));
            g.LimitDirty = false;
        }
        _dirty.Clear();
        return l;
    }

    /// <summary>Marks every level-0 group's numbers to be written at the next commit (their
    /// items moved to the root tree, quota version 3).</summary>
    public void MarkLevel0Dirty()
    {
        using var _ = _lock.Lock();
        foreach (var g in _groups.Values) if (QgroupId.Level(g.Id) == 0) MarkDirty(g);
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
        RemoveGroupUnsynchronized(id);
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

    /// <summary>The group of subvolume <paramref name="treeId"/> and each of its distinct
    /// ancestors (the groups a write there reserves against); empty if it has no group.</summary>
    public List<(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive, ulong RsvData)> ChainOf(ulong treeId)
    {
        using var _ = _lock.Lock();
        if (!Enabled || !_groups.ContainsKey(ForSubvolume(treeId))) return [];
        return ChainUnsynchronized(treeId).Select(g => (g.Id, g.Referenced, g.Exclusive, g.MaxReferenced, g.MaxExclusive, g.RsvData)).ToList();
    }

    /// <summary>Data bytes reserved by all subvolumes' writers (each byte once, whatever the
    /// hierarchy, and whether quotas are on or off).</summary>
    public ulong TotalRsv { get { using var _ = _lock.Lock(); return _rsvBySubvol.Values.Aggregate(0UL, (a, r) => a + r); } }

    /// <summary>The reserved bytes of one subvolume.</summary>
    public ulong RsvOf(ulong treeId) { using var _ = _lock.Lock(); return _rsvBySubvol.GetValueOrDefault(treeId); }

    public long Underflows { get { using var _ = _lock.Lock(); return _rsvUnderflows + _groups.Values.Sum(g => g.Underflows); } }
}

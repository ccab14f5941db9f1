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
    /// <summary>The limits differ from the group's QGROUP_LIMIT item (a new group has none
    /// yet). Usage changes at almost every commit and limits almost never: the item, in
    /// another leaf than the QGROUP_INFO once there are a few hundred groups, is written only
    /// when this is set.</summary>
    public bool LimitDirty = true;
    /// <summary>Data bytes reserved for writes not yet accounted (btrfs's rsv.values[DATA]).</summary>
    public ulong RsvData;
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
/// Usage follows who references each extent (EXTENT_OWNER_REF transitions, accounted at
/// commit by <see cref="AccountExtent"/>); a snapshot inherits its source's numbers in O(1);
/// a changed relation is followed by a recount.
/// </summary>
internal sealed class Qgroups
{
    private readonly FsMutex _lock; // guards every Qgroup and _enabled
    private readonly Dictionary<ulong, Qgroup> _groups = new();
    private readonly Dictionary<ulong, HashSet<ulong>> _parents = new(), _children = new(); // guarded by _lock
    private readonly List<(ulong Child, ulong Parent, bool Added)> _relationChanges = new(); // guarded by _lock
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

    /// <summary>Adds a relation. The cached member and outside sets of the parent and its
    /// ancestors gain the child's level-0 groups in place (a snapshot joining its source's
    /// groups costs as much as the groups above it, not as much as their members).</summary>
    private void Link(ulong child, ulong parent)
    {
        var below = QgroupId.Level(child) == 0 ? [child] : MembersUnsynchronized(child);
        (_parents.TryGetValue(child, out var ps) ? ps : _parents[child] = new()).Add(parent);
        (_children.TryGetValue(parent, out var cs) ? cs : _children[parent] = new()).Add(child);
        ulong belowBound = QgroupId.Level(child) == 0 ? child : _memberBound.GetValueOrDefault(child);
        foreach (var a in AncestorsUnsynchronized([parent]))
        {
            if (_members.TryGetValue(a, out var m))
            {
                m.UnionWith(below);
                _memberBound[a] = Math.Max(_memberBound.GetValueOrDefault(a), belowBound);
            }
            if (_outside.TryGetValue(a, out var o)) o.ExceptWith(below);
            if (_sortedMembers.TryGetValue(a, out var sorted))
                foreach (var q in below) InsertSorted(sorted, QgroupId.Id(q));
        }
    }

    /// <summary>Removes a relation. A level-0 child (a subvolume leaving a group, or going
    /// away) leaves the cached sets of the groups it is no longer below by any other path, in
    /// place; a higher child's departure, rare, drops the caches.</summary>
    private void Unlink(ulong child, ulong parent)
    {
        if (_parents.TryGetValue(child, out var ps)) { ps.Remove(parent); if (ps.Count == 0) _parents.Remove(child); }
        if (_children.TryGetValue(parent, out var cs)) { cs.Remove(child); if (cs.Count == 0) _children.Remove(parent); }
        if (QgroupId.Level(child) != 0)
        {
            ForgetSetsUnsynchronized();
            return;
        }
        var stillBelow = AncestorsUnsynchronized(_parents.GetValueOrDefault(child) ?? []);
        foreach (var a in AncestorsUnsynchronized([parent]))
        {
            if (stillBelow.Contains(a)) continue;
            if (_members.TryGetValue(a, out var m)) m.Remove(child);
            if (_outside.TryGetValue(a, out var o)) o.Add(child);
            if (_sortedMembers.TryGetValue(a, out var sorted) && sorted.BinarySearch(QgroupId.Id(child)) is var i and >= 0) sorted.RemoveAt(i);
        }
    }

    /// <summary>The given groups and every group above them, once. Caller holds the lock.</summary>
    private HashSet<ulong> AncestorsUnsynchronized(IEnumerable<ulong> from)
    {
        var seen = new HashSet<ulong>();
        var todo = new Stack<ulong>(from);
        while (todo.Count > 0)
        {
            ulong a = todo.Pop();
            if (seen.Add(a) && _parents.TryGetValue(a, out var up)) foreach (var p in up) todo.Push(p);
        }
        return seen;
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

    /// <summary>Recomputes the reservations of <paramref name="id"/> and its ancestors from
    /// their level-0 descendants after a relation changed (their usage comes from a recount,
    /// <see cref="SetRecounted"/>). Caller holds the lock.</summary>
    private void RecomputeReservationsUpward(ulong id)
    {
        var todo = new Queue<ulong>([id]);
        var seen = new HashSet<ulong>();
        while (todo.Count > 0)
        {
            ulong x = todo.Dequeue();
            if (!seen.Add(x)) continue;
            if (QgroupId.Level(x) > 0 && _groups.TryGetValue(x, out var g))
            {
                ulong rsv = 0;
                foreach (var l in MembersUnsynchronized(x))
                    if (_groups.TryGetValue(l, out var lg)) rsv += lg.RsvData;
                g.RsvData = rsv;
                MarkDirty(g);
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

    /// <summary>What making (<paramref name="add"/>) or ending a membership would answer, without
    /// making it: ENOTCONN with quotas off, EINVAL unless the parent's level is higher, ENOENT for
    /// a missing group (or a missing relation to end), EEXIST for one that is there.</summary>
    public Errno CheckRelation(ulong child, ulong parent, bool add)
    {
        using var _ = _lock.Lock();
        return CheckRelationUnsynchronized(child, parent, add);
    }

    private Errno CheckRelationUnsynchronized(ulong child, ulong parent, bool add)
    {
        if (!Enabled) return Errno.ENOTCONN;
        if (QgroupId.Level(parent) <= QgroupId.Level(child)) return Errno.EINVAL;
        if (!_groups.ContainsKey(child) || !_groups.ContainsKey(parent)) return Errno.ENOENT;
        bool linked = _parents.TryGetValue(child, out var ps) && ps.Contains(parent);
        if (add == linked) return add ? Errno.EEXIST : Errno.ENOENT;
        return Errno.OK;
    }

    /// <summary>
    /// Makes the memberships asked for (each answered in its <see cref="RelationChange.Result"/>;
    /// a rescan asks for the recount alone) and sets every group's numbers from
    /// <paramref name="recount"/> under the new relations, in one hold of the lock: a reservation
    /// sees the old relations with the old numbers or the new with the new, never a parent that
    /// already holds a member to its limit without counting the member's bytes (btrfs's
    /// inconsistent window, where limits stop holding). The parents' reservations are worked out
    /// again from their members'. Called by the commit, with no handle open (the trees the
    /// recount read hold still).
    /// </summary>
    public void ChangeRelations(IReadOnlyList<RelationChange> changes,
        Func<IReadOnlyDictionary<ulong, HashSet<ulong>>, IReadOnlyDictionary<ulong, (ulong Referenced, ulong Exclusive)>> recount)
    {
        using var _ = _lock.Lock();
        bool any = false, rescan = false;
        foreach (var c in changes)
        {
            if (c.IsRescan) { rescan = true; continue; }
            c.Result = CheckRelationUnsynchronized(c.Child, c.Parent, c.Add);
            if (c.Result != Errno.OK) continue;
            MakeRelation(c);
            any = true;
        }
        if (!any && !rescan) return;
        var numbers = recount(MemberSetsUnsynchronized());
        int moved = 0;
        foreach (var g in _groups.Values)
            if ((g.Referenced, g.Exclusive) != numbers.GetValueOrDefault(g.Id)) moved++;
        SetRecountedUnsynchronized(numbers);
        foreach (var c in changes)
        {
            if (c.IsRescan) (c.Result, c.Corrected) = (Errno.OK, any ? -1 : moved);
            else if (c.Result == Errno.OK) RecomputeReservationsUpward(c.Parent);
        }
    }

    /// <summary>
    /// The groups whose numbers a membership of the level-0 group <paramref name="child"/> in
    /// <paramref name="parent"/> made (<paramref name="add"/>) or ended would move: the parent
    /// and its ancestors that the child is not below by another path, each with its level-0
    /// members as they are now. Null when the change cannot be made now, or needs a recount
    /// (a child of level 1 or above). Called by the commit with no handle open: the sets hold
    /// still while the caller reads them.
    /// </summary>
    public List<(ulong Id, HashSet<ulong> Members)>? MovedByRelation(ulong child, ulong parent, bool add)
    {
        using var _ = _lock.Lock();
        return MovedByRelationUnsynchronized(child, parent, add);
    }

    private List<(ulong Id, HashSet<ulong> Members)>? MovedByRelationUnsynchronized(ulong child, ulong parent, bool add)
    {
        if (QgroupId.Level(child) != 0 || CheckRelationUnsynchronized(child, parent, add) != Errno.OK) return null;
        var stillBelow = AncestorsUnsynchronized(_parents.TryGetValue(child, out var ps) ? ps.Where(p => p != parent) : []);
        return AncestorsUnsynchronized([parent]).Where(a => !stillBelow.Contains(a) && _groups.ContainsKey(a))
            .OrderBy(a => a).Select(a => (a, MembersUnsynchronized(a))).ToList();
    }

    /// <summary>
    /// Makes or ends one membership of a level-0 group with the numbers it moves worked out
    /// from that subvolume's extents alone (<paramref name="deltas"/>, for the groups
    /// <paramref name="moved"/> that <see cref="MovedByRelation"/> named), in one hold of the
    /// lock, as <see cref="ChangeRelations"/> does with a recount. Returns false, changing
    /// nothing, when the groups it would move are no longer those (the caller recounts).
    /// </summary>
    public bool ChangeRelation(RelationChange c, IReadOnlyList<ulong> moved, IReadOnlyDictionary<ulong, (long Referenced, long Exclusive)> deltas)
    {
        using var _ = _lock.Lock();
        c.Result = CheckRelationUnsynchronized(c.Child, c.Parent, c.Add);
        if (c.Result != Errno.OK) return true;
        var now = MovedByRelationUnsynchronized(c.Child, c.Parent, c.Add);
        if (now == null || !now.Select(g => g.Id).SequenceEqual(moved))
        {
            c.Result = null;
            return false;
        }
        MakeRelation(c);
        foreach (var (id, (r, e)) in deltas)
            if (_groups.TryGetValue(id, out var g)) Add(g, r, e);
        RecomputeReservationsUpward(c.Parent);
        return true;
    }

    /// <summary>Makes or ends a membership asked for by hand: its items follow at the commit, and
    /// the group sides of the epoch before are no longer valid. Caller holds the lock.</summary>
    private void MakeRelation(RelationChange c)
    {
        if (c.Add) Link(c.Child, c.Parent); else Unlink(c.Child, c.Parent);
        _relationChanges.Add((c.Child, c.Parent, c.Add));
        Epoch++;
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

    /// <summary>
    /// The groups of level 1 or above that contain <paramref name="subvolume"/>, each once,
    /// with their level-0 members (kept up to date as relations change). Only these can see
    /// their numbers move when that subvolume's references change (docs/SNAPSHOTS.md §3,
    /// "Higher-level groups"). Called by the commit while no handle is open, so no relation
    /// changes while the caller reads the sets.
    /// </summary>
    public List<(ulong Id, HashSet<ulong> Members)> HigherAbove(ulong subvolume)
    {
        using var _ = _lock.Lock();
        if (!Enabled || !_parents.TryGetValue(ForSubvolume(subvolume), out var ps)) return [];
        return AncestorsUnsynchronized(ps).Where(_groups.ContainsKey).Select(g => (g, MembersUnsynchronized(g))).ToList();
    }

    /// <summary>The level-0 groups not below group <paramref name="id"/> (cached like the
    /// members, until relations or groups change): where the commit looks for a referrer
    /// outside a group when that side is the smaller one.</summary>
    public HashSet<ulong> Level0Outside(ulong id)
    {
        using var _ = _lock.Lock();
        return OutsideUnsynchronized(id);
    }

    private HashSet<ulong> OutsideUnsynchronized(ulong id)
    {
        if (_outside.TryGetValue(id, out var o)) return o;
        var m = MembersUnsynchronized(id);
        o = _groups.Keys.Where(q => QgroupId.Level(q) == 0 && !m.Contains(q)).ToHashSet();
        _outside[id] = o;
        return o;
    }

    /// <summary>Works out each higher group's members, and its outside when that is the smaller
    /// side (the only case the commit asks for it), after a mount or a recount: walking every
    /// group then, with the relations just loaded or changed, keeps that walk out of the next
    /// commit's accounting. Later relations update the cached sets in place. Caller holds the lock.</summary>
    private void WarmSetsUnsynchronized()
    {
        int level0 = Level0CountUnsynchronized;
        foreach (var g in _higher)
        {
            var m = MembersUnsynchronized(g.Id);
            if ((level0 - m.Count) * 2 <= level0) OutsideUnsynchronized(g.Id);
        }
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

    private readonly Dictionary<ulong, HashSet<ulong>> _members = new(); // guarded by _lock; cleared when relations change
    private readonly Dictionary<ulong, HashSet<ulong>> _outside = new(); // guarded by _lock; cleared when relations or groups change

    /// <summary>The level-0 groups at or below a group. Caller holds the lock.</summary>
    private HashSet<ulong> MembersUnsynchronized(ulong id)
    {
        if (!_members.TryGetValue(id, out var m))
        {
            _members[id] = m = QgroupId.Level0Below(id, c => _children.GetValueOrDefault(c));
            _memberBound[id] = m.Count == 0 ? 0 : m.Max();
        }
        return m;
    }

    /// <summary>Drops every cached member set, its bound and outside set (relations or groups of
    /// level 1 and above changed; they are worked out again when asked). Caller holds the lock.</summary>
    private void ForgetSetsUnsynchronized()
    {
        _members.Clear();
        _memberBound.Clear();
        _outside.Clear();
        _sortedMembers.Clear();
        Epoch++;
    }

    /// <summary>Each group's level-0 members as subvolume ids in ascending order, for the commit's
    /// walks over one side of a group (<see cref="SortedMembers"/>). Guarded by _lock; kept with
    /// <see cref="_members"/> (a snapshot joining its source's groups has the highest id: appended).</summary>
    private readonly Dictionary<ulong, List<ulong>> _sortedMembers = new();

    /// <summary>The subvolume ids of group <paramref name="id"/>'s level-0 members, ascending.
    /// Called by the commit while no handle is open, so no relation changes while the caller
    /// reads the list.</summary>
    public List<ulong> SortedMembers(ulong id)
    {
        using var _ = _lock.Lock();
        if (!_sortedMembers.TryGetValue(id, out var l))
        {
            l = MembersUnsynchronized(id).Select(QgroupId.Id).ToList();
            l.Sort();
            _sortedMembers[id] = l;
        }
        return l;
    }

    private static void InsertSorted(List<ulong> sorted, ulong x)
    {
        if (sorted.Count == 0 || sorted[^1] < x) { sorted.Add(x); return; }
        int i = sorted.BinarySearch(x);
        if (i < 0) sorted.Insert(~i, x);
    }

    /// <summary>
    /// Changes when a subvolume may have joined or left a group while referencing extents: a
    /// membership made or ended by hand (<see cref="ChangeRelations"/>), or every set forgotten.
    /// The commit's group-side entries (<see cref="Tx.ReferrerEntries"/>) are valid only within one
    /// epoch. A snapshot joining its source's groups (its id is above every id the entries have
    /// walked) and a subvolume's group leaving once it references nothing
    /// (<see cref="RemoveForSubvolume"/>) leave it. Read by the commit only, with no handle open.
    /// </summary>
    public long Epoch { get; private set; }

    /// <summary>At mount: the epoch the image's QGROUP_STATUS names, so that the group sides of
    /// its REFERRER_ENTRY items written in that epoch stay valid.</summary>
    public void StartEpochAt(long epoch)
    {
        using var _ = _lock.Lock();
        Epoch = epoch;
    }

    /// <summary>For each group with a cached member set: an id no member's exceeds (exact when
    /// the set is built, raised as members join, left as they go: still a bound). Guarded by
    /// _lock; kept with <see cref="_members"/>.</summary>
    private readonly Dictionary<ulong, ulong> _memberBound = new();

    /// <summary>No level-0 member of group <paramref name="id"/> has a higher subvolume id
    /// (level-0 qgroup ids are the subvolume ids).</summary>
    public ulong MemberBound(ulong id)
    {
        using var _ = _lock.Lock();
        MembersUnsynchronized(id);
        return _memberBound[id];
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

    /// <summary>Every group's level-0 members, for a recount. </summary>
    public Dictionary<ulong, HashSet<ulong>> MemberSets()
    {
        using var _ = _lock.Lock();
        return MemberSetsUnsynchronized();
    }

    private Dictionary<ulong, HashSet<ulong>> MemberSetsUnsynchronized() =>
        _groups.Keys.ToDictionary(id => id, id => QgroupId.Level(id) == 0 ? [id] : new HashSet<ulong>(MembersUnsynchronized(id)));

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

/// <summary>A membership to make (<see cref="Add"/>) or end, or a rescan (every group
/// recounted, btrfs's `quota rescan`), asked of the commit (<see cref="Qgroups.ChangeRelations"/>);
/// <see cref="Result"/> is its answer once made.</summary>
internal sealed class RelationChange(ulong child, ulong parent, bool add)
{
    public ulong Child { get; } = child;
    public ulong Parent { get; } = parent;
    public bool Add { get; } = add;
    public bool IsRescan { get; private init; }
    public Errno? Result { get; set; }
    /// <summary>A rescan's finding: how many groups' numbers the recount changed (0 while the
    /// accounting is right; -1 when relation changes in the same commit moved numbers too).</summary>
    public int Corrected { get; set; }

    public static RelationChange Rescan() => new(0, 0, false) { IsRescan = true };
}

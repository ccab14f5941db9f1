using Reservoir.Common;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>Qgroup relations (btrfs's: a DAG ordered by level): memberships made and ended,
/// with their numbers moved in the same hold of the lock, and the epoch that tells the
/// commit's group sides when relations changed. Guarded by the lock of <see cref="Qgroups"/>.</summary>
internal sealed partial class Qgroups
{
    private readonly Dictionary<ulong, HashSet<ulong>> _parents = new(), _children = new(); // guarded by _lock
    private readonly List<(ulong Child, ulong Parent, bool Added)> _relationChanges = new(); // guarded by _lock

    /// <summary>Adds a relation. The cached member and outside sets of the parent and its
    /// ancestors gain the child's level-0 groups in place (a snapshot joining its source's
    /// groups costs as much as the groups above it, not as much as their members).</summary>
    private void Link(ulong child, ulong parent)
    {
        _memberships++;
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
        _memberships++;
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

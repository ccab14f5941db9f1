using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>The level-0 members of each higher group, and the level-0 groups outside it, kept
/// as relations change (not rebuilt per question) for the commit's accounting of groups of
/// level 1 and above. Guarded by the lock of <see cref="Qgroups"/>.</summary>
internal sealed partial class Qgroups
{
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
        _memberships++;
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

    /// <summary>Every group's level-0 members, for a recount. </summary>
    public Dictionary<ulong, HashSet<ulong>> MemberSets()
    {
        using var _ = _lock.Lock();
        return MemberSetsUnsynchronized();
    }

    private Dictionary<ulong, HashSet<ulong>> MemberSetsUnsynchronized() =>
        _groups.Keys.ToDictionary(id => id, id => QgroupId.Level(id) == 0 ? [id] : new HashSet<ulong>(MembersUnsynchronized(id)));
}

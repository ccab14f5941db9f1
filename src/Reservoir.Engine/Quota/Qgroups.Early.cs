using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>A group of level 1 or above around one extent a subvolume let go of or took by a
/// clone, as the early accounting asks about it: whether that subvolume (<see cref="MoverIn"/>)
/// and the first two other referrers found (<see cref="FirstIn"/>, <see cref="SecondIn"/>) are
/// among its level-0 members.</summary>
internal readonly record struct EarlyGroupFacts(ulong Id, bool MoverIn, bool FirstIn, bool SecondIn);

/// <summary>What the early accounting (docs/SNAPSHOTS.md §3, "Early accounting") asks of the
/// groups of level 1 and above. The early worker runs beside writers, snapshots and subvolume
/// creation, which change the cached member and outside sets in place, so unlike the commit
/// it never holds a set outside the lock: each question is answered, or the side it needs
/// copied, under the lock. <see cref="MembershipState"/> changes with every membership, so an
/// answer found while it moved is not used (the worker's stamp). Guarded by the lock of
/// <see cref="Qgroups"/>.</summary>
internal sealed partial class Qgroups
{
    /// <summary>Bumped by every change of a membership, of a cached member or outside set, or
    /// of the set of groups (<see cref="Link"/>, <see cref="Unlink"/>, a group added or removed,
    /// the sets forgotten). Guarded by _lock.</summary>
    private long _memberships;

    // GroupsAround's walk, reused (it runs per extent). Guarded by _lock.
    private readonly HashSet<ulong> _aroundSeen = new();
    private readonly List<ulong> _aroundTodo = new();

    /// <summary>Whether groups of level 1 or above exist, and the memberships' version: read
    /// together, under one hold of the lock, for the early accounting's stamp.</summary>
    public (bool Higher, long Memberships) MembershipState
    {
        get { using var _ = _lock.Lock(); return (_higher.Count > 0, _memberships); }
    }

    /// <summary>
    /// The groups of level 1 and above containing <paramref name="mover"/>,
    /// <paramref name="first"/> or <paramref name="second"/> (subvolume ids; 0 for none), each
    /// once, with where the three stand in it. Only these can see their numbers move when the
    /// mover lets go of an extent the other two keep, or takes one they have
    /// (<c>AccountHigherGroups</c>).
    /// </summary>
    public void GroupsAround(ulong mover, ulong first, ulong second, List<EarlyGroupFacts> into)
    {
        into.Clear();
        using var _ = _lock.Lock();
        if (!Enabled || _higher.Count == 0) return;
        var (seen, todo) = (_aroundSeen, _aroundTodo);
        seen.Clear();
        todo.Clear();
        foreach (var s in (ReadOnlySpan<ulong>)[mover, first, second])
            if (s != 0 && _parents.TryGetValue(ForSubvolume(s), out var ps)) todo.AddRange(ps);
        while (todo.Count > 0)
        {
            ulong g = todo[^1];
            todo.RemoveAt(todo.Count - 1);
            if (!seen.Add(g)) continue;
            if (_parents.TryGetValue(g, out var up)) todo.AddRange(up);
            if (!_groups.ContainsKey(g)) continue;
            var m = MembersUnsynchronized(g);
            into.Add(new EarlyGroupFacts(g, m.Contains(ForSubvolume(mover)),
                first != 0 && m.Contains(ForSubvolume(first)), second != 0 && m.Contains(ForSubvolume(second))));
        }
    }

    /// <summary>
    /// The subvolume ids of group <paramref name="id"/>'s level-0 members
    /// (<paramref name="inside"/>) or of the level-0 groups outside it, copied into
    /// <paramref name="into"/> if there are at most <paramref name="max"/>; false otherwise.
    /// </summary>
    public bool TryCopySide(ulong id, bool inside, int max, List<ulong> into)
    {
        into.Clear();
        using var _ = _lock.Lock();
        var m = MembersUnsynchronized(id);
        int count = inside ? m.Count : Level0CountUnsynchronized - m.Count;
        if (count > max) return false;
        foreach (var q in inside ? m : OutsideUnsynchronized(id)) into.Add(QgroupId.Id(q));
        return true;
    }

    /// <summary>Those of <paramref name="subvolumes"/> that are (<paramref name="inside"/>) or
    /// are not members of group <paramref name="id"/>.</summary>
    public void FilterSide(ulong id, bool inside, List<ulong> subvolumes, List<ulong> into)
    {
        into.Clear();
        using var _ = _lock.Lock();
        var m = MembersUnsynchronized(id);
        foreach (var s in subvolumes) if (m.Contains(ForSubvolume(s)) == inside) into.Add(s);
    }
}

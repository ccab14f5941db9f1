using Reservoir.Engine.Quota;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The early accounting's answer for the groups of level 1 and above when a subvolume lets go
/// of an extent (docs/SNAPSHOTS.md §3, "Early accounting"): the commit's rules
/// (<c>AccountHigherGroups</c>) with no transition acquired and one dropped, asked with the
/// worker's lock-safe lookups. A group references the extent while a member does and holds
/// it exclusively while every referrer is a member; only groups above the subvolume that let
/// go or above the first two referrers found can move. With the referrers all known (none or
/// one besides the dropper) the answer is direct; with two or more, a group needs a search
/// only when its answer turns on who else references the extent: for referenced, when the
/// dropper is a member and neither of the two is; for exclusive, when both are members and
/// the dropper is not (a group of the snapshots, when the source rewrites its files). Each
/// search walks the side asked about when it is small, or the candidates when they are all
/// known, and stops at the first referrer; a subvolume that answered yes is asked first for
/// the next extent (extents let go of together were mostly inherited together). A search
/// that would walk more leaves the extent to the commit.
///
/// Why it holds: the memberships are read under the qgroup lock and their version is part
/// of the stamp (<see cref="EarlyStamp.Memberships"/>), the same before and after the answer
/// and at the commit, or none of the transaction's answers is used.
/// </summary>
internal sealed partial class FsInfo
{
    // The worker's, reused from one extent to the next; guarded by EarlyWorkLock.
    private readonly List<EarlyGroupFacts> _earlyFacts = new();
    private readonly List<GroupDelta> _earlyGroupDeltas = new();
    private readonly List<ulong> _earlySide = new();
    /// <summary>Per batch: the subvolume that last answered yes to "does anyone else on this
    /// side of this group reference it?" (asked again before it answers).</summary>
    private readonly Dictionary<(ulong Group, bool Inside), ulong> _earlyWitness = new();

    /// <summary>
    /// Sets <paramref name="r"/>'s <see cref="EarlyResult.Groups"/> for an extent
    /// <paramref name="r"/>.Dropper let go of, whose other referrers are
    /// <paramref name="first"/> and <paramref name="second"/> (0: none) and, when
    /// <paramref name="complete"/>, no one else. False when some group's answer would take more
    /// lookups than the early accounting makes (the extent is the commit's).
    /// </summary>
    private bool EarlyHigherGroups(ref EarlyResult r, ulong bytenr, ulong first, ulong second, bool complete)
    {
        ulong dropper = r.Dropper;
        long len = (long)r.Len;
        Quota.GroupsAround(dropper, first, second, _earlyFacts);
        var deltas = _earlyGroupDeltas;
        deltas.Clear();
        foreach (var f in _earlyFacts)
        {
            long dr = 0, de = 0;
            if (complete)
            {
                // Before: the dropper and the others; after: the others (none: the extent goes).
                bool others = first != 0;
                bool oIn = others && f.FirstIn, oAll = !others || f.FirstIn;
                bool rb = f.DropperIn || oIn, ra = oIn, eb = oAll && f.DropperIn, ea = others && oAll;
                dr = rb == ra ? 0 : ra ? len : -len;
                de = eb == ea ? 0 : ea ? len : -len;
            }
            else if (f.DropperIn)
            {
                // Exclusive cannot move: the dropper was a member. Referenced goes unless another
                // member still has it.
                if (f.FirstIn || f.SecondIn) continue;
                if (AnyOtherEarly(f.Id, inside: true, bytenr, dropper, first, second) is not { } member) return false;
                if (!member) dr = -len;
            }
            else
            {
                // Referenced cannot move: the dropper was no member. The group holds it alone
                // from now on if both are members and no one outside has it.
                if (!(f.FirstIn && f.SecondIn)) continue;
                if (AnyOtherEarly(f.Id, inside: false, bytenr, dropper, first, second) is not { } outside) return false;
                if (!outside) de = len;
            }
            if (dr != 0 || de != 0) deltas.Add(new GroupDelta(f.Id, dr, de));
        }
        r.Groups = deltas.Count > 0 ? deltas.ToArray() : null;
        return true;
    }

    /// <summary>
    /// Whether a subvolume other than <paramref name="dropper"/>, <paramref name="first"/> and
    /// <paramref name="second"/> references the extent and is (<paramref name="inside"/>) or is
    /// not a member of group <paramref name="group"/>; null when that is not known within the
    /// walk the early accounting allows. Walks the side asked about when it has at most
    /// <see cref="MountOptions.ReferrerEntryAfter"/> + 3 subvolumes, else the extent's
    /// candidates when <see cref="_earlyCandidates"/> holds all of them.
    /// </summary>
    private bool? AnyOtherEarly(ulong group, bool inside, ulong bytenr, ulong dropper, ulong first, ulong second)
    {
        bool Other(ulong s) => s != dropper && s != first && s != second;
        Interlocked.Increment(ref Stats.EarlyGroupSearches);
        if (_earlyWitness.TryGetValue((group, inside), out ulong w) && Other(w) && HoldsLocked(w, bytenr)) return true;
        int limit = Options.ReferrerEntryAfter;
        var side = _earlySide;
        if (!Quota.TryCopySide(group, inside, limit + 3, side))
        {
            // The side is large: the candidates, if all of them are known (few).
            if (!_earlyCandidatesComplete) return null;
            Quota.FilterSide(group, inside, _earlyCandidates, side);
        }
        // At most limit + 3 lookups either way (the candidates collected are at most limit + 2).
        foreach (var s in side)
        {
            if (!Other(s) || !HoldsLocked(s, bytenr)) continue;
            _earlyWitness[(group, inside)] = s;
            return true;
        }
        return false;
    }
}

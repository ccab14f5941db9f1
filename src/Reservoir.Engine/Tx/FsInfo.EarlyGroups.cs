using Reservoir.Engine.Quota;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The early accounting's answer for the groups of level 1 and above when a subvolume lets go
/// of an extent or takes one by a clone, the <em>mover</em> (docs/SNAPSHOTS.md §3, "Early
/// accounting"): the commit's rules (<c>AccountHigherGroups</c>) with one transition, dropped
/// or acquired, asked with the worker's lock-safe lookups. A group references the extent
/// while a member does and holds it exclusively while every referrer is a member; only groups
/// above the mover or above the first two other referrers found can move. With the referrers
/// all known (none or one besides the mover) the answer is direct; with two or more, a group
/// needs a search only when its answer turns on who else references the extent: for
/// referenced, when the mover is a member and neither of the two is; for exclusive, when both
/// are members and the mover is not (a group of the snapshots, when the source rewrites its
/// files or clones from one of them). Each search walks the side asked about when it is small,
/// else the extent's candidates on that side (all of them, or the first few thousand in the
/// order taken), and stops at the first referrer; a subvolume that answered yes is asked first
/// for the next extent (extents let go of together were mostly inherited together). A search
/// that would look up more leaves the extent to the commit.
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
    /// <summary>The extent being worked out: its writer and the transaction that wrote it.</summary>
    private ulong _earlyWriter, _earlyBorn;
    /// <summary>The subvolume that last answered yes to "does anyone else on this side of this
    /// group reference it?", asked again (its EXTENT_OWNER_REF) before it answers; kept while
    /// the memberships stay as they were (<see cref="_earlyWitnessMemberships"/>: an answer found
    /// under other memberships is not used anyway, by the stamp).</summary>
    private readonly Dictionary<(ulong Group, bool Inside), ulong> _earlyWitness = new();
    private long _earlyWitnessMemberships = -1;
    /// <summary>Per batch: the questions whose walk over the first candidates came to nothing
    /// (each such extent is left to the commit without walking them again).</summary>
    private readonly HashSet<(ulong Group, bool Inside)> _earlyWideGaveUp = new();

    /// <summary>
    /// Sets <paramref name="r"/>'s <see cref="EarlyResult.Groups"/> for an extent
    /// <paramref name="r"/>.Dropper let go of or <paramref name="r"/>.Acquirer took, whose other
    /// referrers are <paramref name="first"/> and <paramref name="second"/> (0: none) and, when
    /// <paramref name="complete"/>, no one else. False when some group's answer would take more
    /// lookups than the early accounting makes (the extent is the commit's).
    /// </summary>
    private bool EarlyHigherGroups(ref EarlyResult r, ulong bytenr, ulong first, ulong second, bool complete)
    {
        // The numbers move from "with the mover" to "without" when it lets go, the other way
        // when it takes the extent: the same questions, the sign turned.
        bool acquires = r.Acquirer != 0;
        ulong mover = acquires ? r.Acquirer : r.Dropper;
        long len = acquires ? (long)r.Len : -(long)r.Len; // what "with the mover" gains
        Quota.GroupsAround(mover, first, second, _earlyFacts);
        var deltas = _earlyGroupDeltas;
        deltas.Clear();
        foreach (var f in _earlyFacts)
        {
            long dr = 0, de = 0;
            if (complete)
            {
                // With the mover: the mover and the others; without: the others (none: no one).
                bool others = first != 0;
                bool oIn = others && f.FirstIn, oAll = !others || f.FirstIn;
                bool rWith = f.MoverIn || oIn, rWithout = oIn, eWith = oAll && f.MoverIn, eWithout = others && oAll;
                dr = rWith == rWithout ? 0 : rWith ? len : -len;
                de = eWith == eWithout ? 0 : eWith ? len : -len;
            }
            else if (f.MoverIn)
            {
                // Exclusive cannot move: the mover is a member. Referenced moves unless another
                // member has the extent.
                if (f.FirstIn || f.SecondIn) continue;
                if (AnyOtherEarly(f.Id, inside: true, bytenr, mover, first, second) is not { } member) return false;
                if (!member) dr = len;
            }
            else
            {
                // Referenced cannot move: the mover is no member. The group holds the extent
                // alone without the mover if both are members and no one outside has it.
                if (!(f.FirstIn && f.SecondIn)) continue;
                if (AnyOtherEarly(f.Id, inside: false, bytenr, mover, first, second) is not { } outside) return false;
                if (!outside) de = -len;
            }
            if (dr != 0 || de != 0) deltas.Add(new GroupDelta(f.Id, dr, de));
        }
        r.Groups = deltas.Count > 0 ? deltas.ToArray() : null;
        return true;
    }

    /// <summary>
    /// Whether a subvolume other than <paramref name="mover"/>, <paramref name="first"/> and
    /// <paramref name="second"/> references the extent and is (<paramref name="inside"/>) or is
    /// not a member of group <paramref name="group"/>; null when that is not known within the
    /// walk the early accounting allows. Walks the side asked about when it has at most
    /// <see cref="MountOptions.ReferrerEntryAfter"/> + 3 subvolumes, else the extent's
    /// candidates on that side: all of them when <see cref="_earlyCandidates"/> holds all,
    /// else the first <see cref="WideCandidates"/> in the order taken, where a yes answers
    /// (and its witness answers the next extents with one lookup: a group of half the
    /// snapshots) and a no only if they were all; those looked up and not holding the extent
    /// at most <see cref="MountOptions.ReferrerEntryAfter"/> (a commit may wait for a batch).
    /// </summary>
    private bool? AnyOtherEarly(ulong group, bool inside, ulong bytenr, ulong mover, ulong first, ulong second)
    {
        bool Other(ulong s) => s != mover && s != first && s != second;
        Interlocked.Increment(ref Stats.EarlyGroupSearches);
        if (_earlyWitness.TryGetValue((group, inside), out ulong w) && Other(w) && HoldsLocked(w, bytenr)) return true;
        int limit = Options.ReferrerEntryAfter;
        var side = _earlySide;
        bool whole = true, bounded = false;
        if (!Quota.TryCopySide(group, inside, limit + 3, side))
        {
            // The side is large: the candidates on it.
            if (_earlyCandidatesComplete) Quota.FilterSide(group, inside, _earlyCandidates, side);
            else
            {
                // The wide walk follows the writer's lineage only: an extent with clones' origins
                // is the commit's here.
                if (_earlyOrigins.Count > 0 || _earlyWideGaveUp.Contains((group, inside))) return null;
                whole = Lineage.CollectCandidates(_earlyWriter, _earlyBorn, _earlyWide, WideCandidates);
                Quota.FilterSide(group, inside, _earlyWide, side);
                bounded = true;
            }
        }
        int passed = 0;
        foreach (var s in side)
        {
            if (!Other(s)) continue;
            if (HoldsLocked(s, bytenr))
            {
                _earlyWitness[(group, inside)] = s;
                return true;
            }
            if (bounded && ++passed >= limit) break;
        }
        if (passed < limit && whole) return false;
        if (bounded) _earlyWideGaveUp.Add((group, inside));
        return null;
    }

    /// <summary>At the start of a batch: witnesses found under other memberships go, and the
    /// questions given up on are asked again.</summary>
    private void StartEarlyGroupBatch(long memberships)
    {
        _earlyWideGaveUp.Clear();
        if (memberships == _earlyWitnessMemberships) return;
        _earlyWitness.Clear();
        _earlyWitnessMemberships = memberships;
    }

    /// <summary>How many of an extent's candidates <see cref="AnyOtherEarly"/> collects when a
    /// side is large: the walk is a list step each, under the lineage's lock.</summary>
    private const int WideCandidates = 16384;
    private readonly List<ulong> _earlyWide = new(); // guarded by EarlyWorkLock
}

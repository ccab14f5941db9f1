using Reservoir.Engine.Quota;
using Reservoir.Engine.Tree;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Who references one data extent, asked by the commit's quota accounting (docs/SNAPSHOTS.md
/// §3, SPEC.md §5.9). A subvolume can reference an extent only by writing it, by a clone (which
/// leaves a SHARED_ROOT_REF) or by inheriting it from its snapshot source, so the candidates
/// are the extent's writer and each SHARED_ROOT_REF subvolume (the origins), and the snapshots
/// of those taken since they had it, and of those snapshots (the lineage). The transaction's
/// transitions already say that each of <see cref="Acquired"/> references it and none of
/// <see cref="Dropped"/> does; every other candidate costs one lookup of its EXTENT_OWNER_REF.
/// An origin that let go of the extent (an ORIGIN_DROP item) passes it on only to the snapshots
/// taken up to then: later ones are not candidates (with snapshots taken in rotation, the
/// extents only the oldest still holds would otherwise ask every newer snapshot).
/// Used only inside the commit, while no handle is open and no tree, lineage or qgroup
/// relation can change. One instance serves every commit, one extent after another
/// (<see cref="Begin"/>, <see cref="Reset"/> between commits), so that asking about an
/// extent allocates nothing in the common case.
/// </summary>
internal sealed class ReferrerSearch(FsInfo fs, OwnerRefProbe probe)
{
    private ulong bytenr;
    private Origin writer;
    private List<Origin> shared = [];
    private ulong[] acquired = [], dropped = [];
    /// <summary><see cref="Referrers"/>' answer, valid until the next <see cref="Begin"/>.</summary>
    private readonly List<ulong> _found = new();
    private readonly Lineage.DescendantWalk _walk = new(fs.Lineage);
    private readonly HashSet<ulong> _seen = new();
    private int _origin; // the candidate cursor: the origin whose lineage is being walked (-1: the writer)

    public ulong[] Acquired => acquired;
    public ulong[] Dropped => dropped;

    /// <summary>Starts the questions about one extent: its writer (with its birth transaction,
    /// and the transaction it let go of it, if it has), the subvolumes that took it by a clone
    /// (SHARED_ROOT_REFs, likewise), and the transaction's transitions.</summary>
    public void Begin(ulong bytenr, Origin writer, List<Origin> shared, ulong[] acquired, ulong[] dropped, bool entryItem = false)
    {
        (this.bytenr, this.writer, this.shared, this.acquired, this.dropped) = (bytenr, writer, shared, acquired, dropped);
        _entryItem = entryItem;
        _entry = null;
        _entryComplete = false;
    }

    /// <summary>Before the next commit's accounting: the leaves the probe kept are of trees
    /// that have moved since.</summary>
    public void Reset()
    {
        probe.Clear();
        _trees.Clear();
        _witness.Clear();
        _found.Clear();
        _lastOthers.Clear();
        _seen.Clear();
        _entry = null;
    }

    /// <summary>The extent's entry, when the commit keeps one for it (<see cref="ReferrerEntries"/>);
    /// set by <see cref="Referrers"/>.</summary>
    private ReferrerEntries.Entry? _entry;

    /// <summary>Whether <see cref="_entry"/>'s cursor has reached the highest subvolume id in this
    /// commit, so that its known referrers and the acquired ones are all of them.</summary>
    private bool _entryComplete;

    /// <summary>Whether the extent has a REFERRER_ENTRY item (read with its origins): an entry
    /// not in memory is loaded from it.</summary>
    private bool _entryItem;

    /// <summary>The extent's entry: the one in memory, else the one its item holds.</summary>
    private ReferrerEntries.Entry? FindEntry() =>
        fs.ReferrerEntries.Find(bytenr, writer.Root, writer.Since)
        ?? (_entryItem ? fs.LoadReferrerEntry(bytenr, writer.Root, writer.Since) : null);

    /// <summary>
    /// The subvolumes that reference the extent now (the acquired ones first), stopping after
    /// <paramref name="enough"/>: first the previous extent's other referrers (extents let go
    /// of together were mostly inherited together, and <see cref="Holds"/> is the truth
    /// whoever is asked), then the candidates in their fixed order (the writer, its snapshots
    /// in the order taken, then each SHARED_ROOT_REF likewise). Called once per extent and
    /// commit. A search that passes over <see cref="MountOptions.ReferrerEntryAfter"/> candidates
    /// that no longer reference the extent gives it an entry and goes on from there
    /// (<see cref="FromEntry"/>); an extent with an entry is searched from it.
    /// </summary>
    public List<ulong> Referrers(int enough)
    {
        var found = _found;
        found.Clear();
        found.AddRange(acquired);
        _entry = FindEntry();
        if (_entry != null) return FromEntry(_entry, enough);
        if (found.Count >= enough) return found;
        if (fs.Options.ReferrerEntryAfter <= 0) return FromEntry(StartEntry(), enough);
        // The previous extent's other referrers, asked first: with N snapshots sharing what
        // the source lets go of, the walk would start the lineage again for every extent.
        int acquiredCount = found.Count;
        for (int i = 0; i < _lastOthers.Count && found.Count < enough; i++)
        {
            ulong w = _lastOthers[i];
            if (!Decided(w) && Holds(w)) found.Add(w);
        }
        if (found.Count < enough)
        {
            bool askedFirst = found.Count > acquiredCount;
            int passed = 0;
            StartCandidates();
            while (NextCandidate(out ulong c))
            {
                if (Decided(c) || (askedFirst && found.IndexOf(c, acquiredCount) >= 0)) continue;
                if (!Holds(c))
                {
                    if (++passed < fs.Options.ReferrerEntryAfter) continue;
                    found.RemoveRange(acquiredCount, found.Count - acquiredCount);
                    return FromEntry(StartEntry(), enough);
                }
                found.Add(c);
                if (found.Count >= enough) break;
            }
        }
        _lastOthers.Clear();
        for (int i = acquiredCount; i < found.Count; i++) _lastOthers.Add(found[i]);
        return found;
    }

    /// <summary>The previous extent's referrers other than its acquired ones, asked first by
    /// <see cref="Referrers"/> (cleared per commit).</summary>
    private readonly List<ulong> _lastOthers = new();

    /// <summary>A new entry for the extent, its cursor just below the first id a candidate can
    /// have: the lowest origin's, as a snapshot's id is above its source's
    /// (<see cref="Lineage.IdsFollowCreation"/>; else from the first id).</summary>
    private ReferrerEntries.Entry StartEntry()
    {
        ulong from = 0;
        if (fs.Lineage.IdsFollowCreation)
        {
            from = writer.Root;
            foreach (var o in shared) from = Math.Min(from, o.Root);
        }
        var e = new ReferrerEntries.Entry(writer.Root, writer.Since, from == 0 ? 0 : from - 1);
        fs.ReferrerEntries.Keep(bytenr, e);
        fs.Stats.ReferrerEntriesKept++;
        return e;
    }

    /// <summary>
    /// The search from an entry: the transaction's dropped ones leave its known referrers,
    /// which are taken first (no lookup: each still references the extent unless it dropped
    /// it); when they are not enough the cursor moves on over the subvolume ids, looking up each
    /// candidate, and every referrer it meets joins the known ones. Then the acquired ones
    /// join. The walk never goes back, so over every commit each id is looked at once per
    /// extent (only ids that can be candidates: <see cref="NextPossibleCandidate"/>); and it
    /// stops at <paramref name="enough"/>, so the known ones stay few.
    /// </summary>
    private List<ulong> FromEntry(ReferrerEntries.Entry e, int enough)
    {
        var found = _found;
        int before = e.Count;
        fs.ReferrerEntries.Changed(bytenr, e); // its item is rewritten by this commit
        foreach (var d in dropped) e.Remove(d);
        if (e.Sides != null) ApplyToSides(e.Sides);
        foreach (var k in e.Known)
        {
            if (found.Count >= enough) break;
            if (Array.IndexOf(acquired, k) < 0) found.Add(k);
        }
        ulong top = fs.HighestSubvolumeId;
        while (found.Count < enough && e.Cursor < top)
        {
            // Past the last id that can be a candidate, every id up to the top has been looked at.
            if (!NextPossibleCandidate(e.Cursor, out ulong c) || c > top) { e.Cursor = top; break; }
            e.Cursor = c;
            fs.Stats.EntryIdsWalked++;
            // A known one above the cursor (it joined by a transition) is in the list already.
            if (Decided(c) || e.Contains(c) || !IsCandidate(c) || !Holds(c)) continue;
            e.Add(c);
            found.Add(c);
        }
        _entryComplete = e.Cursor >= top;
        foreach (var a in acquired) if (!e.Contains(a)) e.Add(a);
        if (_entryComplete && e.Count == 0)
        {
            fs.ReferrerEntries.Forget(bytenr); // no one references it: the extent is going
            _entry = null;
            return found;
        }
        if (!fs.ReferrerEntries.Resized(bytenr, before, e)) _entry = null; // dropped: too many to keep
        return found;
    }

    /// <summary>The transaction's transitions, applied to the extent's group sides as to its
    /// entry: the dropped ones leave, the acquired ones on a side join it.</summary>
    private void ApplyToSides(List<ReferrerEntries.GroupSide> sides)
    {
        foreach (var s in sides)
        {
            foreach (var d in dropped) s.Remove(d);
            if (acquired.Length == 0) continue;
            var members = fs.Quota.SortedMembers(s.Group);
            foreach (var a in acquired)
                if ((members.BinarySearch(a) >= 0) == s.Inside && !s.Contains(a)) s.Add(a);
        }
    }

    /// <summary>
    /// Whether a subvolume other than the acquired and dropped ones and <paramref name="skip1"/>
    /// and <paramref name="skip2"/> (already known) references the extent and is
    /// (<paramref name="inside"/>) or is not a member of group <paramref name="id"/>. Stops at
    /// the first found. It walks whichever is smaller: the level-0 groups on the side asked
    /// about (each checked for being a candidate by walking up its lineage), or the
    /// candidates (each checked for membership before any lookup). The subvolume that last
    /// answered yes to the same question in this commit is asked first: extents let go of
    /// together were mostly inherited together, so with a group of half the snapshots, asked
    /// "does anyone outside reference it?", the first extent walks the half inside and the
    /// others cost one lookup each.
    /// </summary>
    public bool AnyOther(ulong id, HashSet<ulong> members, bool inside, ulong skip1, ulong skip2)
    {
        var question = (id, inside);
        // Holds is the truth (the subvolume's own EXTENT_OWNER_REF), and memberships cannot
        // change during the commit, so a witness that still holds the extent answers.
        if (_witness.TryGetValue(question, out ulong w) && w != skip1 && w != skip2 && !Decided(w) && Holds(w)) return true;
        int level0 = fs.Quota.Level0Count, sideCount = inside ? members.Count : level0 - members.Count;
        bool sideIsSmall = sideCount * 2 <= level0;
        // An entry whose cursor is at the top names every referrer: no lookups, and never more
        // than the candidates.
        if (_entry != null && _entryComplete && (!sideIsSmall || _entry.Count <= sideCount))
        {
            foreach (var c in _entry.Known)
            {
                if (c == skip1 || c == skip2 || Decided(c)) continue;
                if (members.Contains(Qgroups.ForSubvolume(c)) == inside) return true;
            }
            return false;
        }
        // An extent with an entry is asked from its side of the group; one without gets them
        // once a walk passes over ReferrerEntryAfter subvolumes that no longer reference it.
        if (_entry != null) return FromSide(id, members, inside, skip1, skip2);
        if (fs.Options.ReferrerEntryAfter <= 0) return FromNewEntry(id, members, inside, skip1, skip2);
        int passed = 0;
        if (sideIsSmall)
        {
            // The outside is worked out only when it is the smaller side (cached until
            // relations change): with a group of most snapshots it is a few subvolumes.
            foreach (var q in inside ? members : fs.Quota.Level0Outside(id))
            {
                ulong c = QgroupId.Id(q);
                if (c == skip1 || c == skip2 || Decided(c) || !IsCandidate(c)) continue;
                if (Holds(c)) { _witness[question] = c; return true; }
                if (++passed >= fs.Options.ReferrerEntryAfter) return FromNewEntry(id, members, inside, skip1, skip2);
            }
            return false;
        }
        // Both sides are big. Asked about the members, the walk skips every candidate above the
        // group's highest member id: a group of the older snapshots, asked about an extent
        // written after them, is answered "no" without walking the newer ones.
        StartCandidates(inside ? fs.Quota.MemberBound(id) : ulong.MaxValue);
        while (NextCandidate(out ulong c))
        {
            fs.Stats.GroupCandidatesWalked++;
            if (c == skip1 || c == skip2 || Decided(c) || members.Contains(Qgroups.ForSubvolume(c)) != inside) continue;
            if (Holds(c)) { _witness[question] = c; return true; }
            if (++passed >= fs.Options.ReferrerEntryAfter) return FromNewEntry(id, members, inside, skip1, skip2);
        }
        return false;
    }

    /// <summary><see cref="FromSide"/> for an extent given its entry now.</summary>
    private bool FromNewEntry(ulong id, HashSet<ulong> members, bool inside, ulong skip1, ulong skip2)
    {
        _entry = StartEntry();
        return FromSide(id, members, inside, skip1, skip2);
    }

    /// <summary>
    /// <see cref="AnyOther"/> from the extent's entry for that side of the group
    /// (<see cref="ReferrerEntries.GroupSide"/>): its known referrers first, then its cursor
    /// moves on over the ids on that side only (the group's members in id order, or the
    /// possible candidates that are not members), looking each up, and every referrer met joins
    /// the known ones. It stops at the first one that answers; at the top, the known ones are
    /// every referrer on that side, so a "no" costs no lookup until a new subvolume comes. Over
    /// all commits each id on the side is looked at once per extent, whatever order the
    /// members let go of it in (asked in set order, the members that already had cost a
    /// lookup each, every commit).
    /// </summary>
    private bool FromSide(ulong id, HashSet<ulong> members, bool inside, ulong skip1, ulong skip2)
    {
        var entry = _entry!;
        fs.ReferrerEntries.Changed(bytenr, entry); // its side moves: its item is rewritten
        var side = fs.ReferrerEntries.SideOf(bytenr, entry, id, inside, fs.Quota.Epoch, out bool fresh);
        if (fresh) fs.Stats.GroupSidesStarted++;
        foreach (var c in side.Known)
            if (c != skip1 && c != skip2 && !Decided(c)) return true;
        ulong top = fs.HighestSubvolumeId;
        var sorted = inside ? fs.Quota.SortedMembers(id) : null;
        bool found = false; // the known ones above answered no: only a referrer the walk meets can
        while (side.Cursor < top)
        {
            if (!NextOnSide(side.Cursor, sorted, members, out ulong c) || c > top) { side.Cursor = top; break; }
            side.Cursor = c;
            fs.Stats.GroupCandidatesWalked++;
            // An acquired one references it (it joins a side made in this commit here; an
            // older side's known ones have it already) but is no answer; a dropped one does not.
            if (side.Contains(c) || Array.IndexOf(dropped, c) >= 0) continue;
            bool acquiredNow = Array.IndexOf(acquired, c) >= 0;
            if (!acquiredNow && (!IsCandidate(c) || !Holds(c))) continue;
            side.Add(c);
            found = !acquiredNow && c != skip1 && c != skip2;
            if (found) break;
        }
        if (side.Count > ReferrerEntries.MaxKnown) fs.ReferrerEntries.DropSide(entry, side);
        return found;
    }

    /// <summary>The next id above <paramref name="after"/> on one side of a group: the next
    /// member (<paramref name="sortedMembers"/>, ascending), or the next possible candidate
    /// that is not one.</summary>
    private bool NextOnSide(ulong after, List<ulong>? sortedMembers, HashSet<ulong> members, out ulong c)
    {
        if (sortedMembers != null)
        {
            int i = sortedMembers.BinarySearch(after + 1);
            if (i < 0) i = ~i;
            c = i < sortedMembers.Count ? sortedMembers[i] : 0;
            return i < sortedMembers.Count;
        }
        while (NextPossibleCandidate(after, out c))
        {
            if (!members.Contains(Qgroups.ForSubvolume(c))) return true;
            after = c;
        }
        return false;
    }

    /// <summary>The candidates, each once, lazily (<see cref="NextCandidate"/> until false, or
    /// until the caller has seen enough): each origin, then its snapshots taken since it had
    /// the extent, depth first in the order taken.</summary>
    private void StartCandidates(ulong bound = ulong.MaxValue)
    {
        _origin = -2; // the next call starts the writer's lineage
        _seen.Clear();
        _bound = bound;
    }

    /// <summary>Candidates above this id are not wanted (<see cref="Lineage.DescendantWalk.Next"/>).</summary>
    private ulong _bound = ulong.MaxValue;

    private bool NextCandidate(out ulong c)
    {
        // One origin's lineage never repeats a subvolume; only several origins can.
        bool dedupe = shared.Count > 0;
        while (true)
        {
            if (_origin >= -1 && _walk.Next(out c, _bound))
            {
                if (!dedupe || _seen.Add(c)) return true;
                continue;
            }
            if (++_origin >= shared.Count) { c = 0; return false; }
            var (root, since, until) = _origin < 0 ? writer : shared[_origin];
            // Its snapshots have higher ids still: none of them is wanted either.
            if (root > _bound && fs.Lineage.IdsFollowCreation) continue;
            _walk.Start(root, since, until);
            c = root;
            if (!dedupe || _seen.Add(c)) return true;
        }
    }

    /// <summary>The lowest id above <paramref name="after"/> that can reference the extent: an
    /// origin (its writer, a clone's target) or a snapshot. Any other subvolume could have it
    /// only by a clone, which makes it an origin; so the ids of subvolumes deleted or never
    /// snapshotted are stepped over unseen, however sparse the ids have grown.</summary>
    private bool NextPossibleCandidate(ulong after, out ulong c)
    {
        bool any = fs.Lineage.NextSnapshotAbove(after, out c);
        if (writer.Root > after && (!any || writer.Root < c)) (c, any) = (writer.Root, true);
        foreach (var o in shared)
            if (o.Root > after && (!any || o.Root < c)) (c, any) = (o.Root, true);
        return any;
    }

    private bool IsCandidate(ulong c)
    {
        if (fs.Lineage.IsDescendantOrSelf(c, writer.Root, writer.Since, writer.Until)) return true;
        foreach (var (root, since, until) in shared)
            if (fs.Lineage.IsDescendantOrSelf(c, root, since, until)) return true;
        return false;
    }

    /// <summary>Already known from the transitions (a short list: a linear search).</summary>
    private bool Decided(ulong c) => Array.IndexOf(acquired, c) >= 0 || Array.IndexOf(dropped, c) >= 0;

    /// <summary>The subvolume trees looked up in this commit (they cannot come or go while
    /// it runs): the trees' map is behind a lock that every probe took.</summary>
    private readonly Dictionary<ulong, BTree?> _trees = new();

    /// <summary>Per question of <see cref="AnyOther"/> (group, side), the subvolume that last
    /// answered yes in this commit.</summary>
    private readonly Dictionary<(ulong Group, bool Inside), ulong> _witness = new();

    private bool Holds(ulong c)
    {
        ref var tree = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_trees, c, out bool known);
        if (!known) tree = fs.FsTree(c);
        if (tree is not { } t) return false;
        fs.Stats.OwnerRefProbes++; // only the commit searches: no other writer
        return probe.Holds(t, bytenr);
    }
}

/// <summary>Where a subvolume can have an extent from: a subvolume that had it from
/// transaction <see cref="Since"/> (its writer from its birth, a clone's target from the
/// clone) to <see cref="Until"/> (when it let go of it, ORIGIN_DROP; the maximum while it
/// holds it), and the snapshots of it taken in between.</summary>
internal readonly record struct Origin(ulong Root, ulong Since, ulong Until = ulong.MaxValue);

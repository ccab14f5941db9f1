using Reservoir.Engine.Quota;
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
/// Used only inside the commit, while no handle is open and no tree, lineage or qgroup
/// relation can change.
/// </summary>
internal sealed class ReferrerSearch(FsInfo fs, OwnerRefProbe probe, ulong bytenr, ulong owner, ulong gen,
    List<(ulong Root, ulong Since)> shared, List<ulong> acquired, List<ulong> dropped)
{
    public List<ulong> Acquired => acquired;
    public List<ulong> Dropped => dropped;

    /// <summary>The extent's whole set of referrers, when the commit keeps one for it
    /// (<see cref="ReferrerSets"/>); set by <see cref="Referrers"/>.</summary>
    private ReferrerSets.Entry? _set;

    /// <summary>
    /// The subvolumes that reference the extent now, in a fixed order (the acquired ones, then
    /// the writer, its snapshots in the order taken, then each SHARED_ROOT_REF likewise),
    /// stopping after <paramref name="enough"/>. Called once per extent and commit: with a
    /// kept set it applies the transaction's transitions to it. A search that passes over
    /// <see cref="MountOptions.ReferrerSetAfter"/> candidates that no longer reference the
    /// extent goes on to find every referrer and keeps the set.
    /// </summary>
    public List<ulong> Referrers(int enough)
    {
        var found = new List<ulong>(acquired);
        _set = fs.ReferrerSets.Find(bytenr, owner, gen);
        if (_set != null)
        {
            BringUpToDate(_set);
            foreach (var c in _set.Holders)
            {
                if (found.Count >= enough) break;
                if (!acquired.Contains(c)) found.Add(c);
            }
            return found;
        }
        if (found.Count >= enough) return found;
        if (fs.Options.ReferrerSetAfter <= 0) return KeepWholeSet(enough);
        int passed = 0;
        foreach (var c in Candidates())
        {
            if (Decided(c)) continue;
            if (!Holds(c))
            {
                if (++passed >= fs.Options.ReferrerSetAfter) return KeepWholeSet(enough);
                continue;
            }
            found.Add(c);
            if (found.Count >= enough) break;
        }
        return found;
    }

    /// <summary>Every referrer, in <see cref="Referrers"/>' order, kept as the extent's set;
    /// returns the first <paramref name="enough"/>.</summary>
    private List<ulong> KeepWholeSet(int enough)
    {
        var ordered = new List<ulong>(acquired);
        foreach (var c in Candidates())
            if (!Decided(c) && Holds(c)) ordered.Add(c);
        _set = new ReferrerSets.Entry(owner, gen, [.. ordered], fs.HighestSubvolumeId);
        fs.ReferrerSets.Keep(bytenr, _set);
        fs.Stats.ReferrerSetsKept++;
        return ordered.Count > enough ? ordered.GetRange(0, enough) : ordered;
    }

    /// <summary>
    /// Applies the transaction to a kept set: the subvolumes made since it was last brought up
    /// to date are looked up (a snapshot of a referrer inherits the extent without a
    /// transition), then the acquired ones join and the dropped ones leave.
    /// </summary>
    private void BringUpToDate(ReferrerSets.Entry e)
    {
        int before = e.Holders.Count;
        ulong top = fs.HighestSubvolumeId;
        for (ulong id = e.SeenUpTo + 1; id <= top; id++)
            if (!Decided(id) && IsCandidate(id) && Holds(id)) e.Holders.Add(id);
        e.SeenUpTo = Math.Max(e.SeenUpTo, top);
        foreach (var a in acquired) e.Holders.Add(a);
        foreach (var d in dropped) e.Holders.Remove(d);
        if (e.Holders.Count == 0) fs.ReferrerSets.Forget(bytenr); // the extent is going
        else fs.ReferrerSets.Resized(before, e);
    }

    /// <summary>
    /// Whether a subvolume other than the acquired and dropped ones and <paramref name="skip1"/>
    /// and <paramref name="skip2"/> (already known) references the extent and is
    /// (<paramref name="inside"/>) or is not a member of group <paramref name="id"/>. Stops at
    /// the first found. It walks whichever is smaller: the level-0 groups on the side asked
    /// about (each checked for being a candidate by walking up its lineage), or the
    /// candidates (each checked for membership before any lookup).
    /// </summary>
    public bool AnyOther(ulong id, HashSet<ulong> members, bool inside, ulong skip1, ulong skip2)
    {
        var side = inside ? members : fs.Quota.Level0Outside(id);
        bool sideIsSmall = side.Count * 2 <= fs.Quota.Level0Count;
        // A kept set names every referrer: no lookups, and never more than the candidates.
        if (_set != null && (!sideIsSmall || _set.Holders.Count <= side.Count))
        {
            foreach (var c in _set.Holders)
            {
                if (c == skip1 || c == skip2 || Decided(c)) continue;
                if (members.Contains(Qgroups.ForSubvolume(c)) == inside) return true;
            }
            return false;
        }
        if (sideIsSmall)
        {
            foreach (var q in side)
            {
                ulong c = QgroupId.Id(q);
                if (c == skip1 || c == skip2 || Decided(c) || !IsCandidate(c)) continue;
                if (Holds(c)) return true;
            }
            return false;
        }
        foreach (var c in Candidates())
        {
            if (c == skip1 || c == skip2 || Decided(c) || members.Contains(Qgroups.ForSubvolume(c)) != inside) continue;
            if (Holds(c)) return true;
        }
        return false;
    }

    /// <summary>The candidates, each once, lazily: each origin, then its snapshots taken since
    /// it had the extent, depth first in the order taken.</summary>
    private IEnumerable<ulong> Candidates()
    {
        // One origin's lineage never repeats a subvolume; only several origins can.
        var seen = shared.Count > 0 ? new HashSet<ulong>() : null;
        for (int s = -1; s < shared.Count; s++)
        {
            var (root, since) = s < 0 ? (owner, gen) : shared[s];
            if (seen == null || seen.Add(root)) yield return root;
            if (!fs.Lineage.HasSnapshots(root)) continue;
            foreach (var c in fs.Lineage.Descendants(root, since))
                if (seen == null || seen.Add(c)) yield return c;
        }
    }

    private bool IsCandidate(ulong c)
    {
        if (fs.Lineage.IsDescendantOrSelf(c, owner, gen)) return true;
        foreach (var (root, since) in shared)
            if (fs.Lineage.IsDescendantOrSelf(c, root, since)) return true;
        return false;
    }

    /// <summary>Already known from the transitions (a short list: a linear search).</summary>
    private bool Decided(ulong c) => acquired.Contains(c) || dropped.Contains(c);

    private bool Holds(ulong c)
    {
        if (fs.FsTree(c) is not { } t) return false;
        fs.Stats.OwnerRefProbes++; // only the commit searches: no other writer
        return probe.Holds(t, bytenr);
    }
}

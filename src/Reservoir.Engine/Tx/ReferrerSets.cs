namespace Reservoir.Engine.Tx;

/// <summary>
/// The whole set of subvolumes referencing a data extent, kept in memory for extents whose
/// referrer search was long (docs/SNAPSHOTS.md §3, "Cost"). The search stops after two
/// referrers, but it passes over every candidate that no longer references the extent: N
/// writable snapshots of a golden image that each rewrite the same file let go of its extent
/// one after the other, and the k-th commit would look at the k−1 that already did, O(N²) in
/// all. Once a search passes over <see cref="MountOptions.ReferrerSetAfter"/> such candidates
/// the commit enumerates every candidate once and keeps the set; from then on each commit
/// that changes who references the extent updates the set from its transitions, and looks
/// only at the subvolumes made since the set was last brought up to date: O(1) lookups per
/// change, O(N) once.
///
/// Why the set stays exact: a subvolume starts or stops referencing an extent either through
/// a transition the commit sees (a write, a clone, a punch, the cleaner dropping a deleted
/// subvolume's references; a snapshot taken in the transaction repeats its source's), or by
/// being created as a snapshot of a referrer, which gives it an id above every id the set has
/// seen (ids are never reused on a mount). Nothing else changes EXTENT_OWNER_REFs while quotas
/// are on, and turning quotas off or on clears every set. An entry is keyed by the extent's
/// address and checked against its writer and birth generation, so an address freed and
/// reused for a new extent never meets the old extent's set.
///
/// Used only inside the commit (which is serial: the commit mutex), and by quota enable and
/// disable under the same mutex: no lock of its own. Bounded: beyond <see cref="MaxIds"/>
/// subvolume ids in all, the least recently used sets go (a dropped set only costs the next
/// search its length again).
/// </summary>
internal sealed class ReferrerSets
{
    public const int MaxIds = 1 << 20;

    internal sealed class Entry(ulong owner, ulong generation, HashSet<ulong> holders, ulong seenUpTo)
    {
        public readonly ulong Owner = owner, Generation = generation;
        /// <summary>Every subvolume that references the extent, as of the last commit that used it.</summary>
        public readonly HashSet<ulong> Holders = holders;
        /// <summary>The highest subvolume id that existed when the set was last brought up to date.</summary>
        public ulong SeenUpTo = seenUpTo;
        public long LastUsed;
    }

    private readonly Dictionary<ulong, Entry> _entries = new();
    private long _ids, _clock;

    public int Count => _entries.Count;

    /// <summary>The set kept for the extent at <paramref name="bytenr"/> written by
    /// <paramref name="owner"/> in <paramref name="generation"/>, if any.</summary>
    public Entry? Find(ulong bytenr, ulong owner, ulong generation)
    {
        if (!_entries.TryGetValue(bytenr, out var e)) return null;
        if (e.Owner != owner || e.Generation != generation)
        {
            Forget(bytenr);
            return null;
        }
        e.LastUsed = ++_clock;
        return e;
    }

    public void Keep(ulong bytenr, Entry e)
    {
        Forget(bytenr);
        e.LastUsed = ++_clock;
        _entries[bytenr] = e;
        _ids += e.Holders.Count;
        if (_ids > MaxIds) Trim();
    }

    /// <summary>Call after changing an entry's set: keeps the id count (and the bound) right.</summary>
    public void Resized(int before, Entry e)
    {
        _ids += e.Holders.Count - before;
        if (_ids > MaxIds) Trim();
    }

    public void Forget(ulong bytenr)
    {
        if (_entries.Remove(bytenr, out var old)) _ids -= old.Holders.Count;
    }

    public void Clear()
    {
        _entries.Clear();
        _ids = 0;
    }

    /// <summary>Drops the least recently used sets until at most half the bound is held.</summary>
    private void Trim()
    {
        foreach (var (bytenr, _) in _entries.OrderBy(kv => kv.Value.LastUsed).ToList())
        {
            if (_ids <= MaxIds / 2) break;
            Forget(bytenr);
        }
    }
}

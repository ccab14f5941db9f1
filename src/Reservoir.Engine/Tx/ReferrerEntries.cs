namespace Reservoir.Engine.Tx;

/// <summary>
/// Where the commit's referrer search for a data extent got to, kept in memory for extents
/// whose search was long (docs/SNAPSHOTS.md §3, "Cost"). The search stops after two referrers,
/// but it passes over every candidate that no longer references the extent: N writable
/// snapshots of a golden image that each rewrite the same file let go of its extent one after
/// the other, and the k-th commit would look at the k−1 that already did, O(N²) in all. Once a
/// search passes over <see cref="MountOptions.ReferrerEntryAfter"/> such candidates, the extent
/// gets an entry: a cursor over subvolume ids, and the referrers known (<see cref="Entry.Known"/>),
/// which are every subvolume with an id up to the cursor that references the extent (and
/// perhaps some above it). A later search takes the known ones first and moves the cursor on
/// only when they are not enough, so over all commits the ids are walked once per extent, and
/// what is kept per extent is a cursor and the few referrers the searches needed, not every
/// referrer (a whole set per extent made N writable snapshots × F extents cost N·F ids).
///
/// Why the entry stays right: a subvolume starts or stops referencing an extent either through
/// a transition the commit sees (a write, a clone, a punch, the cleaner dropping a deleted
/// subvolume's references; a snapshot taken in the transaction repeats its source's), which
/// the search applies to the known ones, or by being created as a snapshot of a referrer,
/// which gives it an id above every id in use (ids are never reused on a mount), so above the
/// cursor, where the walk will meet it. Nothing else changes EXTENT_OWNER_REFs while quotas are
/// on, and turning quotas off or on clears every entry. An entry is keyed by the extent's
/// address and checked against its writer and birth generation, so an address freed and reused
/// for a new extent never meets the old extent's entry.
///
/// The questions about groups of level 1 and above keep the same kind of cursor per group and
/// side asked about (<see cref="GroupSide"/>), hanging off the extent's entry.
///
/// Used only inside the commit (which is serial: the commit mutex), and by quota enable and
/// disable under the same mutex: no lock of its own. Bounded: at most <see cref="MaxEntries"/>
/// entries (the least recently used go first) and <see cref="MaxKnown"/> referrers in one
/// (an extent cloned into more subvolumes than that is searched afresh); a dropped entry only
/// costs the next search its walk again.
/// </summary>
internal sealed class ReferrerEntries
{
    public const int MaxEntries = 1 << 18, MaxKnown = 64;

    /// <summary>Group sides kept per entry (one per group and side asked about for the extent:
    /// with tenants' groups of clones, each group in turn) and in all.</summary>
    public const int MaxSides = 64, MaxSidesTotal = 1 << 18;

    /// <summary>A cursor over subvolume ids and the referrers known: every one with an id up to
    /// <see cref="Cursor"/> among those the cursor walks (all of them, or one side of a group),
    /// and perhaps some above it that joined by a transition.</summary>
    internal abstract class Walked(ulong cursor)
    {
        /// <summary>Every subvolume the walk steps over with an id up to this one has been looked at.</summary>
        public ulong Cursor = cursor;
        private ulong[] _known = new ulong[4];
        public int Count { get; private set; }

        /// <summary>Referrers as of the last commit that used this: a few, in no order.</summary>
        public ReadOnlySpan<ulong> Known => _known.AsSpan(0, Count);

        public bool Contains(ulong id) => Known.IndexOf(id) >= 0;

        public void Add(ulong id)
        {
            if (Count == _known.Length) Array.Resize(ref _known, Count * 2);
            _known[Count++] = id;
        }

        public void Remove(ulong id)
        {
            int i = Known.IndexOf(id);
            if (i >= 0) _known[i] = _known[--Count];
        }

        protected void RestartAt(ulong cursor)
        {
            Cursor = cursor;
            Count = 0;
        }
    }

    internal sealed class Entry(ulong owner, ulong generation, ulong cursor) : Walked(cursor)
    {
        public readonly ulong Owner = owner, Generation = generation;
        public long LastUsed;

        /// <summary>The group sides asked about for this extent (<see cref="GroupSide"/>), the
        /// most recently used last; null until one is.</summary>
        public List<GroupSide>? Sides;

        /// <summary>The entry for the members (<paramref name="inside"/>) or the rest of group
        /// <paramref name="group"/>, made (with its cursor at the start) if there is none or the
        /// one there is from before a membership changed (another <paramref name="epoch"/>).</summary>
        internal GroupSide Side(ulong group, bool inside, long epoch, out bool fresh)
        {
            Sides ??= new List<GroupSide>(2);
            fresh = false;
            for (int i = 0; i < Sides.Count; i++)
            {
                var s = Sides[i];
                if (s.Group != group || s.Inside != inside) continue;
                if (i != Sides.Count - 1) { Sides.RemoveAt(i); Sides.Add(s); }
                if (s.Epoch != epoch) { s.Restart(epoch); fresh = true; }
                return s;
            }
            if (Sides.Count == MaxSides) Sides.RemoveAt(0); // the least recently used: only its walk is lost
            var n = new GroupSide(group, inside, epoch);
            Sides.Add(n);
            fresh = true;
            return n;
        }
    }

    /// <summary>
    /// One side of a group (its level-0 members, or every other subvolume) for one extent: the
    /// commit's question "does a member (or a non-member) other than the two referrers found
    /// reference it?" (<see cref="ReferrerSearch.AnyOther"/>). Its cursor walks only the ids on
    /// that side, each once over all commits; the known ones are the referrers on that side up to
    /// the cursor. Kept right like the entry's (the transitions the commit applies to the
    /// entry apply to its sides), and valid for one <see cref="Quota.Qgroups.Epoch"/>: a
    /// membership made or ended by hand could put a referrer on a side below the cursor.
    /// </summary>
    internal sealed class GroupSide(ulong group, bool inside, long epoch) : Walked(0)
    {
        public readonly ulong Group = group;
        public readonly bool Inside = inside;
        public long Epoch = epoch;

        public void Restart(long epoch)
        {
            RestartAt(0);
            Epoch = epoch;
        }
    }

    private readonly Dictionary<ulong, Entry> _entries = new();
    private long _ids, _clock, _sides;

    public int Count => _entries.Count;

    /// <summary>Group sides kept in all the entries.</summary>
    public long Sides => _sides;

    /// <summary><see cref="Entry.Side"/> of a kept entry, counted against <see cref="MaxSidesTotal"/>
    /// (past it the least recently used entries go, with their sides).</summary>
    public GroupSide SideOf(ulong bytenr, Entry e, ulong group, bool inside, long epoch, out bool fresh)
    {
        int before = e.Sides?.Count ?? 0;
        var s = e.Side(group, inside, epoch, out fresh);
        _sides += e.Sides!.Count - before;
        if (_sides > MaxSidesTotal)
        {
            Trim();
            if (!_entries.ContainsKey(bytenr)) Keep(bytenr, e); // still in use by this commit
        }
        return s;
    }

    /// <summary>Drops one side of an entry (it grew past <see cref="MaxKnown"/>).</summary>
    public void DropSide(Entry e, GroupSide s)
    {
        if (e.Sides != null && e.Sides.Remove(s)) _sides--;
    }

    /// <summary>Referrers known in all the entries.</summary>
    public long Ids => _ids;

    /// <summary>The entry kept for the extent at <paramref name="bytenr"/> written by
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
        _ids += e.Count;
        _sides += e.Sides?.Count ?? 0;
        if (_entries.Count > MaxEntries) Trim();
    }

    /// <summary>Call after changing an entry's referrers (<paramref name="before"/>: how many it
    /// had): keeps the count right, and drops an entry grown past <see cref="MaxKnown"/>.
    /// Returns whether the entry is still kept.</summary>
    public bool Resized(ulong bytenr, int before, Entry e)
    {
        _ids += e.Count - before;
        if (e.Count <= MaxKnown) return true;
        Forget(bytenr);
        return false;
    }

    public void Forget(ulong bytenr)
    {
        if (!_entries.Remove(bytenr, out var old)) return;
        _ids -= old.Count;
        _sides -= old.Sides?.Count ?? 0;
    }

    public void Clear()
    {
        _entries.Clear();
        _ids = _sides = 0;
    }

    /// <summary>Drops the least recently used entries until half of each bound is left.</summary>
    private void Trim()
    {
        foreach (var (bytenr, _) in _entries.OrderBy(kv => kv.Value.LastUsed).ToList())
        {
            if (_entries.Count <= MaxEntries / 2 && _sides <= MaxSidesTotal / 2) break;
            Forget(bytenr);
        }
    }
}

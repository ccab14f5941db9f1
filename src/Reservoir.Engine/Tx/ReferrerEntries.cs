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
/// which gives it an id above every id handed out (never handed out again while quotas are
/// on, across mounts too: QGROUP_STATUS records them), so above the cursor, where the walk will
/// meet it. Nothing else changes EXTENT_OWNER_REFs while quotas are
/// on, and turning quotas off or on clears every entry. An entry is keyed by the extent's
/// address and checked against its writer and birth generation, so an address freed and reused
/// for a new extent never meets the old extent's entry.
///
/// The questions about groups of level 1 and above keep the same kind of cursor per group and
/// side asked about (<see cref="GroupSide"/>), hanging off the extent's entry.
///
/// The commit that changes an entry writes it to the extent tree (a REFERRER_ENTRY item with
/// the entry's most recently used group sides, <see cref="FsInfo"/>'s WriteReferrerEntries), so
/// a later mount, or this one after memory let the entry go, reads it back when the extent is
/// next asked about instead of walking its ids again (docs/SNAPSHOTS.md §3, "Across mounts").
/// Here: which entries changed since the last commit (<see cref="Changed"/>) and which items are
/// to go (<see cref="ItemGone"/>).
///
/// Used only inside the commit (which is serial: the commit mutex), and by quota enable and
/// disable under the same mutex: no lock of its own. Bounded in memory: at most
/// <see cref="MaxEntries"/> entries (the least recently used go first; their items stay) and
/// <see cref="MaxKnown"/> referrers in one (an extent cloned into more subvolumes than that is
/// searched afresh, and its item goes).
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
        /// <summary>Its REFERRER_ENTRY item exists (loaded from it, or written by a commit).</summary>
        public bool OnDisk;

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

    /// <summary>Entries changed since the last commit wrote them (kept here even when dropped
    /// from memory meanwhile, so that their items are written), and addresses whose item is to
    /// be deleted (the entry was dropped or is wrong).</summary>
    private readonly Dictionary<ulong, Entry> _changed = new();
    private readonly HashSet<ulong> _gone = new();

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
            if (!_entries.ContainsKey(bytenr)) Hold(bytenr, e); // still in use by this commit
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
        if (!_entries.TryGetValue(bytenr, out var e))
        {
            // Dropped from memory since it changed: it is still the newest, not its item.
            if (!_changed.TryGetValue(bytenr, out e)) return null;
            Hold(bytenr, e);
        }
        if (e.Owner != owner || e.Generation != generation)
        {
            Forget(bytenr);
            return null;
        }
        e.LastUsed = ++_clock;
        return e;
    }

    /// <summary>A new entry for the extent (its item, if it has one, is rewritten).</summary>
    public void Keep(ulong bytenr, Entry e)
    {
        Forget(bytenr);
        Changed(bytenr, e);
        Hold(bytenr, e);
    }

    /// <summary>An entry read from its item (unchanged until a search changes it).</summary>
    public void KeepLoaded(ulong bytenr, Entry e)
    {
        e.OnDisk = true;
        Hold(bytenr, e);
    }

    /// <summary>Notes that the entry changed (or may have): the commit writes its item.</summary>
    public void Changed(ulong bytenr, Entry e)
    {
        _changed[bytenr] = e;
        _gone.Remove(bytenr);
    }

    /// <summary>Notes that the extent's item, if any, is to go (an item that was wrong, or one
    /// whose entry the commit cannot keep).</summary>
    public void ItemGone(ulong bytenr)
    {
        _changed.Remove(bytenr);
        _gone.Add(bytenr);
    }

    private void Hold(ulong bytenr, Entry e)
    {
        e.LastUsed = ++_clock;
        _entries[bytenr] = e;
        _ids += e.Count;
        _sides += e.Sides?.Count ?? 0;
        if (_entries.Count > MaxEntries) Trim();
    }

    /// <summary>What the commit writes: the entries changed since the last one and the
    /// addresses whose item goes. Both lists start over.</summary>
    public (List<(ulong Bytenr, Entry Entry)> Changed, List<ulong> Gone) TakeWrites()
    {
        var changed = _changed.Select(kv => (kv.Key, kv.Value)).ToList();
        var gone = _gone.ToList();
        _changed.Clear();
        _gone.Clear();
        return (changed, gone);
    }

    public bool HasWrites => _changed.Count > 0 || _gone.Count > 0;

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

    /// <summary>The extent's entry is no more (no one references the extent, or it grew past
    /// <see cref="MaxKnown"/>, or it was another extent's): out of memory, and its item goes.</summary>
    public void Forget(ulong bytenr)
    {
        bool had = _changed.ContainsKey(bytenr);
        if (_entries.TryGetValue(bytenr, out var old)) had |= old.OnDisk;
        Drop(bytenr);
        if (had) ItemGone(bytenr);
    }

    /// <summary>The entry of an extent freed by this commit (its items went with it).</summary>
    public void DropFreed(ulong bytenr, Entry e)
    {
        if (_entries.TryGetValue(bytenr, out var kept) && kept == e) Drop(bytenr);
    }

    /// <summary>A relocation moved the extent (its item went with it, under the new address):
    /// the entry kept under the old one goes from memory, and the next search loads the item.
    /// Only between commits, with nothing to write.</summary>
    public void DropFromMemory(ulong bytenr)
    {
        if (_changed.ContainsKey(bytenr) || _gone.Contains(bytenr)) throw new InvalidOperationException($"referrer entry of extent {bytenr} has a write pending");
        Drop(bytenr);
    }

    /// <summary>Out of memory only: its item, if it has one, stays right, and the next search
    /// loads it again.</summary>
    private void Drop(ulong bytenr)
    {
        if (!_entries.Remove(bytenr, out var old)) return;
        _ids -= old.Count;
        _sides -= old.Sides?.Count ?? 0;
    }

    /// <summary>Forgets every entry, in memory and to be written (quotas turned off or on: the
    /// caller deletes every REFERRER_ENTRY item).</summary>
    public void Clear()
    {
        _entries.Clear();
        _changed.Clear();
        _gone.Clear();
        _ids = _sides = 0;
    }

    /// <summary>Drops the least recently used entries from memory until half of each bound is
    /// left (their items stay; a changed one is still written by the commit).</summary>
    private void Trim()
    {
        foreach (var (bytenr, _) in _entries.OrderBy(kv => kv.Value.LastUsed).ToList())
        {
            if (_entries.Count <= MaxEntries / 2 && _sides <= MaxSidesTotal / 2) break;
            Drop(bytenr);
        }
    }
}

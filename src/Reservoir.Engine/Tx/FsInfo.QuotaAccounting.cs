using System.Runtime.InteropServices;
using Reservoir.Common;
using Reservoir.Engine.Quota;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Snapshot-aware quota accounting at commit (docs/SNAPSHOTS.md §3, SPEC.md §5.9). For each
/// extent some subvolume started or stopped referencing in the transaction, the commit finds
/// who references it now, looking only where a reference can be: the subvolume that wrote
/// the extent, subvolumes with a SHARED_ROOT_REF (they took it by a clone), and snapshots of
/// those taken since they had it; for each candidate one lookup of its EXTENT_OWNER_REF. At
/// level 0 the search stops as soon as the answer cannot change anyone's exclusive (two
/// referrers beyond the new ones), so the work per changed extent does not grow with the
/// number of snapshots sharing it.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>Turns the transaction's EXTENT_OWNER_REF transitions into qgroup numbers.
    /// Called by the commit, which holds the extent tree's write lock and no handle is open.</summary>
    private void AccountOwnerTransitions(TransHandle h)
    {
        var changes = h.Transaction.OwnerTransitions.Take(out var early);
        if (!Quota.Enabled) return;
        // The early accounting's answers count only if they were all found in the world the
        // commit sees (FsInfo.EarlyAccounting.cs); else every extent is worked out here.
        if (early != null && (early.Invalid || (early.Stamp is { } st && st != CurrentEarlyStamp()))) early = null;
        if (early is { Todo.Count: 0 })
        {
            // Everything was worked out early (the usual case): its sums and ORIGIN_DROPs are
            // the commit's whole accounting, applied as they are (the scratch below is not even
            // touched: inside the commit every structure costs its cache misses).
            Quota.Apply(early.Sums);
            NoteOriginDrops(early.OriginDrops, h.Transid);
            WriteEarlySharingItems(h, early);
            Stats.EarlyTaken += early.Worked;
        }
        else if (changes.Count > 0)
        {
            var scratch = _accounting ??= new AccountingScratch(this);
            try { AccountOwnerTransitions(h, changes, scratch, early); }
            finally { scratch.Reset(); } // holds no leaf or tree of this commit until the next
        }
        WritePendingOriginDrops(h);
    }

    private void AccountOwnerTransitions(TransHandle h, List<ExtentTransitions> changes, AccountingScratch scratch, EarlyAccounting? early)
    {
        var deltas = scratch.Deltas;
        var entries = CollectionsMarshal.AsSpan(changes);
        if (early != null)
        {
            // What the early accounting worked out and still holds: its sums, and the
            // ORIGIN_DROPs it found (noted first: an extent worked out again below may take
            // its origin's back).
            deltas.AddFrom(early.Sums);
            NoteOriginDrops(early.OriginDrops, h.Transid);
            WriteEarlySharingItems(h, early);
            Stats.EarlyTaken += early.Worked;
        }
        else h.Transaction.WithoutSharedRootRefs.Clear(); // filled again below for every extent
        // The rest: every entry, or only those the early accounting left (queued, changed
        // since, or not one of its cases).
        // First the common case, an extent written now by its subvolume alone (no snapshot of
        // it taken since, no clone): it is that subvolume's alone, summed per writer with no
        // search. An extent written in this transaction is known from the write itself (the
        // ledger's birth mark), else from its delayed-ref head; one that only lost referrers
        // was referenced before the transaction, so it is not new (freed addresses are pinned
        // until the commit, never reused within it). The rest are searched, in address order.
        var searched = scratch.Searched;
        ulong lastWriter = ulong.MaxValue;
        bool lastWriterSnapshotted = false;
        int count = early?.Todo.Count ?? entries.Length;
        for (int k = 0; k < count; k++)
        {
            int i = early != null ? early.Todo[k] : k;
            ref readonly var c = ref entries[i];
            if (c.IsEmpty) continue; // every transition cancelled
            if (early != null)
            {
                if (c.IsEarly) continue;
                Stats.EarlyLeftToCommit++;
                h.Transaction.WithoutSharedRootRefs.Remove(c.Bytenr); // worked out again below
            }
            var born = c.BornGeneration != 0 ? (c.BornOwner, c.BornGeneration)
                : c.AnyAcquired ? h.Transaction.Refs.NewDataExtent(c.Bytenr) : null;
            if (born is not var (owner, gen)) { searched.Add((i, 0, 0)); continue; }
            if (c.OnlyAcquiredBy(owner))
            {
                if (owner != lastWriter) (lastWriter, lastWriterSnapshotted) = (owner, Lineage.HasSnapshotsSince(owner, h.Transid));
                if (gen == h.Transid && !lastWriterSnapshotted)
                {
                    deltas.AddWrittenAlone(owner, c.NumBytes);
                    continue; // referenced, so not freed by this commit: WithoutSharedRootRefs need not know it
                }
            }
            searched.Add((i, owner, gen));
        }
        if (searched.Count > 0) AccountSearched(h, changes, scratch);
        Quota.Apply(deltas);
    }

    /// <summary>The items the clones the early accounting worked out change, as the commit's
    /// own search would (each extent's by the commit whose transaction took it): the ORIGIN_DROP
    /// an origin taking an extent back no longer has (<see cref="ForgetOriginDrop"/>), and the
    /// SHARED_ROOT_REF of a subvolume that took an extent by a clone, in address order.</summary>
    private void WriteEarlySharingItems(TransHandle h, EarlyAccounting early)
    {
        foreach (var (bytenr, o) in early.Reopened) ForgetOriginDrop(h, bytenr, o.Root, o.HasItem);
        var refs = early.SharedRootRefs;
        if (refs.Count == 0) return;
        Span<byte> buf = stackalloc byte[U64Item.Size];
        U64Item.Write(buf, h.Transid);
        foreach (var (bytenr, root) in refs.OrderBy(kv => kv.Key))
            ExtentTree.Put(h, new Key(bytenr, KeyTypes.SharedRootRef, root), buf);
    }

    /// <summary>The extents <see cref="AccountOwnerTransitions"/> must ask about, in address
    /// order, so that consecutive EXTENT_ITEMs and EXTENT_OWNER_REFs come from leaves already
    /// in hand (<see cref="BTree.SearchNear"/>, <see cref="OwnerRefProbe"/>).</summary>
    private void AccountSearched(TransHandle h, List<ExtentTransitions> changes, AccountingScratch scratch)
    {
        var (searched, deltas, search, noSharing, path) = (scratch.Searched, scratch.Deltas, scratch.Search, scratch.NoSharing, scratch.Path);
        var addresses = new ulong[searched.Count];
        for (int i = 0; i < addresses.Length; i++) addresses[i] = changes[searched[i].Index].Bytenr;
        var order = OwnerTransitions.SortedOrder(addresses);
        Span<byte> buf = stackalloc byte[U64Item.Size];
        var higher = Quota.HasHigherGroups ? scratch.Higher : null;
        h.Transaction.WithoutSharedRootRefs.EnsureCapacity(searched.Count);
        var entries = CollectionsMarshal.AsSpan(changes);
        ulong[]? single = null;
        foreach (int o in order)
        {
            var s = searched[o];
            ref readonly var c = ref entries[s.Index];
            var (bytenr, len) = (c.Bytenr, c.NumBytes);
            var (acquired, dropped) = c.Split(ref single);
            noSharing.Clear(); // the previous extent's clones, if it had any
            Origin writer;
            List<Origin> shared;
            bool entryItem = false;
            // An extent written in this transaction has no SHARED_ROOT_REF, ORIGIN_DROP or
            // REFERRER_ENTRY yet (they are added here, and its address was free until now): no
            // search for them.
            if (s.Generation != 0) (writer, shared) = (new Origin(s.Owner, s.Generation), noSharing);
            else (writer, shared, entryItem) = ExtentOriginAndSharing(h, bytenr, len, path, noSharing);
            ulong owner = writer.Root;
            bool drops = writer.Until != ulong.MaxValue;
            foreach (var so in shared) drops |= so.Until != ulong.MaxValue;
            foreach (var r in acquired)
            {
                if (r == owner || HasRoot(shared, r))
                {
                    if (ReopenOrigin(h, bytenr, r, ref writer, shared)) path.Reset();
                    continue;
                }
                // A snapshot taken while an origin had the extent is a candidate through the
                // lineage already: most often one taken in the transaction that wrote the extent
                // (a snapshot writes its source's dirty data back and repeats its transitions),
                // where a SHARED_ROOT_REF would be an item per extent per such snapshot, saying
                // again what the lineage says, and would keep the extent from the searches
                // without items and from the early accounting.
                if (IsLineageCandidate(r, bytenr, writer, shared)) continue;
                // Taken by a clone: snapshots of it taken from now on may have it too.
                U64Item.Write(buf, h.Transid);
                ExtentTree.Put(h, new Key(bytenr, KeyTypes.SharedRootRef, r), buf);
                path.Reset(); // the tree changed: the next extent's search starts from the root
                shared.Add(new Origin(r, h.Transid));
            }
            search.Begin(bytenr, writer, shared, acquired, dropped, entryItem);
            int enough = acquired.Length + 2;
            var after = search.Referrers(enough);
            bool complete = after.Count < enough;
            // An origin that lets go of an extent someone else keeps records when (ORIGIN_DROP):
            // its snapshots taken after that are no candidates for it (snapshots taken in
            // rotation would each be asked about every extent only the oldest still holds).
            // The item is written once the origin has a snapshot taken after it let go (until
            // then no search can meet such a snapshot), so an origin never snapshotted again
            // costs none (PendingOriginDrops). One that is freed loses its items with it.
            // A writer that wrote the extent in this transaction and no longer holds it let go of
            // it in this transaction too (its transitions cancelled; a snapshot taken in between
            // holds it).
            if (after.Count > 0)
            {
                foreach (var r in dropped)
                    if (r == owner || HasRoot(shared, r)) NoteOriginDrop(r, bytenr, h.Transid);
                if (s.Generation != 0 && Array.IndexOf(acquired, owner) < 0) NoteOriginDrop(owner, bytenr, h.Transid);
            }
            if (shared.Count == 0 && !drops && !entryItem) h.Transaction.WithoutSharedRootRefs.Add(bytenr);
            deltas.AccountExtent(len, acquired, dropped, after, complete);
            if (higher != null) AccountHigherGroups(search, len, after, complete, higher, deltas);
        }
    }

    /// <summary>
    /// The groups of level 1 and above for one extent (docs/SNAPSHOTS.md §3). A group
    /// references the extent while a member does and holds it exclusively while every referrer
    /// is a member (btrfs's qgroup_update_counters). Only groups above a subvolume that just
    /// started or stopped referencing it, or above one of the first referrers found, can
    /// change. With the whole set of referrers known (few of them) the answer is direct. Else
    /// at least two others (r1, r2) reference it before and after, and a group needs a search
    /// only when its answer turns on who else does: for referenced, when neither r1 nor r2 is a
    /// member and the group gained or lost a member's reference; for exclusive, when both are
    /// members and the ones that started and the ones that stopped differ in being all members.
    /// Each search stops at the first referrer found on the side asked about, looking at the
    /// smaller of the group's members or the rest, so a group of 10,000 snapshots is not
    /// walked per extent.
    /// </summary>
    private void AccountHigherGroups(ReferrerSearch search, ulong len, List<ulong> after, bool complete, HigherGroupScratch scratch, QgroupDeltas deltas)
    {
        var (acquired, dropped) = (search.Acquired, search.Dropped);
        var others = scratch.Others; // referrers before and after
        others.Clear();
        foreach (var r in after) if (Array.IndexOf(acquired, r) < 0) others.Add(r);
        var groups = scratch.Groups;
        groups.Clear();
        foreach (var r in acquired) Involve(r, scratch);
        foreach (var r in dropped) Involve(r, scratch);
        for (int i = 0; i < others.Count && (complete || i < 2); i++) Involve(others[i], scratch);
        var otherSpan = CollectionsMarshal.AsSpan(others);
        foreach (var (id, members) in groups)
        {
            bool aIn = AnyIn(acquired, members), dIn = AnyIn(dropped, members), aAll = AllIn(acquired, members), dAll = AllIn(dropped, members);
            bool rb, ra, eb, ea;
            if (complete)
            {
                bool oIn = AnyIn(otherSpan, members), oAll = AllIn(otherSpan, members);
                (rb, ra) = (dIn || oIn, aIn || oIn);
                eb = others.Count + dropped.Length > 0 && oAll && dAll;
                ea = others.Count + acquired.Length > 0 && oAll && aAll;
            }
            else
            {
                bool in1 = In(others[0], members), in2 = In(others[1], members);
                bool oIn = in1 || in2 || (aIn != dIn && search.AnyOther(id, members, inside: true, others[0], others[1]));
                bool oAll = in1 && in2 && aAll != dAll && !search.AnyOther(id, members, inside: false, others[0], others[1]);
                (rb, ra) = (dIn || oIn, aIn || oIn);
                (eb, ea) = (oAll && dAll, oAll && aAll);
            }
            long dr = rb == ra ? 0 : ra ? (long)len : -(long)len, de = eb == ea ? 0 : ea ? (long)len : -(long)len;
            deltas.Add(id, dr, de);
        }
    }

    /// <summary>
    /// Whether subvolume <paramref name="r"/> is a candidate for the extent through the lineage:
    /// a snapshot (or a snapshot of a snapshot …) of one of its origins, taken while that origin
    /// had the extent (<see cref="Lineage.DescendsWithin"/>, fsck's rule). An origin's window
    /// closes at its ORIGIN_DROP, written or still pending (a pending one is written by this very
    /// commit if the origin has a snapshot since, and would then close a window this answer
    /// counted on). A window only ever closes at or after the transaction a snapshot in it was
    /// taken in, so <paramref name="r"/> stays a candidate for as long as it has the extent.
    /// </summary>
    private bool IsLineageCandidate(ulong r, ulong bytenr, Origin writer, List<Origin> shared)
    {
        if (Within(writer)) return true;
        foreach (var o in shared) if (Within(o)) return true;
        return false;

        bool Within(Origin o)
        {
            ulong until = o.Until;
            if (_pendingOriginDrops.TryGetValue(o.Root, out var p) && p.Extents.TryGetValue(bytenr, out var t)) until = Math.Min(until, t);
            return Lineage.DescendsWithin(r, o.Root, o.Since, until);
        }
    }

    private static bool HasRoot(List<Origin> shared, ulong root)
    {
        foreach (var s in shared) if (s.Root == root) return true;
        return false;
    }

    /// <summary>An origin references the extent again: it holds it from now on, so its later
    /// snapshots are candidates again (for this search too) and its ORIGIN_DROP goes, pending
    /// or written (then its window opens: <paramref name="writer"/> or its entry in
    /// <paramref name="shared"/>). Returns whether the extent tree changed.</summary>
    private bool ReopenOrigin(TransHandle h, ulong bytenr, ulong root, ref Origin writer, List<Origin> shared)
    {
        bool had = ReopenWindow(root, ref writer, shared);
        ForgetOriginDrop(h, bytenr, root, had);
        return had;
    }

    /// <summary>Opens origin <paramref name="root"/>'s window again (it is <paramref name="writer"/>
    /// or in <paramref name="shared"/>); returns whether an ORIGIN_DROP item had closed it. The
    /// commit's search and the early accounting's both reopen through here.</summary>
    private static bool ReopenWindow(ulong root, ref Origin writer, List<Origin> shared)
    {
        bool had = false;
        if (writer.Root == root && writer.Until != ulong.MaxValue) { writer = writer with { Until = ulong.MaxValue }; had = true; }
        for (int i = 0; i < shared.Count; i++)
            if (shared[i].Root == root && shared[i].Until != ulong.MaxValue) { shared[i] = shared[i] with { Until = ulong.MaxValue }; had = true; }
        return had;
    }

    /// <summary>An origin holds the extent again: its ORIGIN_DROP of it goes, pending and,
    /// when <paramref name="item"/>, the item.</summary>
    private void ForgetOriginDrop(TransHandle h, ulong bytenr, ulong root, bool item)
    {
        if (_pendingOriginDrops.TryGetValue(root, out var pending)) pending.Extents.Remove(bytenr);
        if (item) ExtentTree.Delete(h, new Key(bytenr, KeyTypes.OriginDrop, root));
    }

    /// <summary>Adds the groups above a subvolume (asked once per commit) to the extent's list, each once.</summary>
    private void Involve(ulong subvolume, HigherGroupScratch scratch)
    {
        if (!scratch.Above.TryGetValue(subvolume, out var list)) scratch.Above[subvolume] = list = Quota.HigherAbove(subvolume);
        foreach (var g in list)
        {
            bool have = false;
            foreach (var x in scratch.Groups) if (x.Id == g.Id) { have = true; break; }
            if (!have) scratch.Groups.Add(g);
        }
    }

    private static bool In(ulong subvolume, HashSet<ulong> members) => members.Contains(Engine.Quota.Qgroups.ForSubvolume(subvolume));

    private static bool AnyIn(ReadOnlySpan<ulong> subvolumes, HashSet<ulong> members)
    {
        foreach (var r in subvolumes) if (In(r, members)) return true;
        return false;
    }

    private static bool AllIn(ReadOnlySpan<ulong> subvolumes, HashSet<ulong> members)
    {
        foreach (var r in subvolumes) if (!In(r, members)) return false;
        return true;
    }

    /// <summary>The accounting's working state, kept from one commit to the next (commits are
    /// serialized by the commit mutex, so one at a time uses it): lists, the referrer search, the
    /// extent tree path. Allocating them per commit made the accounting trigger collections.</summary>
    private AccountingScratch? _accounting;

    private sealed class AccountingScratch(FsInfo fs)
    {
        public readonly QgroupDeltas Deltas = new();
        /// <summary>The entries to search: index in the ledger, and the writer and transaction of
        /// an extent written in this one (generation 0: written before, read its EXTENT_ITEM).</summary>
        public readonly List<(int Index, ulong Owner, ulong Generation)> Searched = new();
        public readonly ReferrerSearch Search = new(fs, new OwnerRefProbe());
        public readonly List<Origin> NoSharing = new(); // an extent's SHARED_ROOT_REFs, most often none
        public readonly TreePath Path = new(); // the extent tree's, reused from one extent to the next (SearchNear)
        public readonly HigherGroupScratch Higher = new();

        /// <summary>Forgets the commit just accounted: its leaves and paths (the trees will
        /// move), its sums, and the groups above each subvolume (relations may change).</summary>
        public void Reset()
        {
            Deltas.Clear();
            Searched.Clear();
            Search.Reset();
            NoSharing.Clear();
            Path.Reset();
            Higher.Above.Clear();
        }
    }

    /// <summary>What <see cref="AccountHigherGroups"/> reuses from one extent to the next in a
    /// commit (it runs per extent, and lists and closures per call were most of its cost): the
    /// extent's other referrers and groups, and the groups above each subvolume, asked once per
    /// commit (relations cannot change while the commit holds the commit lock).</summary>
    private sealed class HigherGroupScratch
    {
        public readonly List<ulong> Others = new();
        public readonly List<(ulong Id, HashSet<ulong> Members)> Groups = new();
        public readonly Dictionary<ulong, List<(ulong Id, HashSet<ulong> Members)>> Above = new();
    }

    /// <summary>The subvolume that wrote a data extent written before this transaction and the
    /// transaction it was written in, from its EXTENT_ITEM.</summary>
    private (ulong Owner, ulong Generation) ExtentOrigin(ulong bytenr, ulong len)
    {
        var ei = ExtentItemAt(bytenr, len, new TreePath());
        return (ei.Owner, ei.Generation);
    }

    /// <summary>The EXTENT_ITEM of a referenced data extent, <paramref name="path"/> left at it
    /// (searched from where the path already is, when its leaf spans the key).</summary>
    private ExtentItem ExtentItemAt(ulong bytenr, ulong len, TreePath path) =>
        TryExtentItemAt(bytenr, len, path, out var ei) ? ei : throw MissingExtentItem(bytenr, len);

    private bool TryExtentItemAt(ulong bytenr, ulong len, TreePath path, out ExtentItem ei)
    {
        ei = default;
        return ExtentTree.SearchNear(new Key(bytenr, KeyTypes.ExtentItem, len), path) && ExtentItem.TryRead(path.Data, out ei);
    }

    private static CorruptionException MissingExtentItem(ulong bytenr, ulong len) =>
        new($"data extent [{bytenr}, +{len}) is referenced but has no EXTENT_ITEM", bytenr);

    /// <summary><see cref="ExtentOrigin"/> and <see cref="SharingItems"/>: the extent's
    /// items sit together in key order (EXTENT_ITEM 168, its back-references 176-178,
    /// SHARED_ROOT_REFs 188), so most extents, which have no SHARED_ROOT_REF, are settled by
    /// the EXTENT_ITEM's search and a step or two, without a second search. The
    /// SHARED_ROOT_REFs go into <paramref name="into"/> (empty: the caller's, reused from one
    /// extent to the next, so that an extent with clones allocates nothing either);
    /// <paramref name="path"/> is left at the extent's items. Caller holds the extent tree's lock.</summary>
    private ExtentOrigins ExtentOriginAndSharing(TransHandle h, ulong bytenr, ulong len,
        TreePath path, List<Origin> into)
    {
        if (!TryExtentItemAt(bytenr, len, path, out var ei))
        {
            // An extent written in this transaction has no EXTENT_ITEM until the delayed refs
            // run: told by its delayed-ref head (not expected in the accounting, where an extent
            // that only lost referrers was referenced before; a relation change asks about every
            // extent of a subvolume), with the SHARED_ROOT_REFs the accounting just added for
            // the clones of it in this transaction.
            if (h.Transaction.Refs.NewDataExtent(bytenr) is var (o, g)) return SharingItems(bytenr, new Origin(o, g), into, path);
            throw MissingExtentItem(bytenr, len);
        }
        var writer = new Origin(ei.Owner, ei.Generation);
        return QuotaItemsAfter(bytenr, path) switch
        {
            QuotaItems.None => new(writer, into, false),
            QuotaItems.ReferrerEntryOnly => new(writer, into, true),
            _ => SharingItems(bytenr, writer, into, path),
        };
    }

    private enum QuotaItems { None, ReferrerEntryOnly, SharingOrUnknown }

    /// <summary>Which of the quota's items follow an extent's EXTENT_ITEM (<paramref name="path"/>
    /// at it): its items sit together in key order (EXTENT_ITEM 168, its back-references
    /// 176-178, SHARED_ROOT_REFs 188, ORIGIN_DROPs 189, REFERRER_ENTRY 190). A few
    /// back-references are stepped over; an extent with many (leaves of many writable
    /// snapshots name it) is <see cref="QuotaItems.SharingOrUnknown"/>, for a search of its
    /// own. Caller holds the extent tree's lock.</summary>
    private QuotaItems QuotaItemsAfter(ulong bytenr, TreePath path)
    {
        for (int step = 0; step < 8; step++)
        {
            if (!ExtentTree.Next(path)) return QuotaItems.None;
            var k = path.Key;
            if (k.ObjectId != bytenr || k.Type > KeyTypes.ReferrerEntry) return QuotaItems.None;
            if (k.Type == KeyTypes.ReferrerEntry) return QuotaItems.ReferrerEntryOnly;
            if (k.Type >= KeyTypes.SharedRootRef) return QuotaItems.SharingOrUnknown;
        }
        return QuotaItems.SharingOrUnknown;
    }

    /// <summary>An extent's origins as its extent-tree items say (<see cref="ExtentOriginAndSharing"/>),
    /// and whether it has a REFERRER_ENTRY item (the commit then loads it, and the extent is
    /// not one without items beside its EXTENT_ITEM).</summary>
    private readonly record struct ExtentOrigins(Origin Writer, List<Origin> Shared, bool EntryItem);

    /// <summary>Whether an extent-tree key is one of the extent's SHARED_ROOT_REFs or ORIGIN_DROPs.</summary>
    private static bool IsSharingItem(Key k, ulong bytenr) =>
        k.ObjectId == bytenr && k.Type is KeyTypes.SharedRootRef or KeyTypes.OriginDrop;

    /// <summary>Whether an extent-tree key is one of the items the quota accounting keeps beside
    /// an extent (SHARED_ROOT_REF, ORIGIN_DROP, REFERRER_ENTRY): they go when the extent does.</summary>
    private static bool IsQuotaItemOf(Key k, ulong bytenr) =>
        k.ObjectId == bytenr && k.Type is KeyTypes.SharedRootRef or KeyTypes.OriginDrop or KeyTypes.ReferrerEntry;

    /// <summary>The SHARED_ROOT_REFs of an extent as origins (subvolume, transaction it took the
    /// extent in), each origin's window closed by its ORIGIN_DROP if it has one, the writer's
    /// included, and whether a REFERRER_ENTRY follows them. Caller holds the extent tree's lock.</summary>
    private ExtentOrigins SharingItems(ulong bytenr, Origin writer, List<Origin> into, TreePath path)
    {
        if (ReadSharingItems(bytenr, ref writer, into, path, int.MaxValue, out bool entryItem, out var bad) == SharingRead.Malformed)
            throw new CorruptionException($"malformed {(bad.Type == KeyTypes.SharedRootRef ? "SHARED_ROOT_REF" : "ORIGIN_DROP")} {bad}", bytenr);
        return new(writer, into, entryItem);
    }

    private enum SharingRead { Read, TooMany, Malformed }

    /// <summary>
    /// An extent's SHARED_ROOT_REFs into <paramref name="origins"/> (each an origin from the
    /// transaction it took the extent in) and its ORIGIN_DROPs, each closing its origin's window
    /// (<paramref name="writer"/>'s too), read from <paramref name="path"/>'s seek to the first;
    /// <paramref name="entryItem"/>: a REFERRER_ENTRY follows them. Stops at more than
    /// <paramref name="maxOrigins"/> origins, or at an item that does not read
    /// (<paramref name="bad"/>). For the commit and the early accounting's worker (which
    /// reuses its list and path); caller holds the extent tree's lock.
    /// </summary>
    private SharingRead ReadSharingItems(ulong bytenr, ref Origin writer, List<Origin> origins, TreePath path, int maxOrigins, out bool entryItem, out Key bad)
    {
        (entryItem, bad) = (false, default);
        path.Reset();
        if (!ExtentTree.SeekGE(new Key(bytenr, KeyTypes.SharedRootRef, 0), path)) return SharingRead.Read;
        do
        {
            var k = path.Key;
            if (!IsSharingItem(k, bytenr))
            {
                entryItem = k.ObjectId == bytenr && k.Type == KeyTypes.ReferrerEntry;
                return SharingRead.Read;
            }
            if (!U64Item.TryRead(path.Data, out var transid)) { bad = k; return SharingRead.Malformed; }
            if (k.Type == KeyTypes.SharedRootRef)
            {
                if (origins.Count >= maxOrigins) return SharingRead.TooMany;
                origins.Add(new Origin(k.Offset, transid));
            }
            else if (k.Offset == writer.Root) writer = writer with { Until = transid };
            else
            {
                // SHARED_ROOT_REFs (188) sort before ORIGIN_DROPs (189): the origin is listed.
                for (int i = 0; i < origins.Count; i++)
                    if (origins[i].Root == k.Offset) origins[i] = origins[i] with { Until = transid };
            }
        } while (ExtentTree.Next(path));
        return SharingRead.Read;
    }

    /// <summary>With its extent, its SHARED_ROOT_REFs and ORIGIN_DROPs. Only images that have had
    /// quotas can hold any (enabling quotas creates the quota tree), so the others skip the
    /// seek, and so does an extent the commit's accounting just found without any (one
    /// extent-tree search less per freed extent, about a tenth of a quotas-on commit that
    /// rewrites files).</summary>
    private void DeleteSharedRootRefs(TransHandle h, ulong bytenr)
    {
        // Pending ORIGIN_DROPs of a freed extent would only be skipped when written; dropped
        // now, they do not pile up in memory (origins with pending ones are few).
        foreach (var pending in _pendingOriginDrops.Values) pending.Extents.Remove(bytenr);
        if (QuotaTree == null || h.Transaction.WithoutSharedRootRefs.Contains(bytenr)) return;
        var keys = new List<Key>();
        var path = new TreePath();
        if (!ExtentTree.SeekGE(new Key(bytenr, KeyTypes.SharedRootRef, 0), path)) return;
        do
        {
            if (!IsQuotaItemOf(path.Key, bytenr)) break;
            keys.Add(path.Key);
        } while (ExtentTree.Next(path));
        foreach (var k in keys) ExtentTree.Delete(h, k);
    }

    /// <summary>
    /// Each data extent's length and the subvolumes referencing it, from the EXTENT_OWNER_REFs
    /// of every subvolume (a full scan, for the recount a changed relation needs; fsck recounts
    /// from the file extent items themselves). Call while no handle is open.
    /// </summary>
    private Dictionary<ulong, (ulong Len, List<ulong> Roots)> OwnerRefReferrers()
    {
        var referrers = new Dictionary<ulong, (ulong Len, List<ulong> Roots)>();
        foreach (var t in AllFsTrees())
            using (t.Lock.Read())
                foreach (var (bytenr, _, len) in OwnerRefs.Scan(t)) QgroupRecount.AddReferrer(referrers, bytenr, len, t.Id);
        return referrers;
    }
}

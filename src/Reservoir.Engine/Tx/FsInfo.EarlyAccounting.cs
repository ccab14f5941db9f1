using System.Diagnostics;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Quota;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The early accounting (docs/SNAPSHOTS.md §3, "Early accounting"): a worker works out, while
/// the transaction runs, the two common cases of the commit's quota accounting (an extent
/// written by a subvolume alone, an extent one subvolume let go of), so that the commit only
/// adds up what still holds and works out the rest. The commit's own accounting touched every
/// changed extent in memory gone cold during the writes it followed (about 55 µs a commit
/// plus 0.12 µs an extent, the fifteenth session); the worker's time is spent beside the
/// writers instead of inside the commit's exclusive section, where every writer waits.
///
/// Why an answer holds: an extent's answer depends on its transitions (any change bumps the
/// entry's version, and a changed entry's numbers leave the sums), on the subvolumes' own
/// EXTENT_OWNER_REFs (which change only by transitions, each noted in the ledger under the
/// tree's lock), on its EXTENT_ITEM and quota items in the extent tree (written only by
/// commits), and on the lineage, the set of trees, the groups above level 0 with their
/// memberships (FsInfo.EarlyGroups.cs) and quotas being on (<see cref="EarlyStamp"/>: the
/// same before and after every answer, and at the commit, or none of the transaction's
/// answers is used). The worker holds the commit lock for
/// reading while it works, as a handle does, so the ledger it answers to is the running one;
/// it takes each tree's lock for every lookup (a leaf kept between lookups could be changing
/// under another writer) and the lineage's lock only to copy the candidates.
/// </summary>
internal sealed partial class FsInfo
{
    private FsMutex? _earlyLockField;
    /// <summary>Guards _earlyKick, _earlyStopping, _earlyWorker; the innermost lock of all (taken
    /// by the ledger's wake-up under the ledger's lock, under a tree's).</summary>
    private FsMutex EarlyLock => LazyLocks.Mutex(ref _earlyLockField, Sched, "early-accounting");
    private bool _earlyKick, _earlyStopping;
    private FsThread? _earlyWorker;
    private FsMutex? _earlyWorkLockField;
    /// <summary>Guards the batch lists below, and makes one batch run at a time (the worker's,
    /// or a test's <see cref="DrainEarlyAccounting"/>); taken before any other lock.</summary>
    private FsMutex EarlyWorkLock => LazyLocks.Mutex(ref _earlyWorkLockField, Sched, "early-accounting-work");
    // Reused from one batch to the next, under EarlyWorkLock.
    private readonly List<EarlyWork> _earlyBatch = new();
    /// <summary>Entries per batch: what a commit may have to wait for.</summary>
    private const int EarlyBatch = 64;
    private readonly List<ulong> _earlyCandidates = new();
    private bool _earlyCandidatesComplete; // whether _earlyCandidates holds every candidate of the extent
    private readonly TreePath _earlyPath = new();

    /// <summary>Bumped when a subvolume's tree comes or goes; and when quotas are turned on or off.</summary>
    private long _treesVersion, _quotaSwitches;

    private EarlyStamp CurrentEarlyStamp()
    {
        var (higher, memberships) = Quota.MembershipState;
        return new(Lineage.Version, Interlocked.Read(ref _treesVersion), Interlocked.Read(ref _quotaSwitches), higher, memberships);
    }

    /// <summary>The next transaction, its ledger queuing for the early accounting when quotas
    /// are on.</summary>
    private Transaction NewTransaction(ulong transid, HashSet<ulong>? reuse = null) =>
        new(Sched, transid, reuse, (Options.EarlyAccounting && Quota is { Enabled: true }, WakeEarlyAccounting));

    /// <summary>A tree came or went, or quotas were switched: what the early accounting
    /// worked out in this transaction does not hold.</summary>
    private void TreesChanged() => Interlocked.Increment(ref _treesVersion);

    private void QuotaSwitched()
    {
        Interlocked.Increment(ref _quotaSwitches);
        Running.OwnerTransitions.InvalidateEarly();
    }

    private void WakeEarlyAccounting()
    {
        using var _ = EarlyLock.Lock();
        if (_earlyStopping) return;
        _earlyKick = true;
        _earlyWorker ??= Sched.Start("early-accounting", EarlyAccountingLoop);
        EarlyLock.PulseAll();
    }

    private void EarlyAccountingLoop()
    {
        while (true)
        {
            using (EarlyLock.Lock())
            {
                while (!_earlyStopping && !_earlyKick) EarlyLock.Wait();
                if (_earlyStopping) return;
                _earlyKick = false;
            }
            try { RunEarlyBatches(); }
            catch (Exception ex) when (ex is not SchedulerAbortedException)
            {
                // Nothing is lost: what was not worked out is the commit's.
                Warn($"early quota accounting stopped for this transaction: {ex.Message}");
            }
        }
    }

    /// <summary>Works out queued entries, a batch at a time, each batch inside the commit lock
    /// (a commit waits for one batch at most); at most <paramref name="maxBatches"/> batches.</summary>
    private void RunEarlyBatches(int maxBatches = int.MaxValue)
    {
        for (int batch = 0; batch < maxBatches && !Volatile.Read(ref _earlyStopping) && !ReadOnly && FailedReason == null; batch++)
        {
            using var work = EarlyWorkLock.Lock();
            _commitLock.EnterRead();
            try
            {
                var tx = Running;
                var ledger = tx.OwnerTransitions;
                if (ledger.TakeBatch(_earlyBatch, EarlyBatch) == 0) return;
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    // Unchanged from here to the end of an answer means unchanged during it.
                    var before = CurrentEarlyStamp();
                    StartEarlyGroupBatch(before.Memberships);
                    foreach (var w in _earlyBatch)
                    {
                        var r = WorkOutEarly(w, tx, before.HigherGroups);
                        bool taken = ledger.Publish(w, r, before, CurrentEarlyStamp(), tx.Transid);
                        // A freed extent's quota items need no search (DeleteSharedRootRefs): it has none.
                        if (taken && r is { WrittenAlone: 0, Acquirer: 0, HasQuotaItems: false }) tx.WithoutSharedRootRefs.Add(w.Bytenr);
                        if (r is { WrittenAlone: 0, Acquirer: 0 } && before.HigherGroups) Interlocked.Increment(ref Stats.EarlyGroupAnswers);
                        if (r is { Acquirer: not 0 } && before.HigherGroups) Interlocked.Increment(ref Stats.EarlyGroupCloneAnswers);
                        if (r is { HasQuotaItems: true } or { Acquirer: not 0 }) Interlocked.Increment(ref Stats.EarlySharedAnswers);
                    }
                }
                catch
                {
                    // The batch's entries are out of the queue and not answered: the commit
                    // must work out every entry of this transaction.
                    ledger.InvalidateEarly();
                    throw;
                }
                Interlocked.Add(ref Stats.EarlyMicros, (Stopwatch.GetTimestamp() - t0) * 1_000_000 / Stopwatch.Frequency);
            }
            finally { _commitLock.ExitRead(); }
        }
    }

    /// <summary>Works out every queued entry now, on this thread (tests: so that a commit
    /// right after takes the answers, where the worker might not have come round yet). Call
    /// with no lock held.</summary>
    internal void DrainEarlyAccounting() => RunEarlyBatches();

    /// <summary>
    /// A commit asked by a thread that holds no lock (sync, the periodic committer): what is
    /// still queued for the early accounting is worked out first, on this thread, before the
    /// commit's exclusive section, where every writer waits (btrfs likewise runs delayed refs
    /// before its commit's critical section). The worker may lag the writers it follows by a
    /// batch or more, on a busy host by most of a transaction: that much was left to the
    /// commit (about 40 µs more accounting in the snapshot benchmark's slow rounds). A failed
    /// batch leaves its entries to the commit, as in the worker.
    /// </summary>
    internal void CommitAfterEarlyAccounting()
    {
        // The running ledger says whether it queues for the early accounting (decided when the
        // transaction began, as NewTransaction does); as many batches as were queued when the
        // sync came: writers that go on meanwhile must not keep it from committing.
        var ledger = Running.OwnerTransitions;
        if (ledger.EarlyEnabled)
        {
            int queued = ledger.QueuedCount;
            try { RunEarlyBatches(queued / EarlyBatch + 1); }
            catch (Exception ex) when (ex is not SchedulerAbortedException)
            {
                Warn($"early quota accounting before a commit stopped: {ex.Message}");
            }
        }
        Commit();
    }

    /// <summary>At unmount (before the last commit, which works out whatever is queued).</summary>
    private void StopEarlyAccounting()
    {
        FsThread? w;
        using (EarlyLock.Lock())
        {
            _earlyStopping = true;
            EarlyLock.PulseAll();
            w = _earlyWorker;
        }
        w?.Join();
    }

    /// <summary>
    /// One entry's numbers, as the commit would work them out, for the two cases the early
    /// accounting takes; null for every other (the commit's). Holds the commit lock for reading;
    /// <paramref name="higherGroups"/>: whether groups above level 0 exist, from the batch's stamp.
    /// </summary>
    private EarlyResult? WorkOutEarly(in EarlyWork w, Transaction tx, bool higherGroups)
    {
        if (!Quota.Enabled || !w.Single || w.Net == 0) return null;
        if (w.Net > 0)
        {
            // Written now by its subvolume alone, no snapshot of it taken since: its group and
            // every group above gain it (the commit applies it up the chain, with groups of any
            // level, as it does its own).
            bool alone = w.BornGeneration == tx.Transid && w.BornOwner == w.Root && !Lineage.HasSnapshotsSince(w.Root, tx.Transid);
            if (alone) return EarlyResult.Alone(w.Root, w.NumBytes);
            // Else taken by a clone (below).
        }
        // Let go of, or taken by a clone, by one subvolume; written before this transaction (it
        // has an EXTENT_ITEM), with no REFERRER_ENTRY: its candidates are its writer and the
        // writer's snapshots since its birth, and each subvolume that took it by a clone (a
        // SHARED_ROOT_REF) and that one's snapshots since, each origin's up to its ORIGIN_DROP
        // if it has one.
        if (w.BornGeneration != 0) return null;
        ulong writer, born, writerUntil = ulong.MaxValue;
        var origins = _earlyOrigins;
        origins.Clear();
        bool items;
        using (ExtentTree.Lock.Read())
        {
            var path = _earlyPath;
            path.Reset();
            try
            {
                if (!TryExtentItemAt(w.Bytenr, w.NumBytes, path, out var ei)) return null;
                (writer, born) = (ei.Owner, ei.Generation);
                var q = QuotaItemsAfter(w.Bytenr, path);
                if (q == QuotaItems.ReferrerEntryOnly) return null;
                items = q != QuotaItems.None;
                if (items)
                {
                    // As the commit reads them; the extent is the commit's with a REFERRER_ENTRY,
                    // many origins, or an item that does not read (the commit reports it).
                    var wo = new Origin(writer, born);
                    if (ReadSharingItems(w.Bytenr, ref wo, origins, path, EarlyMaxOrigins, out bool entryItem, out _) != SharingRead.Read || entryItem) return null;
                    writerUntil = wo.Until;
                }
            }
            finally { path.Reset(); }
        }
        // Read only by commits and the worker, and changed only by commits and quota switches,
        // which hold the commit lock for writing.
        if (ReferrerEntries.Find(w.Bytenr, writer, born) != null) return null;
        bool writesSharedRootRef = false, reopens = false, deletesOriginDrop = false;
        if (w.Net > 0)
        {
            if (w.Root == writer || HasRoot(origins, w.Root))
            {
                // An origin taking the extent back (a file restored from a snapshot by a
                // clone): its window reopens for this search too, as the commit's ReopenOrigin
                // reopens it, and the commit forgets its ORIGIN_DROP (the item read here is
                // written and deleted only by commits; a pending one only by commits and
                // quota switches, all under the commit lock for writing).
                reopens = true;
                var wo = new Origin(writer, born, writerUntil);
                deletesOriginDrop = ReopenWindow(w.Root, ref wo, origins);
                writerUntil = wo.Until;
            }
            // Anyone else gets a SHARED_ROOT_REF, unless the lineage names it a candidate
            // already (FsInfo.QuotaAccounting.cs, IsLineageCandidate, whose pending
            // ORIGIN_DROPs only commits and quota switches change, both under the commit lock
            // for writing).
            else writesSharedRootRef = !IsLineageCandidate(w.Root, w.Bytenr, new Origin(writer, born, writerUntil), origins);
        }
        // The first candidates (two referrers among them settle it; past ReferrerEntryAfter
        // that let go, it is the commit's case anyway). An ORIGIN_DROP still pending in memory
        // is not read: without it the window is wider, which costs lookups, never an answer
        // (a subvolume outside every window cannot hold the extent).
        int max = Options.ReferrerEntryAfter + 2;
        _earlyCandidates.Clear();
        bool all = Lineage.AddCandidates(writer, born, writerUntil, _earlyCandidates, max);
        foreach (var o in origins) all = all && Lineage.AddCandidates(o.Root, o.Since, o.Until, _earlyCandidates, max);
        _earlyCandidatesComplete = all;
        (_earlyWriter, _earlyBorn) = (writer, born);
        ulong first = 0, second = 0;
        int found = 0, passed = 0;
        // The previous extent's other referrers first, as the commit asks them: extents let go
        // of together were mostly inherited together, and a candidate that let go of them all
        // (an origin whose ORIGIN_DROP is still pending) would be asked again for each.
        // Whoever holds the extent references it, candidate or not.
        foreach (var hint in (ReadOnlySpan<ulong>)[_earlyLastFirst, _earlyLastSecond])
        {
            if (hint == 0 || hint == w.Root || hint == first || !HoldsLocked(hint, w.Bytenr)) continue;
            if (found++ == 0) first = hint;
            else second = hint;
        }
        foreach (var c in _earlyCandidates)
        {
            if (found == 2) break;
            if (c == w.Root || c == first || c == second) continue; // it let go, or took it; or known already
            if (!HoldsLocked(c, w.Bytenr))
            {
                // Past this many the commit gives the extent a referrer entry: its case.
                if (++passed >= Options.ReferrerEntryAfter) return null;
                continue;
            }
            if (found++ == 0) first = c;
            else second = c;
            if (found == 2) break; // no one's exclusive changes: nobody was or is alone
        }
        if (found < 2 && !all) return null; // who else has it is not known
        if (found > 0) (_earlyLastFirst, _earlyLastSecond) = (first, second);
        long len = (long)w.NumBytes;
        if (w.Net > 0)
        {
            // Its group gains it; exclusive moves as the commit's AccountExtent moves it: the
            // one other referrer held it alone until now, or (none) the acquirer holds it alone.
            var a = new EarlyResult
            {
                Len = w.NumBytes, Acquirer = w.Root, HasQuotaItems = items, WritesSharedRootRef = writesSharedRootRef,
                ReopensOrigin = reopens, DeletesOriginDrop = deletesOriginDrop,
                AcquirerExclusive = found == 0 ? len : 0, Sole = found == 1 ? first : 0,
            };
            // The groups above level 0 (FsInfo.EarlyGroups.cs), as for a subvolume letting go.
            if (higherGroups && !EarlyHigherGroups(ref a, w.Bytenr, first, second, found < 2)) return null;
            return a;
        }
        var r = new EarlyResult { Len = w.NumBytes, Dropper = w.Root, HasQuotaItems = items };
        if (found == 0) r.DropperExclusive = -len;      // it was the only one
        else if (found == 1) r.Sole = first;            // the one left holds it alone
        // Others keep what an origin (its writer, or a subvolume that took it by a clone) let
        // go of: the origin's ORIGIN_DROP (pending until it has a snapshot taken since).
        r.NoteOriginDrop = found > 0 && (w.Root == writer || HasRoot(origins, w.Root));
        // The groups above level 0 (FsInfo.EarlyGroups.cs); found < 2 here means all are known.
        if (higherGroups && !EarlyHigherGroups(ref r, w.Bytenr, first, second, found < 2)) return null;
        return r;
    }

    /// <summary>How many SHARED_ROOT_REFs an extent may have for the early accounting to work
    /// it out (an extent cloned into more subvolumes is the commit's).</summary>
    private const int EarlyMaxOrigins = 16;
    // The extent's SHARED_ROOT_REF origins, reused from one extent to the next; guarded by EarlyWorkLock.
    private readonly List<Origin> _earlyOrigins = new();
    /// <summary>The referrers other than the dropper the last answer found (0: none), asked
    /// first for the next extent; a hint only (a lookup says who holds it). Guarded by EarlyWorkLock.</summary>
    private ulong _earlyLastFirst, _earlyLastSecond;

    /// <summary>Whether subvolume <paramref name="c"/> references the extent now: its own
    /// EXTENT_OWNER_REF, looked up under its tree's lock.</summary>
    private bool HoldsLocked(ulong c, ulong bytenr)
    {
        if (FsTree(c) is not { } t) return false;
        Interlocked.Increment(ref Stats.EarlyProbes);
        using var _ = t.Lock.Read();
        var path = _earlyPath;
        path.Reset();
        try { return t.Search(null, OwnerRefs.KeyOf(bytenr), path); }
        finally { path.Reset(); }
    }
}

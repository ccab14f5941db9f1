namespace Reservoir.Engine.Quota;

/// <summary>
/// What the early accounting worked out for one extent (docs/SNAPSHOTS.md §3, "Early
/// accounting"): one of three cases, the common ones, each a subvolume's single transition.
/// <list type="bullet">
/// <item>Written alone: <see cref="WrittenAlone"/> wrote the extent in this transaction and no
/// snapshot of it was taken since; its group chain gains the bytes as referenced and exclusive.</item>
/// <item>Taken by a clone: <see cref="Acquirer"/> starts referencing an extent written before
/// this transaction (no REFERRER_ENTRY, at most a few SHARED_ROOT_REFs). Its referenced gains
/// the bytes, its exclusive too when no one else has the extent (<see cref="AcquirerExclusive"/>), and <see cref="Sole"/>, when it held the extent alone
/// until now, no longer does; <see cref="WritesSharedRootRef"/>: the commit writes the
/// acquirer's SHARED_ROOT_REF. An origin taking the extent back (its writer, or a subvolume
/// that took it by a clone, which let go of it since) is an acquirer too, and
/// <see cref="ReopensOrigin"/>: the commit forgets its ORIGIN_DROP, pending or written
/// (<see cref="DeletesOriginDrop"/>), so that its later snapshots are candidates again.</item>
/// <item>Let go of: <see cref="Dropper"/> no longer references an extent written before this
/// transaction, which has no REFERRER_ENTRY (and at most a few SHARED_ROOT_REFs). Its referenced
/// loses the bytes, its exclusive too when no one else has the extent
/// (<see cref="DropperExclusive"/>), and <see cref="Sole"/>, when one subvolume alone keeps it,
/// now holds it exclusively. <see cref="NoteOriginDrop"/>: the dropper is an origin of it (its
/// writer, or a subvolume that took it by a clone) and others keep it, so the commit notes its
/// ORIGIN_DROP.</item>
/// </list>
/// In the last two, <see cref="Groups"/>: what moves in the groups of level 1 and above (null
/// when none does).
/// </summary>
internal struct EarlyResult
{
    public ulong Len, WrittenAlone, Dropper, Sole, Acquirer;
    public long DropperExclusive, AcquirerExclusive;
    /// <summary>Taken by a clone: <see cref="Acquirer"/> starts referencing an extent written
    /// before this transaction that is no origin's, so the commit writes its SHARED_ROOT_REF
    /// (unless the lineage names it a candidate already: false then).</summary>
    public bool WritesSharedRootRef;
    /// <summary>Taken back by an origin (<see cref="Acquirer"/>): its window reopens, so the
    /// commit forgets its pending ORIGIN_DROP of the extent and, when
    /// <see cref="DeletesOriginDrop"/>, deletes the item the worker read.</summary>
    public bool ReopensOrigin, DeletesOriginDrop;
    public bool NoteOriginDrop;
    /// <summary>The extent has SHARED_ROOT_REFs or ORIGIN_DROPs (it goes with them when freed:
    /// the commit must seek them).</summary>
    public bool HasQuotaItems;
    public GroupDelta[]? Groups;

    public static EarlyResult Alone(ulong writer, ulong len) => new() { Len = len, WrittenAlone = writer };

    /// <summary>Adds (<paramref name="sign"/> 1) or takes back (−1) this extent's numbers.</summary>
    public readonly void AddTo(QgroupDeltas sums, int sign)
    {
        long len = (long)Len * sign;
        if (WrittenAlone != 0) { sums.AddWrittenAlone(WrittenAlone, len); return; }
        if (Acquirer != 0)
        {
            // Its group gains it; the one that held it alone until now (Sole) no longer does.
            sums.Add(Qgroups.ForSubvolume(Acquirer), len, AcquirerExclusive * sign);
            if (Sole != 0) sums.Add(Qgroups.ForSubvolume(Sole), 0, -len);
        }
        else
        {
            sums.Add(Qgroups.ForSubvolume(Dropper), -len, DropperExclusive * sign);
            if (Sole != 0) sums.Add(Qgroups.ForSubvolume(Sole), 0, len);
        }
        if (Groups != null) foreach (var g in Groups) sums.Add(g.Id, g.Referenced * sign, g.Exclusive * sign);
    }
}

/// <summary>What one extent moves in one group of level 1 or above.</summary>
internal readonly record struct GroupDelta(ulong Id, long Referenced, long Exclusive);

/// <summary>Everything a commit needs to know to take a ledger's early work as accounted: the
/// lineage's, the trees' and the quota switches' versions, whether groups of level 1 and above
/// exist and the version of their memberships (<see cref="Qgroups.MembershipState"/>).</summary>
internal readonly record struct EarlyStamp(long Lineage, long Trees, long QuotaSwitches, bool HigherGroups, long Memberships);

/// <summary>
/// A ledger's early accounting as the commit takes it: the sums of the entries worked out
/// and unchanged since, the entries the commit must work out itself (queued, or not a case
/// worked out early), the ORIGIN_DROPs those answers found (origin → extent → transaction; an
/// answer that stopped holding took its own out), and the state of the
/// world the work was done in (<see cref="Stamp"/>, null when nothing was worked out);
/// <see cref="Invalid"/> when something changed who can reference what (a snapshot, quotas
/// turned on or off), and then the commit works out every entry itself.
/// </summary>
internal sealed class EarlyAccounting(QgroupDeltas sums, List<int> todo, Dictionary<ulong, Dictionary<ulong, ulong>> originDrops,
    Dictionary<ulong, ulong> sharedRootRefs, Dictionary<ulong, ReopenedOrigin> reopened, EarlyStamp? stamp, bool invalid, int worked)
{
    public QgroupDeltas Sums => sums;
    public List<int> Todo => todo;
    public Dictionary<ulong, Dictionary<ulong, ulong>> OriginDrops => originDrops;
    /// <summary>The SHARED_ROOT_REFs the answers for clones need: extent → the subvolume that
    /// took it (an answer that stopped holding took its own out).</summary>
    public Dictionary<ulong, ulong> SharedRootRefs => sharedRootRefs;
    /// <summary>The origins the answers found taking extents back: extent → the origin, and
    /// whether it has an ORIGIN_DROP item to delete (an answer that stopped holding took its
    /// own out).</summary>
    public Dictionary<ulong, ReopenedOrigin> Reopened => reopened;
    public EarlyStamp? Stamp => stamp;
    public bool Invalid => invalid;
    /// <summary>How many entries were worked out early (some may have changed since).</summary>
    public int Worked => worked;
}

/// <summary>An origin that takes an extent back, and whether the extent tree holds its
/// ORIGIN_DROP of it (else the drop, if any, is still pending in memory).</summary>
internal readonly record struct ReopenedOrigin(ulong Root, bool HasItem);

/// <summary>One queued entry as the early accounting's worker copied it.</summary>
internal readonly record struct EarlyWork(int Index, int Version, ulong Bytenr, ulong NumBytes, ulong Root, int Net, bool Single, ulong BornOwner, ulong BornGeneration);

internal sealed partial class OwnerTransitions
{
    // All guarded by _lock, like the entries.
    private QgroupDeltas _earlySums = new();
    private List<int> _queue = new(), _commitOnly = new();
    private Dictionary<ulong, Dictionary<ulong, ulong>> _originDrops = new(); // the answers' ORIGIN_DROPs: origin → extent → transaction
    private Dictionary<ulong, ulong> _sharedRootRefs = new(); // the answers' SHARED_ROOT_REFs: extent → subvolume
    private Dictionary<ulong, ReopenedOrigin> _reopened = new(); // the answers' origins taking extents back
    private bool _earlyInvalid;
    private EarlyStamp? _stamp;
    private int _worked;

    /// <summary>Whether entries are queued for the early accounting (quotas on, the mount
    /// option on). Set before the transaction sees its first transition; a transition noted
    /// while it is off leaves the whole transaction to the commit.</summary>
    public bool EarlyEnabled { get; init; }

    /// <summary>Called, under the ledger's lock, when the queue stops being empty: wakes the
    /// worker (whose lock is the innermost of all).</summary>
    public Action? Wake { get; init; }

    /// <summary>An entry changed (it was <see cref="ExtentTransitions.Version"/> − 1 before):
    /// what was worked out for it no longer holds, so its numbers leave the sums and it waits
    /// in the queue again, unless it is the commit's anyway. Caller holds _lock.</summary>
    private void Changed(ref ExtentTransitions c, int index)
    {
        bool wasEarly = c.IsEarly;
        c.Version++;
        if (!EarlyEnabled) { _earlyInvalid = true; return; }
        if (wasEarly)
        {
            c.Early.AddTo(_earlySums, -1);
            if (c.Early.NoteOriginDrop && _originDrops.TryGetValue(c.Early.Dropper, out var d)) d.Remove(c.Bytenr);
            if (c.Early.WritesSharedRootRef) _sharedRootRefs.Remove(c.Bytenr);
            if (c.Early.ReopensOrigin) _reopened.Remove(c.Bytenr);
            c.EarlyVersion = 0;
        }
        if (_earlyInvalid || c.CommitOnly || c.Queued) return;
        c.Queued = true;
        _queue.Add(index);
        if (_queue.Count == 1) Wake?.Invoke();
    }

    /// <summary>Nothing worked out early in this transaction holds any more (quotas turned on
    /// or off); the commit works out every entry.</summary>
    public void InvalidateEarly()
    {
        using var _ = _lock.Lock();
        _earlyInvalid = true;
    }

    /// <summary>How many entries wait for the early accounting.</summary>
    public int QueuedCount { get { using var _ = _lock.Lock(); return _queue.Count; } }

    /// <summary>Up to <paramref name="max"/> queued entries, copied for the worker, which
    /// works them out without the ledger's lock and hands each back to <see cref="Publish"/>.
    /// The worker holds the commit lock for reading throughout, so the ledger is not taken in
    /// between.</summary>
    public int TakeBatch(List<EarlyWork> into, int max)
    {
        into.Clear();
        using var _ = _lock.Lock();
        if (_earlyInvalid) { _queue.Clear(); return 0; }
        int n = Math.Min(max, _queue.Count);
        var entries = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_extents);
        for (int k = 0; k < n; k++)
        {
            int i = _queue[k];
            ref var c = ref entries[i];
            c.Queued = false;
            into.Add(new EarlyWork(i, c.Version, c.Bytenr, c.NumBytes, c.Root0, c.Net0, c.More is not { Count: > 0 }, c.BornOwner, c.BornGeneration));
        }
        _queue.RemoveRange(0, n);
        return n;
    }

    /// <summary>
    /// The worker's answer for one entry: its numbers (null: a case for the commit). Taken
    /// only if the entry has not changed since it was copied (then it is queued again, or is
    /// the commit's) and the world the answer was found in is the one every other answer of
    /// this transaction was found in (<paramref name="before"/> and <paramref name="after"/> the
    /// work, the same); otherwise the transaction's early work is dropped. True if taken.
    /// </summary>
    public bool Publish(in EarlyWork w, EarlyResult? result, EarlyStamp before, EarlyStamp after, ulong transid)
    {
        using var _ = _lock.Lock();
        if (_earlyInvalid) return false;
        if (w.Index >= _extents.Count || _extents[w.Index].Bytenr != w.Bytenr)
        {
            // Not this ledger's entry (never expected): nothing of it can be trusted.
            _earlyInvalid = true;
            return false;
        }
        ref var c = ref System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_extents)[w.Index];
        if (c.Version != w.Version) return false; // changed since: queued again by the change
        if (result is not { } r)
        {
            c.CommitOnly = true;
            _commitOnly.Add(w.Index);
            return false;
        }
        if (before != after || (_stamp is { } s && s != before))
        {
            _earlyInvalid = true;
            return false;
        }
        _stamp = before;
        c.Early = r;
        c.EarlyVersion = c.Version;
        r.AddTo(_earlySums, 1);
        if (r.NoteOriginDrop)
        {
            if (!_originDrops.TryGetValue(r.Dropper, out var d)) _originDrops[r.Dropper] = d = new();
            d[w.Bytenr] = transid;
        }
        if (r.WritesSharedRootRef) _sharedRootRefs[w.Bytenr] = r.Acquirer;
        if (r.ReopensOrigin) _reopened[w.Bytenr] = new ReopenedOrigin(r.Acquirer, r.DeletesOriginDrop);
        _worked++;
        return true;
    }

    /// <summary>The early work, handed to the commit with the entries. Caller holds _lock.</summary>
    private EarlyAccounting? TakeEarly()
    {
        if (!EarlyEnabled) return null;
        var todo = _queue;
        todo.AddRange(_commitOnly);
        var early = new EarlyAccounting(_earlySums, todo, _originDrops, _sharedRootRefs, _reopened, _stamp, _earlyInvalid, _worked);
        (_earlySums, _queue, _commitOnly, _originDrops, _sharedRootRefs, _reopened, _stamp, _earlyInvalid, _worked) = (new(), new(), new(), new(), new(), new(), null, false, 0);
        return early;
    }
}

using Reservoir.Common;
using Reservoir.Common.Collections;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>Metadata one ordered extent needs when it finishes: one path in the file tree
    /// (its file extent items, which share leaves with the items they replace, and the inode)
    /// and one in the checksum tree.</summary>
    internal ulong MetaPerExtent => Fs.MetaReserveFor(2);

    /// <summary>
    /// What backs [start, end), block by block: Written (regular extent: copy-on-write, needs
    /// new space), Unwritten (preallocated: written in place), Delayed (already reserved), or
    /// Hole. Consults the extent status cache and fills it from the file tree where it knows
    /// nothing. Appended to <paramref name="result"/>. Caller holds DataSem (shared or exclusive).
    /// </summary>
    internal void Classify(Mapping m, ulong start, ulong end, List<(ulong Start, ulong End, ExtentStatus Status)> result)
    {
        int first = result.Count; // ranges of an earlier call stay as they are
        ulong bs = (ulong)BlockSize;
        ulong pos = start;
        while (pos < end)
        {
            ExtentStatus st;
            ulong s, e, next = 0;
            long version = 0;
            bool hit;
            using (m.State.Lock())
            {
                hit = m.Es.TryLookup(pos, out st, out s, out e);
                if (!hit) (next, version) = (m.Es.NextStart(pos), m.Es.Version);
            }
            if (!hit)
            {
                // Asked of the tree only up to the next range the cache knows, which it knows
                // better: a Delayed range is dirty over whatever the tree holds until its
                // writeback (a fill over it once cached a preallocated extent's Unwritten on a
                // block copied on write while a clone shared it; the next write planned the block
                // in place and its delalloc reservation leaked: the explorer, seed 20039).
                (st, e) = QueryDisk(m, pos, Math.Min(end, next));
                bool changed;
                using (m.State.Lock())
                {
                    // Only what is on disk is cached here (Delayed is inserted by reservation
                    // alone), and only if the cache did not change while the tree was asked:
                    // an ordered extent that finished meanwhile may have made the answer stale.
                    changed = m.Es.Version != version;
                    if (!changed) m.Es.Insert(pos, e, st);
                }
                if (changed) continue; // look again
            }
            e = Math.Min(e, end);
            if (result.Count > first && result[^1].Item3 == st && result[^1].Item2 == pos) result[^1] = (result[^1].Item1, e, st);
            else result.Add((pos, e, st));
            pos = Math.Max(e, pos + bs);
        }
    }

    /// <summary>The on-disk status at <paramref name="pos"/> and where it ends (≤ limit).</summary>
    private (ExtentStatus Status, ulong End) QueryDisk(Mapping m, ulong pos, ulong limit)
    {
        using var lk = m.Subvol.Tree.Lock.Read();
        var maps = FileExtents.Overlapping(m.Subvol.Tree, m.Inode.Ino, pos, limit);
        foreach (var mp in maps)
        {
            if (mp.Pos > pos) return (ExtentStatus.Hole, mp.Pos);
            if (mp.End > pos)
                return (mp.Fe.Type == FileExtentType.Prealloc ? ExtentStatus.Unwritten : ExtentStatus.Written, Math.Min(mp.End, limit));
        }
        return (ExtentStatus.Hole, limit);
    }

    /// <summary>
    /// Reserves what a write of [start, end) (block-aligned) will need before dirtying its pages
    /// (btrfs_delalloc_reserve_space plus ext4_da_map_blocks):
    /// - ranges that will be copied on write (holes, written extents) reserve data space and the
    ///   qgroup's data bytes, counting only bytes not already reserved (the ledger's changeset), get
    ///   Delalloc|QgroupReserved in the ledger and Delayed in the status cache;
    /// - ranges written in place (preallocated) reserve neither; they are marked InPlace;
    /// - either way the mapping's metadata reservation grows to cover the ordered extents the
    ///   dirty ranges may become.
    /// All or nothing: on EDQUOT or ENOSPC nothing stays reserved.
    /// The decision is made under DataSem held exclusively, looking at the extent status again
    /// there (seed 001): a page-fault write that saw a hole before taking the lock may find that
    /// fallocate has since preallocated the block. <paramref name="sawBeforeLock"/> is that earlier
    /// look, used only when the seed-001 bug switch is on.
    /// </summary>
    internal Errno Reserve(Mapping m, ulong start, ulong end, ExtentStatus? sawBeforeLock = null)
    {
        using var lk = m.DataSem.Write();
        Sched.Yield("delalloc:locked");
        using var lease = ListLease<(ulong Start, ulong End, ExtentStatus Status)>.Rent(out var plan);
        if (sawBeforeLock is { } seen && Options.Bugs.NoSecondLookupInPageMkwrite) plan.Add((start, end, seen));
        else Classify(m, start, end, plan);
        return ReservePlanLocked(m, plan);
    }

    /// <summary>
    /// <see cref="Reserve"/> for two block-aligned ranges at once, all or nothing: a punch
    /// zeroes the partial blocks at both edges of its range, and must not zero one and then
    /// fail on the other (the stress runner at a full quota caught a punch that answered EDQUOT
    /// with its first edge already zeroed).
    /// </summary>
    internal Errno Reserve(Mapping m, (ulong Start, ulong End) r1, (ulong Start, ulong End) r2)
    {
        using var lk = m.DataSem.Write();
        Sched.Yield("delalloc:locked");
        using var lease = ListLease<(ulong Start, ulong End, ExtentStatus Status)>.Rent(out var plan);
        if (r1.Start < r1.End) Classify(m, r1.Start, r1.End, plan);
        if (r2.Start < r2.End) Classify(m, r2.Start, r2.End, plan);
        return ReservePlanLocked(m, plan);
    }

    /// <summary>The body of <see cref="Reserve"/>: caller holds DataSem exclusively and has
    /// classified the ranges under it.</summary>
    private Errno ReservePlanLocked(Mapping m, List<(ulong Start, ulong End, ExtentStatus Status)> plan)
    {

        // A no-CoW file (chattr +C) overwrites its written extents in place, like preallocated
        // ones, unless a snapshot may share the extent (then both are copied on write, as
        // btrfs's can_nocow_extent decides), or a snapshot of the subvolume is being taken.
        bool noCow = (m.Inode.Item.Flags & InodeFlags.NoDataCow) != 0;
        bool CowByStatus(ExtentStatus st) => st is ExtentStatus.Hole or ExtentStatus.Delayed || (st == ExtentStatus.Written && !noCow);
        Span<bool> cow = plan.Count <= 32 ? stackalloc bool[plan.Count] : new bool[plan.Count];
        bool forced = false; // an in-place range turned copy-on-write
        for (int i = 0; i < plan.Count; i++)
        {
            var (ps, pe, pst) = plan[i];
            if (CowByStatus(pst)) { cow[i] = true; continue; }
            // The ledger has the last word: a block that holds a delalloc reservation is Delayed
            // (its dirty data is to be copied) whatever the cache said. Planned in place, its
            // writeback would clear the reservation without using or giving back its bytes.
            bool delayed;
            using (m.State.Lock()) delayed = m.Ledger.CountSet(ps, pe, RangeBits.Delalloc) != 0;
            cow[i] = delayed || m.Subvol.ForceCow || MayBeShared(m, ps, pe);
            forced |= cow[i];
        }
        // What each bit covered before this call, so that a failure below clears exactly the
        // bytes this call set: the rest belong to other dirty pages (an undo that skipped the
        // InPlace ranges once left them owned by no page: a leak of InPlace and of an
        // outstanding extent, found by the stress runner on a full filesystem). Taken with the
        // counts that size the reservation (the ledger cannot change under DataSem: checked
        // below). Usually a range is wholly unset (nothing to remember but the range) or wholly
        // set (nothing this call can undo); only a partly set range lists its runs. (A list
        // kept per thread: every reservation fills one, and this is the write path.)
        var before = t_undo ??= new(8);
        before.Clear();
        void Remember(ulong s, ulong e, RangeBits bit, ulong set)
        {
            if (set == e - s) return;
            before.Add((s, e, bit, set == 0 ? null : m.Ledger.Runs(bit, s, e)));
        }
        ulong newData = 0, newQgroup = 0;
        using (m.State.Lock())
        {
            for (int i = 0; i < plan.Count; i++)
            {
                var (s, e, _) = plan[i];
                if (!cow[i])
                {
                    Remember(s, e, RangeBits.InPlace, m.Ledger.CountSet(s, e, RangeBits.InPlace));
                    continue;
                }
                ulong d = m.Ledger.CountSet(s, e, RangeBits.Delalloc), q = m.Ledger.CountSet(s, e, RangeBits.QgroupReserved);
                newData += (e - s) - d;
                newQgroup += (e - s) - q;
                Remember(s, e, RangeBits.Delalloc, d);
                Remember(s, e, RangeBits.QgroupReserved, q);
            }
        }
        if (Fs.Quota.Reserve(m.Subvol.Id, newQgroup) != Errno.OK) return Errno.EDQUOT;
        if (Fs.Space.Reserve(true, newData) != Errno.OK)
        {
            Fs.Quota.Free(m.Subvol.Id, newQgroup);
            return Errno.ENOSPC;
        }
        ulong setData = 0, setQgroup = 0;
        using (m.State.Lock())
        {
            for (int i = 0; i < plan.Count; i++)
            {
                var (s, e, _) = plan[i];
                if (cow[i])
                {
                    setData += ChangeDirtyBits(m, s, e, RangeBits.Delalloc, set: true);
                    setQgroup += m.Ledger.Set(s, e, RangeBits.QgroupReserved);
                    m.Es.Insert(s, e, ExtentStatus.Delayed);
                }
                else ChangeDirtyBits(m, s, e, RangeBits.InPlace, set: true); // preallocated, or no-CoW written
            }
        }
        if (setData != newData || setQgroup != newQgroup)
            ThrowHelper.Invariant($"inode {m.Inode.Ino}: ledger changed under DataSem ({setData}/{newData}, {setQgroup}/{newQgroup})");
        var me = AdjustMeta(m);
        if (me != Errno.OK)
        {
            // Undo everything this call set, in the ledger and in the counters.
            ulong clearedData = 0, clearedQgroup = 0;
            using (m.State.Lock())
            {
                foreach (var (s, e, bit, prior) in before)
                {
                    foreach (var (cs, ce) in prior == null ? [(s, e)] : Complement(s, e, prior))
                    {
                        if (bit == RangeBits.QgroupReserved) clearedQgroup += m.Ledger.Clear(cs, ce, bit);
                        else
                        {
                            ulong n = ChangeDirtyBits(m, cs, ce, bit, set: false);
                            if (bit == RangeBits.Delalloc) { clearedData += n; m.Es.Remove(cs, ce); }
                        }
                    }
                }
            }
            if (clearedData != newData || clearedQgroup != newQgroup)
                ThrowHelper.Invariant($"inode {m.Inode.Ino}: undo of a failed reservation cleared {clearedData}/{newData} data, {clearedQgroup}/{newQgroup} qgroup bytes");
            Fs.Space.Release(true, newData);
            Fs.Quota.Free(m.Subvol.Id, newQgroup);
            AdjustMeta(m); // shrinks back whatever part of the growth succeeded; a shrink cannot fail
            return Errno.ENOSPC;
        }
        // A page dirtied in place before its extent became shared (a reflink or a snapshot took
        // it meanwhile) is now copied on write (only ranges turned copy-on-write can carry it): it holds Delalloc, so its in-place mark goes, or
        // writeback would still write it in place (into the shared extent) and the data space
        // just reserved for it would never be used nor given back. Only after success: the undo
        // above never has to restore it.
        if (forced)
            using (m.State.Lock())
                for (int i = 0; i < plan.Count; i++)
                    if (cow[i] && !CowByStatus(plan[i].Status)) ChangeDirtyBits(m, plan[i].Start, plan[i].End, RangeBits.InPlace, set: false);
        return Errno.OK;
    }

    [ThreadStatic] private static List<(ulong S, ulong E, RangeBits Bit, List<(ulong S, ulong E)>? Prior)>? t_undo;

    /// <summary>Whether a data extent under [s, e) may also be referenced by something else (btrfs's
    /// can_nocow_extent): by a snapshot, if it was born at or before the subvolume's last
    /// snapshot (check_committed_ref), or by a reflink, if any back-reference names another
    /// file, another tree or another offset of this file. Writing such an extent in place would
    /// change them too.</summary>
    private bool MayBeShared(Mapping m, ulong s, ulong e)
    {
        var tree = m.Subvol.Tree;
        List<FileExtents.Mapping> maps;
        using (tree.Lock.Read()) maps = FileExtents.Overlapping(tree, m.Inode.Ino, s, e);
        foreach (var mp in maps)
            if (mp.Fe.DiskBytenr != 0 && Fs.DataExtentMayBeShared(mp.Fe.DiskBytenr, mp.Fe.DiskNumBytes, tree.LastSnapshot, tree.Id, m.Inode.Ino, mp.Pos - mp.Fe.Offset))
                return true;
        return false;
    }

    /// <summary>The parts of [s, e) not covered by <paramref name="covered"/> (sorted, disjoint).</summary>
    private static List<(ulong S, ulong E)> Complement(ulong s, ulong e, List<(ulong S, ulong E)> covered)
    {
        var r = new List<(ulong, ulong)>();
        ulong pos = s;
        foreach (var (cs, ce) in covered)
        {
            if (ce <= pos) continue;
            if (cs >= e) break;
            if (cs > pos) r.Add((pos, cs));
            pos = Math.Max(pos, ce);
        }
        if (pos < e) r.Add((pos, e));
        return r;
    }

    /// <summary>Metadata the mapping should hold: one share per ordered extent its dirty ranges
    /// may become. Caller holds State.</summary>
    private ulong MetaTargetUnsynchronized(Mapping m) => (ulong)m.OutstandingExtents * MetaPerExtent;

    private const RangeBits DirtyMask = RangeBits.Delalloc | RangeBits.InPlace;

    /// <summary>Ordered extents the dirty runs of <paramref name="mask"/> touching [start, end]
    /// may become (each split at the largest extent). Caller holds State.</summary>
    internal int OutstandingExtentsOf(Mapping m, RangeBits mask, ulong start = 0, ulong end = ulong.MaxValue) =>
        m.Ledger.CountRunPieces(mask, start, end, Fs.Space.MaxDataExtent);

    /// <summary>
    /// Sets or clears a dirty-state bit (Delalloc or InPlace) on [start, end) and keeps the
    /// mapping's outstanding-extent count exact by recounting only the runs touching the range
    /// before and after (btrfs keeps outstanding_extents the same way, in its merge and split
    /// hooks). Returns the bytes changed. Caller holds State.
    /// </summary>
    internal ulong ChangeDirtyBits(Mapping m, ulong start, ulong end, RangeBits bit, bool set)
    {
        int before = OutstandingExtentsOf(m, DirtyMask, start, end);
        ulong changed = set ? m.Ledger.Set(start, end, bit) : m.Ledger.Clear(start, end, bit);
        int after = OutstandingExtentsOf(m, DirtyMask, start, end);
        m.OutstandingExtents += after - before;
        return changed;
    }

    /// <summary>
    /// Makes the mapping's metadata reservation equal its target, recomputed under State each
    /// round: a target computed earlier may be stale by the time it is applied (writers grow it
    /// while writeback shrinks it), so grow, then check again; a shrink is done atomically under
    /// State. (Found by the stress runner under the deterministic scheduler: without the loop a
    /// late grow left an excess no later call trimmed.)
    /// </summary>
    private Errno AdjustMeta(Mapping m, bool mayUseGlobalReserve = false)
    {
        while (true)
        {
            ulong grow = 0, shrink = 0;
            using (m.State.Lock())
            {
                ulong target = MetaTargetUnsynchronized(m);
                if (target > m.MetaRsv) grow = target - m.MetaRsv;
                else if (target < m.MetaRsv) { shrink = m.MetaRsv - target; m.MetaRsv = target; }
            }
            if (shrink > 0) { Fs.Space.Release(false, shrink); continue; }
            if (grow == 0) return Errno.OK;
            if (Fs.Space.Reserve(false, grow) != Errno.OK
                && (!mayUseGlobalReserve || Fs.Space.Reserve(false, grow, useGlobalReserve: true) != Errno.OK))
                return Errno.ENOSPC;
            using (m.State.Lock()) m.MetaRsv += grow;
        }
    }

    /// <summary>Brings the metadata reservation to its target after ranges left the dirty state.
    /// Usually a shrink; it grows when clearing the middle of a dirty run splits it in two
    /// (a punch inside dirty data), and that growth cannot be refused, so it may come from the
    /// global reserve. If even that is gone, the mapping holds less than its target and the
    /// ordered extents it becomes overrun their share (counted in
    /// <c>EngineStats.ReservationOverruns</c>), which is never a leak.</summary>
    internal void TrimMeta(Mapping m) => AdjustMeta(m, mayUseGlobalReserve: true);

    /// <summary>
    /// Frees what a dirty range owned when its data will never be written (truncate, punch,
    /// invalidation): Delalloc bytes back to data may_use, QgroupReserved bytes back to the
    /// qgroup, and the metadata share. Every cleared ownership mark frees its bytes.
    /// Caller holds DataSem or the inode lock; takes State.
    /// </summary>
    internal void FreeRange(Mapping m, ulong start, ulong end)
    {
        ulong d, q;
        using (m.State.Lock())
        {
            d = ChangeDirtyBits(m, start, end, RangeBits.Delalloc, set: false);
            q = m.Ledger.Clear(start, end, RangeBits.QgroupReserved);
            ChangeDirtyBits(m, start, end, RangeBits.InPlace, set: false);
            m.Es.Remove(start, end);
        }
        Fs.Space.Release(true, d);
        Fs.Quota.Free(m.Subvol.Id, q);
        TrimMeta(m);
    }

    /// <summary>
    /// On EDQUOT or ENOSPC, before giving up: write back all dirty data, wait for every ordered
    /// extent and commit, so that reservations held by finished writes are released; then the
    /// caller retries once. Must be called holding no page lock and no DataSem.
    /// </summary>
    internal void FlushForSpace()
    {
        Fs.FlushDelalloc!();
        Fs.Commit();
    }
}

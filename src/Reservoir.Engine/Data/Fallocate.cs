using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Data;

/// <summary>fallocate(2) modes (linux/falloc.h).</summary>
[Flags]
public enum FallocateMode
{
    Allocate = 0,
    KeepSize = 0x01,
    PunchHole = 0x02,
    CollapseRange = 0x08,
    ZeroRange = 0x10,
    InsertRange = 0x20,
    UnshareRange = 0x40,
}

internal sealed partial class DataEngine
{
    /// <summary>
    /// fallocate (caller holds the inode lock exclusively). Mode 0 and KEEP_SIZE preallocate
    /// unwritten extents over the holes of the range (reads give zeros; writes land in place);
    /// PUNCH_HOLE (with KEEP_SIZE) frees the range; ZERO_RANGE punches and preallocates.
    /// COLLAPSE_RANGE, INSERT_RANGE and UNSHARE_RANGE answer EOPNOTSUPP: never a silent
    /// zero-writing fallback.
    /// </summary>
    public Errno Fallocate(Inode inode, FallocateMode mode, ulong offset, ulong length)
    {
        if (length == 0) return Errno.EINVAL;
        if ((mode & (FallocateMode.CollapseRange | FallocateMode.InsertRange | FallocateMode.UnshareRange)) != 0) return Errno.EOPNOTSUPP;
        if ((mode & FallocateMode.PunchHole) != 0 && (mode & FallocateMode.KeepSize) == 0) return Errno.EOPNOTSUPP;
        if ((mode & FallocateMode.PunchHole) != 0 && (mode & FallocateMode.ZeroRange) != 0) return Errno.EINVAL;
        ulong end = offset + length;
        if (end < offset || end > Format.FormatConstants.MaxFileSize) return Errno.EFBIG;
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        if ((mode & FallocateMode.PunchHole) != 0) return PunchHole(inode, m, offset, end);
        ulong a = offset / bs * bs, b = Units.AlignUp(end, bs);
        // ZERO_RANGE reserves the data space and qgroup bytes of its whole (block-aligned) range
        // before it drops anything, as btrfs_zero_range does: a zero range that then failed to
        // preallocate would have punched data away and still answered EDQUOT. The budget is an
        // upper bound (the partial edge blocks are zeroed through the page cache and reserve
        // for themselves); what preallocation does not use is given back below. The metadata
        // of the preallocation's transactions is reserved with it: one share per extent, and
        // the range punched is one hole, up to two edge blocks aside.
        ulong budget = 0, metaBudget = 0;
        bool zero = (mode & FallocateMode.ZeroRange) != 0;
        // ZERO_RANGE's data extents, allocated before anything is punched (see ZeroRangeExtents).
        ZeroRangeExtents? extents = null;
        if (zero)
        {
            ulong meta = Fs.MetaReserveFor(PreallocItems) * ((b - a + Fs.Space.MaxDataExtent - 1) / Fs.Space.MaxDataExtent + 2);
            var re = ReserveFallocateBudget(inode.Subvol, b - a, meta);
            if (re != Errno.OK)
            {
                FlushForSpace();
                re = ReserveFallocateBudget(inode.Subvol, b - a, meta);
            }
            if (re != Errno.OK) return re;
            budget = b - a;
            metaBudget = meta;
        }
        Errno e;
        try
        {
            if (zero)
            {
                extents = ZeroRangeExtents.Allocate(Fs.Space, b - a, out ulong consumed);
                // The data bytes left the reservation (allocated, or freed again); their qgroup
                // bytes now go with the extents: to the transaction as each is referenced, the
                // rest freed below.
                budget -= consumed;
                if (extents == null)
                {
                    Fs.Quota.Free(inode.Subvol.Id, consumed);
                    return Errno.ENOSPC; // nothing changed yet
                }
                e = PunchHole(inode, m, offset, end);
                if (e != Errno.OK) return e;
            }
            // Settle the range: dirty data written and finished, so the tree shows what is there.
            Writeback(m, a, b, wait: true);
            WaitOrdered(m, a, b);
            e = PreallocateHoles(inode, m, a, b, ref budget, ref metaBudget, extents);
            if (e is Errno.ENOSPC or Errno.EDQUOT && extents == null)
            {
                // Out of room with DataSem held: flush outside it, then try once more.
                FlushForSpace();
                e = PreallocateHoles(inode, m, a, b, ref budget, ref metaBudget, null);
            }
        }
        finally
        {
            Fs.Space.Release(true, budget);
            Fs.Quota.Free(inode.Subvol.Id, budget);
            Fs.Space.Release(false, metaBudget);
            if (extents != null) Fs.Quota.Free(inode.Subvol.Id, extents.FreeUnused(Fs.Space));
        }
        if (e != Errno.OK) return e;
        if ((mode & FallocateMode.KeepSize) == 0 && end > inode.Item.FileSize)
        {
            inode.Item.FileSize = end;
            using (m.State.Lock()) m.DiskSize = Math.Max(m.DiskSize, end);
        }
        inode.Item.Ctime = Format.Timespec.Now();
        PersistInode(inode);
        return Errno.OK;
    }

    /// <summary>Reserves qgroup bytes and data space for preallocation, both or neither.</summary>
    private Errno ReserveFallocateBudget(Subvolume sv, ulong bytes, ulong meta = 0)
    {
        if (Fs.Quota.Reserve(sv.Id, bytes) != Errno.OK) return Errno.EDQUOT;
        if (Fs.Space.Reserve(true, bytes) != Errno.OK) { Fs.Quota.Free(sv.Id, bytes); return Errno.ENOSPC; }
        if (Fs.Space.Reserve(false, meta) != Errno.OK)
        {
            Fs.Space.Release(true, bytes);
            Fs.Quota.Free(sv.Id, bytes);
            return Errno.ENOSPC;
        }
        return Errno.OK;
    }

    /// <summary>Items one preallocated extent changes: its file extent item, its checksums,
    /// the inode, and splits around them.</summary>
    private const int PreallocItems = 6;

    /// <summary>Allocates unwritten extents over every hole of [a, b), taking each piece's data
    /// space and qgroup bytes from <paramref name="budget"/> first and reserving only the rest;
    /// or, for ZERO_RANGE, taking the extents allocated before the punch
    /// (<paramref name="zeroExtents"/>), so that nothing after the punch can run out of data
    /// space. Under DataSem held exclusively, so that the extent status it inserts (Unwritten)
    /// and a racing page-fault write's Delayed are decided one after the other (seed 001).</summary>
    private Errno PreallocateHoles(Inode inode, Mapping m, ulong a, ulong b, ref ulong budget, ref ulong metaBudget, ZeroRangeExtents? zeroExtents)
    {
        bool mustFinish = zeroExtents != null;
        using var lk = m.DataSem.Write();
        Sched.Yield("fallocate:locked");
        var holes = new List<(ulong, ulong)>();
        using (m.Subvol.Tree.Lock.Read())
        {
            ulong pos = a;
            foreach (var mp in FileExtents.Overlapping(m.Subvol.Tree, inode.Ino, a, b))
            {
                if (mp.Pos > pos) holes.Add((pos, Math.Min(mp.Pos, b)));
                pos = Math.Max(pos, mp.End);
            }
            if (pos < b) holes.Add((pos, b));
        }
        // A hole with a delalloc reservation on it is already promised; leave it to writeback.
        using (m.State.Lock())
            holes = holes.SelectMany(h => SplitOut(h, m.Ledger.Runs(RangeBits.Delalloc, h.Item1, h.Item2))).ToList();
        foreach (var (hs, he) in holes)
        {
            ulong pos = hs;
            while (pos < he)
            {
                ulong want = Math.Min(he - pos, Fs.Space.MaxDataExtent);
                ulong fromBudget = 0;
                if (zeroExtents == null)
                {
                    fromBudget = Math.Min(want, budget);
                    var re = ReserveFallocateBudget(inode.Subvol, want - fromBudget);
                    if (re != Errno.OK) return re;
                    budget -= fromBudget;
                }
                Tx.TransHandle h;
                ulong share = Fs.MetaReserveFor(PreallocItems);
                if (metaBudget >= share)
                {
                    metaBudget -= share;
                    h = Fs.StartReserved(share);
                }
                else if (Fs.TryStart(PreallocItems, out h, flush: false) != Errno.OK)
                {
                    // A zero range has punched its data already: it must finish (from the
                    // global reserve, as a deletion would), or it would answer ENOSPC with the
                    // file changed. Plain preallocation may stop here.
                    if (!mustFinish || Fs.StartDeletion(PreallocItems, out h) != Errno.OK)
                    {
                        budget += want; // back to the budget; the caller gives it back
                        return Errno.ENOSPC;
                    }
                }
                ulong got;
                using (h)
                {
                    ulong disk, len;
                    if (zeroExtents != null) (disk, len) = zeroExtents.Take(want);
                    else
                    {
                        (disk, len) = Fs.Space.AllocData(want, fromReservation: true, hint: 0);
                        // A shorter extent (fragmented free space): the rest of the piece's data
                        // space and qgroup bytes go back to the budget for the next piece, not to
                        // the free pool, where another writer could take them and leave this
                        // preallocation short half way (found with --check-each on a full image).
                        budget += want - len;
                    }
                    got = len;
                    using (m.Subvol.Tree.Lock.Write())
                    {
                        FileExtents.InsertNew(h, m.Subvol.Tree, inode.Ino, pos, disk, len, FileExtentType.Prealloc);
                        using (Fs.CsumTree.Lock.Write())
                        {
                            // Unwritten blocks read as zeros; their checksums are those of zero blocks
                            // until written in place.
                            var d = Fs.CsumTree.Insert(h, FileExtents.CsumKey(disk), (int)(len / (ulong)BlockSize) * 4);
                            uint zero = Crc32C.Compute(new byte[BlockSize]);
                            for (int i = 0; i < d.Length / 4; i++) BinaryPrimitives.WriteUInt32LittleEndian(d[(i * 4)..], zero);
                        }
                        inode.Item.Nbytes += len;
                        DirItems.PutInode(h, m.Subvol.Tree, inode);
                    }
                    // The reserved qgroup bytes become usage when this transaction commits.
                    h.Transaction.AddQgroupRecord(m.Subvol.Id, len);
                }
                using (m.State.Lock()) m.Es.Insert(pos, pos + got, ExtentStatus.Unwritten);
                pos += got;
            }
        }
        return Errno.OK;
    }

    private static IEnumerable<(ulong, ulong)> SplitOut((ulong S, ulong E) range, List<(ulong S, ulong E)> cut)
    {
        ulong pos = range.S;
        foreach (var (s, e) in cut.OrderBy(c => c.S))
        {
            if (s > pos) yield return (pos, Math.Min(s, range.E));
            pos = Math.Max(pos, e);
        }
        if (pos < range.E) yield return (pos, range.E);
    }

    /// <summary>
    /// Frees [start, end): whole blocks are dropped (pages invalidated with their reservations
    /// freed, extents removed), partial blocks at the edges are zeroed through the page cache.
    /// </summary>
    internal Errno PunchHole(Inode inode, Mapping m, ulong start, ulong end)
    {
        ulong bs = (ulong)BlockSize;
        ulong size = inode.Item.FileSize;
        end = Math.Min(end, Math.Max(size, start));
        if (start >= end) return Errno.OK;
        ulong a = Units.AlignUp(start, bs), b = end / bs * bs;
        // Partial blocks: zero through the page cache, both edges or neither.
        var ze = ZeroPartialEdges(m, start, Math.Min(end, a), Math.Max(b, a), end);
        if (ze != Errno.OK) return ze;
        // The times change with the data, and are written with it: a punch that only left them
        // in memory lost them to a snapshot taken next (an incremental send then took the file
        // for unchanged and kept the old data) and to an eviction.
        inode.Item.Mtime = inode.Item.Ctime = Format.Timespec.Now();
        if (a >= b)
        {
            PersistInode(inode);
            return Errno.OK;
        }
        Invalidate(m, a, b);
        Writeback(m, a, b, wait: true);
        WaitOrdered(m, a, b);
        SettleDiskSize(m); // written with the inode below
        bool done = false;
        while (!done)
        {
            // Pages and reservations of the range are gone already: run to the end.
            var se = Fs.StartDeletion(8, out var h);
            if (se != Errno.OK) return se;
            using (h)
            using (m.Subvol.Tree.Lock.Write())
            {
                long delta = 0;
                done = FileExtents.Drop(h, m.Subvol.Tree, inode.Ino, a, b, ref delta, 32);
                inode.Item.Nbytes = (ulong)((long)inode.Item.Nbytes + delta);
                DirItems.PutInode(h, m.Subvol.Tree, inode);
            }
        }
        using (m.State.Lock()) m.Es.Remove(a, b);
        return Errno.OK;
    }

    /// <summary>
    /// Zeroes the partial blocks at the edges of a punch, [hs, he) and [ts, te) (each inside one
    /// block, either may be empty), as one all-or-nothing buffered write: the pages of both
    /// edges are locked, one reservation covers both (<see cref="Reserve(Mapping, (ulong, ulong), (ulong, ulong))"/>),
    /// then both are zeroed. Zeroing them one after the other could zero the first and then
    /// fail on the second with EDQUOT, leaving the file changed by a call that reported failure.
    /// The locking is <see cref="BufferedWrite"/>'s (pages locked across the reservation, one
    /// flush-and-retry on EDQUOT/ENOSPC).
    /// </summary>
    private Errno ZeroPartialEdges(Mapping m, ulong hs, ulong he, ulong ts, ulong te)
    {
        ulong bs = (ulong)BlockSize;
        if (hs >= he && ts >= te) return Errno.OK;
        (ulong, ulong) head = hs < he ? (hs / bs * bs, Units.AlignUp(he, bs)) : (0, 0);
        (ulong, ulong) tail = ts < te ? (ts / bs * bs, Units.AlignUp(te, bs)) : (0, 0);
        List<Page> headPages = [], tailPages = [];
        void Lock()
        {
            // Ascending order (the head is below the tail), as every multi-page locker does.
            if (hs < he) LockPagesForWrite(m, hs, (int)(he - hs), headPages);
            try { if (ts < te) LockPagesForWrite(m, ts, (int)(te - ts), tailPages); }
            catch { UnlockPages(m, headPages); headPages.Clear(); throw; }
        }
        void Unlock() { UnlockPages(m, headPages); UnlockPages(m, tailPages); headPages.Clear(); tailPages.Clear(); }
        bool Owned() => (hs >= he || AlreadyReserved(m, head.Item1, head.Item2)) && (ts >= te || AlreadyReserved(m, tail.Item1, tail.Item2));
        void Settle()
        {
            if (hs < he) WaitOrdered(m, head.Item1, head.Item2);
            if (ts < te) WaitOrdered(m, tail.Item1, tail.Item2);
        }
        Lock();
        Errno e;
        try
        {
            Settle();
            e = Owned() ? Errno.OK : Reserve(m, head, tail);
            if (e is Errno.EDQUOT or Errno.ENOSPC)
            {
                Unlock();
                FlushForSpace();
                Lock();
                Settle();
                e = Reserve(m, head, tail);
            }
        }
        catch
        {
            Unlock();
            throw;
        }
        if (e != Errno.OK)
        {
            UnlockPagesDroppingEmpty(m, headPages);
            UnlockPagesDroppingEmpty(m, tailPages);
            return e;
        }
        if (hs < he) CopyIntoLockedPages(m, headPages, hs, new byte[he - hs]);
        if (ts < te) CopyIntoLockedPages(m, tailPages, ts, new byte[te - ts]);
        m.Inode.Item.Sequence++;
        BalanceDirty(m);
        return Errno.OK;
    }

    /// <summary>SEEK_DATA / SEEK_HOLE: data is a regular extent or a dirty page; holes are
    /// unbacked ranges and preallocated ranges without dirty pages (as on ext4). Returns ENXIO
    /// past the end.</summary>
    public Errno SeekDataHole(Inode inode, ulong offset, bool data, out ulong result)
    {
        result = 0;
        ulong size = inode.Item.FileSize;
        if (offset >= size) return Errno.ENXIO;
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        var dataRanges = new List<(ulong, ulong)>();
        using (inode.Subvol.Tree.Lock.Read())
            foreach (var mp in FileExtents.Overlapping(inode.Subvol.Tree, inode.Ino, 0, ulong.MaxValue))
                if (mp.Fe.Type != FileExtentType.Prealloc) dataRanges.Add((mp.Pos, mp.End));
        using (m.State.Lock())
        {
            foreach (var i in m.DirtyPages.All) dataRanges.Add(((ulong)i * bs, ((ulong)i + 1) * bs));
            foreach (var oe in m.Ordered.Values) dataRanges.Add((oe.FileOffset, oe.End));
        }
        dataRanges.Sort();
        ulong pos = offset;
        if (data)
        {
            foreach (var (s, e) in dataRanges)
            {
                if (e <= pos) continue;
                result = Math.Max(s, pos);
                return result < size ? Errno.OK : Errno.ENXIO;
            }
            return Errno.ENXIO;
        }
        foreach (var (s, e) in dataRanges)
        {
            if (e <= pos) continue;
            if (s > pos) break;
            pos = e;
        }
        result = Math.Min(pos, size);
        return Errno.OK;
    }
}

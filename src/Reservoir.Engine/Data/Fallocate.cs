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
        if ((mode & (FallocateMode.PunchHole | FallocateMode.ZeroRange)) != 0)
        {
            var pe = PunchHole(inode, m, offset, end);
            if (pe != Errno.OK || (mode & FallocateMode.PunchHole) != 0) return pe;
        }
        ulong a = offset / bs * bs, b = Units.AlignUp(end, bs);
        // Settle the range: dirty data written and finished, so the tree shows what is there.
        Writeback(m, a, b, wait: true);
        WaitOrdered(m, a, b);
        var e = PreallocateHoles(inode, m, a, b);
        if (e is Errno.ENOSPC or Errno.EDQUOT)
        {
            // Out of room with DataSem held: flush outside it, then try once more.
            FlushForSpace();
            e = PreallocateHoles(inode, m, a, b);
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

    /// <summary>Allocates unwritten extents over every hole of [a, b). Under DataSem held
    /// exclusively, so that the extent status it inserts (Unwritten) and a racing page-fault
    /// write's Delayed are decided one after the other (seed 001).</summary>
    private Errno PreallocateHoles(Inode inode, Mapping m, ulong a, ulong b)
    {
        using var lk = m.DataSem.Write();
        Sched.Yield("fallocate:locked");
        var holes = new List<(ulong, ulong)>();
        using (Top.Tree.Lock.Read())
        {
            ulong pos = a;
            foreach (var mp in FileExtents.Overlapping(Top.Tree, inode.Ino, a, b))
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
                if (Fs.Quota.Reserve(Top.Id, want) != Errno.OK) return Errno.EDQUOT;
                if (Fs.Space.Reserve(true, want) != Errno.OK) { Fs.Quota.Free(Top.Id, want); return Errno.ENOSPC; }
                if (Fs.TryStart(6, out var h, flush: false) != Errno.OK)
                {
                    Fs.Quota.Free(Top.Id, want);
                    Fs.Space.Release(true, want);
                    return Errno.ENOSPC;
                }
                ulong got;
                using (h)
                {
                    var (disk, len) = Fs.Space.AllocData(want, fromReservation: true, hint: 0);
                    got = len;
                    if (len < want) Fs.Space.Release(true, want - len);
                    using (Top.Tree.Lock.Write())
                    {
                        FileExtents.InsertNew(h, Top.Tree, Top.Id, inode.Ino, pos, disk, len, FileExtentType.Prealloc);
                        using (Fs.CsumTree.Lock.Write())
                        {
                            // Unwritten blocks read as zeros; their checksums are those of zero blocks
                            // until written in place.
                            var d = Fs.CsumTree.Insert(h, FileExtents.CsumKey(disk), (int)(len / (ulong)BlockSize) * 4);
                            uint zero = Crc32C.Compute(new byte[BlockSize]);
                            for (int i = 0; i < d.Length / 4; i++) BinaryPrimitives.WriteUInt32LittleEndian(d[(i * 4)..], zero);
                        }
                        inode.Item.Nbytes += len;
                        DirItems.PutInode(h, Top.Tree, inode);
                    }
                    // The reserved qgroup bytes become usage when this transaction commits.
                    h.Transaction.AddQgroupRecord(Top.Id, Math.Min(want, len));
                    if (len < want) Fs.Quota.Free(Top.Id, want - len);
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
        // Partial blocks: zero in place (a normal buffered write of zeros).
        foreach (var (zs, ze) in new[] { (start, Math.Min(end, a)), (Math.Max(b, a), end) })
        {
            if (zs >= ze) continue;
            var e = BufferedWrite(inode, zs, new byte[ze - zs], out _);
            if (e != Errno.OK) return e;
        }
        if (a >= b) return Errno.OK;
        Invalidate(m, a, b);
        Writeback(m, a, b, wait: true);
        WaitOrdered(m, a, b);
        bool done = false;
        while (!done)
        {
            if (Fs.TryStart(8, out var h, useGlobalReserve: true) != Errno.OK) return Errno.ENOSPC;
            using (h)
            using (Top.Tree.Lock.Write())
            {
                long delta = 0;
                done = FileExtents.Drop(h, Top.Tree, Top.Id, inode.Ino, a, b, ref delta, 32);
                inode.Item.Nbytes = (ulong)((long)inode.Item.Nbytes + delta);
                DirItems.PutInode(h, Top.Tree, inode);
            }
        }
        using (m.State.Lock()) m.Es.Remove(a, b);
        inode.Item.Mtime = inode.Item.Ctime = Format.Timespec.Now();
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
        using (Top.Tree.Lock.Read())
            foreach (var mp in FileExtents.Overlapping(Top.Tree, inode.Ino, 0, ulong.MaxValue))
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

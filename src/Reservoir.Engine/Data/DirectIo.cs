using System.Buffers;
using Reservoir.Common;
using Reservoir.Engine.Inodes;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>
    /// A direct-IO write (caller holds the inode lock exclusively), as btrfs does it:
    /// 1. write back the range's dirty pages and wait until their ordered extents have
    ///    finished, not merely until writeback returned (invariant 8);
    /// 2. drop the range's cached pages;
    /// 3. under DataSem, reserve the qgroup bytes (through the ledger, so only bytes not already
    ///    reserved), data space and metadata, all or nothing, allocate, and create the piece's
    ///    ordered extent, which takes the qgroup reservation from the ledger (flushing and
    ///    retrying once on EDQUOT/ENOSPC);
    /// 4. write, and finish the piece through its ordered extent.
    /// Unaligned requests go through the page cache and are written back before returning
    /// (btrfs falls back to buffered IO for them too).
    /// </summary>
    public Errno DirectWrite(Inode inode, ulong offset, ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        ulong bs = (ulong)BlockSize;
        var m = MappingOf(inode);
        ulong end = offset + (ulong)data.Length;
        if (offset % bs != 0 || (ulong)data.Length % bs != 0)
        {
            var e0 = BufferedWrite(inode, offset, data, out written);
            if (e0 != Errno.OK) return e0;
            Writeback(m, offset / bs * bs, Units.AlignUp(end, bs), wait: true);
            WaitOrdered(m, offset / bs * bs, Units.AlignUp(end, bs));
            return Errno.OK;
        }
        Writeback(m, offset, end, wait: true);
        Sched.Yield("dio:written-back");
        WaitOrdered(m, offset, end);
        Sched.Yield("dio:ordered-waited");
        Invalidate(m, offset, end);
        Sched.Yield("dio:invalidated");
        Errno failed = Errno.OK;
        while (written < data.Length)
        {
            ulong pos = offset + (ulong)written;
            ulong len = Math.Min((ulong)(data.Length - written), Fs.Space.MaxDataExtent);
            var e = StartDirect(m, pos, ref len, out var oe);
            if (e is Errno.EDQUOT or Errno.ENOSPC)
            {
                FlushForSpace(); // never with DataSem held: the flush waits for page locks
                e = StartDirect(m, pos, ref len, out oe);
            }
            if (e != Errno.OK) { failed = e; break; }
            var src = data.Slice(written, (int)len);
            oe.Csums = new uint[len / bs];
            for (int i = 0; i < oe.Csums.Length; i++) oe.Csums[i] = Crc32C.Compute(src.Slice(i * (int)bs, (int)bs));
            try { Fs.Device.Write(oe.DiskBytenr, src); }
            catch (FsException) { oe.IoError = true; }
            Fs.Stats.DataBytesWritten += (long)len;
            using (m.State.Lock()) { oe.IoDone = true; oe.BytesLeft = 0; }
            // Finishing the ordered extent extends the size (in the same transaction as the
            // extent item, so the size on disk never falls short of the extents; a failed
            // second piece once left the first piece's extent past the size on disk).
            FinishOrdered(m, oe);
            if (oe.IoError) { failed = Errno.EIO; break; }
            written += (int)len;
        }
        if (written == 0) return failed;
        inode.Item.Mtime = inode.Item.Ctime = Format.Timespec.Now();
        PersistInode(inode);
        return Errno.OK;
    }

    /// <summary>
    /// Reserves [pos, pos+len) for a direct write, allocates its extent (shortening len to
    /// what was allocated) and creates its ordered extent, which takes the range's qgroup
    /// bytes from the ledger. All of it under DataSem held exclusively, like
    /// <see cref="Reserve"/>: a page-fault write (which holds no inode lock) reserves the same
    /// ledger range under DataSem, and both look at the ledger and then change it, so the two
    /// must not interleave. (Without it, the explorer found the page fault counting qgroup bytes
    /// the direct write then set, or took away, in between: a ledger invariant violation, and a
    /// counter freed twice.)
    /// </summary>
    private Errno StartDirect(Mapping m, ulong pos, ref ulong len, out OrderedExtent oe)
    {
        oe = null!;
        using var lk = m.DataSem.Write();
        ulong q;
        using (m.State.Lock()) q = len - m.Ledger.CountSet(pos, pos + len, RangeBits.QgroupReserved);
        if (Fs.Quota.Reserve(m.Subvol.Id, q) != Errno.OK) return Errno.EDQUOT;
        if (Fs.Space.Reserve(true, len) != Errno.OK)
        {
            Fs.Quota.Free(m.Subvol.Id, q);
            return Errno.ENOSPC;
        }
        // One share of metadata, computed once: the share depends on the trees' height, which
        // other threads may change, and the ordered extent must give back exactly what was
        // reserved (computing it twice once released more than was reserved).
        ulong meta = MetaPerExtent;
        if (Fs.Space.Reserve(false, meta) != Errno.OK)
        {
            Fs.Quota.Free(m.Subvol.Id, q);
            Fs.Space.Release(true, len);
            return Errno.ENOSPC;
        }
        ulong set;
        using (m.State.Lock()) set = m.Ledger.Set(pos, pos + len, RangeBits.QgroupReserved);
        if (set != q) ThrowHelper.Invariant($"inode {m.Inode.Ino}: direct IO ledger changed under DataSem");
        var (disk, got) = Fs.Space.AllocData(len, fromReservation: true, hint: 0);
        if (got < len)
        {
            // Shorter extent: give back the reservations for the rest of this piece.
            Fs.Space.Release(true, len - got);
            ulong back;
            using (m.State.Lock()) back = m.Ledger.Clear(pos + got, pos + len, RangeBits.QgroupReserved);
            Fs.Quota.Free(m.Subvol.Id, back);
            len = got;
        }
        oe = new OrderedExtent { FileOffset = pos, NumBytes = len, DiskBytenr = disk, DiskNumBytes = len, Kind = OrderedKind.Direct, BytesLeft = len, MetaRsv = meta };
        using (m.State.Lock())
        {
            if (!Options.Bugs.OldQgroupReleaseTiming) oe.QgroupRsv = m.Ledger.Clear(pos, pos + len, RangeBits.QgroupReserved);
            m.Ordered[pos] = oe;
        }
        return Errno.OK;
    }

    /// <summary>A direct-IO read: dirty pages of the range are written and their ordered
    /// extents finished first, then the data comes from disk, bypassing the cache.</summary>
    public void DirectRead(Inode inode, ulong offset, Span<byte> dst)
    {
        var m = MappingOf(inode);
        ulong bs = (ulong)BlockSize;
        ulong a = offset / bs * bs, b = Units.AlignUp(offset + (ulong)dst.Length, bs);
        Writeback(m, a, b, wait: true);
        WaitOrdered(m, a, b);
        FileExtents.Read(Fs, inode.Subvol.Tree, inode, offset, dst);
    }

    /// <summary>Writes the inode item now (times, size as on disk) in its own handle.</summary>
    internal void PersistInode(Inode inode)
    {
        if (Fs.TryStart(1, out var h) != Errno.OK) return; // written again with the next finished extent
        using (h)
        using (inode.Subvol.Tree.Lock.Write())
        {
            inode.Item.Transid = h.Transid;
            DirItems.PutInode(h, inode.Subvol.Tree, inode);
        }
    }
}

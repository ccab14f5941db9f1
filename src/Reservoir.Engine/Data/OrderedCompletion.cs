using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>
    /// Finishes an ordered extent (btrfs_finish_one_ordered): in one transaction handle, paid for
    /// by the metadata the ordered extent carried, replace the range's file extent items (or mark
    /// the preallocated ones written), add checksums, update the inode's size on disk and byte
    /// count, and hand the carried qgroup reservation to the transaction, which frees it when the
    /// commit accounts the extent. On an IO error: free the never-referenced space, the qgroup
    /// reservation and the metadata, and remember the error for the next fsync.
    /// Runs on a completion worker; takes no inode lock.
    /// </summary>
    internal void FinishOrdered(Mapping m, OrderedExtent oe)
    {
        Options.BeforeFinish?.Invoke(new OrderedExtentInfo(m.Inode.Ino, oe.FileOffset, oe.NumBytes, oe.QgroupRsv, oe.Kind.ToString()));
        Sched.Yield("finish-ordered");
        try
        {
            if (oe.IoError || m.Inode.Deleted) FailOrdered(m, oe);
            else InsertOrdered(m, oe);
        }
        catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException)
        {
            Fs.MarkFailed($"finishing {oe} of inode {m.Inode.Ino}: {ex.Message}");
            using (m.State.Lock()) m.WriteError = true;
        }
        finally
        {
            using (m.State.Lock())
            {
                oe.Complete = true;
                m.Ordered.Remove(oe.FileOffset);
                m.State.PulseAll();
            }
        }
    }

    private void FailOrdered(Mapping m, OrderedExtent oe)
    {
        if (oe.Kind is OrderedKind.Regular or OrderedKind.Direct) Fs.Space.FreeReserved(oe.DiskBytenr, oe.DiskNumBytes);
        ulong q = oe.QgroupRsv;
        if (Options.Bugs.OldQgroupReleaseTiming) using (m.State.Lock()) q += m.Ledger.Clear(oe.FileOffset, oe.End, RangeBits.QgroupReserved);
        Fs.Quota.Free(m.Subvol.Id, q);
        Fs.Space.Release(false, oe.MetaRsv);
        oe.QgroupRsv = oe.MetaRsv = 0;
        if (oe.IoError) using (m.State.Lock()) m.WriteError = true;
    }

    private void InsertOrdered(Mapping m, OrderedExtent oe)
    {
        var h = Fs.StartReserved(oe.MetaRsv);
        oe.MetaRsv = 0;
        using (h)
        {
            var t = m.Subvol.Tree;
            var inode = m.Inode;
            using (t.Lock.Write())
            {
                long delta = 0;
                if (oe.Kind == OrderedKind.Prealloc)
                {
                    MarkWritten(h, t, inode.Ino, oe);
                }
                else if (oe.Kind == OrderedKind.NoCow)
                {
                    // Overwritten in place: the extents stay as they are (and no checksums are
                    // kept for a no-CoW file); only the inode changes.
                }
                else
                {
                    FileExtents.Drop(h, t, inode.Ino, oe.FileOffset, oe.End, ref delta, logged: true);
                    FileExtents.InsertNew(h, t, inode.Ino, oe.FileOffset, oe.DiskBytenr, oe.NumBytes, FileExtentType.Regular, logged: true);
                    delta += (long)oe.NumBytes;
                    using (Fs.CsumTree.Lock.Write())
                    {
                        var d = Fs.CsumTree.Insert(h, FileExtents.CsumKey(oe.DiskBytenr), oe.Csums.Length * 4);
                        for (int i = 0; i < oe.Csums.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(d[(i * 4)..], oe.Csums[i]);
                    }
                }
                // Size and byte count change only under the tree lock (every writer of them holds it).
                inode.Item.Nbytes = (ulong)((long)inode.Item.Nbytes + delta);
                // A direct write past the end extends the file when its data is in place, as
                // btrfs's direct IO updates i_size at completion; the caller holds the inode lock.
                if (oe.Kind == OrderedKind.Direct && oe.End > inode.Item.FileSize) inode.Item.FileSize = oe.End;
                ulong newDisk = Math.Min(inode.Item.FileSize, oe.End);
                using (m.State.Lock())
                {
                    if (newDisk > m.DiskSize) m.DiskSize = newDisk;
                    SettleDiskSizeLocked(m); // holes above it only: the file's size is on disk too
                }
                inode.Item.Transid = h.Transid;
                DirItems.PutInode(h, t, inode);
                // The file's next fsync log record carries these extent items (SPEC.md §9).
                if (oe.Kind != OrderedKind.NoCow) h.Transaction.AddLogSpan(t.Id, inode.Ino, oe.FileOffset, oe.End);
            }
            ulong q = oe.QgroupRsv;
            // Seed 000's old timing: whatever bits are still set on the range are handed over
            // here; bits a page release cleared earlier are lost, and so are their bytes.
            if (Options.Bugs.OldQgroupReleaseTiming) using (m.State.Lock()) q += m.Ledger.Clear(oe.FileOffset, oe.End, RangeBits.QgroupReserved);
            h.Transaction.AddQgroupRecord(m.Subvol.Id, q);
            oe.QgroupRsv = 0;
        }
        // No page of the range is Delayed: every reservation waits for the ordered extents of its
        // range first (WaitOrdered), and this one leaves m.Ordered only after this.
        using (m.State.Lock()) m.Es.Insert(oe.FileOffset, oe.End, ExtentStatus.Written);
    }

    /// <summary>Converts the preallocated file extent items covering an in-place ordered extent
    /// to regular ones (btrfs_mark_extent_written), splitting at its edges, and updates the
    /// written blocks' checksums in the extent's checksum item.</summary>
    private void MarkWritten(TransHandle h, BTree t, ulong ino, OrderedExtent oe)
    {
        Span<byte> buf = stackalloc byte[FileExtentItem.RegularSize];
        foreach (var mp in FileExtents.Overlapping(t, ino, oe.FileOffset, oe.End))
        {
            if (mp.Fe.Type != FileExtentType.Prealloc || mp.Fe.DiskBytenr != oe.DiskBytenr)
                throw new CorruptionException($"in-place write of [{oe.FileOffset}, +{oe.NumBytes}) found {mp.Fe.Type} at {mp.Pos}", inode: ino);
            ulong a = Math.Max(mp.Pos, oe.FileOffset), b = Math.Min(mp.End, oe.End);
            var refOff = mp.Pos - mp.Fe.Offset;
            int extra = 0;
            t.Delete(h, FileExtents.ExtentKey(ino, mp.Pos));
            if (mp.Pos < a)
            {
                var head = mp.Fe; head.NumBytes = a - mp.Pos;
                head.Write(buf); t.Put(h, FileExtents.ExtentKey(ino, mp.Pos), buf);
                extra++;
            }
            var mid = mp.Fe; mid.Type = FileExtentType.Regular; mid.Offset = mp.Fe.Offset + (a - mp.Pos); mid.NumBytes = b - a; mid.Generation = h.Transid;
            mid.Write(buf); t.Put(h, FileExtents.ExtentKey(ino, a), buf);
            if (b < mp.End)
            {
                var tail = mp.Fe; tail.Offset = mp.Fe.Offset + (b - mp.Pos); tail.NumBytes = mp.End - b;
                tail.Write(buf); t.Put(h, FileExtents.ExtentKey(ino, b), buf);
                extra++;
            }
            if (extra > 0) h.FileExtentRef(t, mp.Fe.DiskBytenr, mp.Fe.DiskNumBytes, ino, refOff, extra);
        }
        using (Fs.CsumTree.Lock.Write())
        {
            var path = new TreePath();
            if (!Fs.CsumTree.Search(h, FileExtents.CsumKey(oe.DiskBytenr), path))
                throw new CorruptionException($"preallocated extent {oe.DiskBytenr} has no checksum item", oe.DiskBytenr, ino);
            var d = path.MutableData;
            int first = (int)(oe.ExtentOffset / (ulong)BlockSize);
            for (int i = 0; i < oe.Csums.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(d[((first + i) * 4)..], oe.Csums[i]);
        }
    }
}

using System.Buffers;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>Counts an open handle: an unlinked inode lives until its last handle closes.</summary>
    public Errno Open(ulong ino, out InodeAttr attr)
    {
        attr = default;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        using (inode.Lock.Read())
        {
            if (inode.Deleted) { Put(inode); return Errno.ENOENT; }
            attr = Attr(inode);
        }
        Top.Open(inode); // keeps the reference taken by Get until Release
        return Errno.OK;
    }

    public Errno Release(ulong ino)
    {
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                int left = Top.Close(inode);
                Put(inode); // the reference Open kept
                if (left == 0)
                {
                    using var lk = inode.Lock.Write();
                    if (inode.Item.Nlink == 0 && inode.Orphaned && Top.OpenCountOf(inode) == 0) EvictLocked(inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    public Errno Read(ulong ino, ulong offset, Span<byte> buffer, out int read)
    {
        read = 0;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            using var lk = inode.Lock.Read();
            if (inode.IsDir) return Errno.EISDIR;
            if (!inode.IsReg) return Errno.EINVAL;
            if (inode.Deleted) return Errno.ENOENT;
            ulong size = inode.Item.FileSize;
            if (offset >= size || buffer.Length == 0) return Errno.OK;
            int n = (int)Math.Min((ulong)buffer.Length, size - offset);
            try { FileExtents.Read(Fs, Top.Tree, inode, offset, buffer[..n]); }
            catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException) { return Guard(ino, () => throw ex); }
            read = n;
            return Errno.OK;
        }
        finally { Put(inode); }
    }

    public Errno Write(ulong ino, ulong offset, ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            using var lk = inode.Lock.Write();
            if (inode.IsDir) return Errno.EISDIR;
            if (!inode.IsReg) return Errno.EINVAL;
            if (inode.Deleted) return Errno.ENOENT;
            if (offset + (ulong)data.Length > MaxFileSize || offset + (ulong)data.Length < offset) return Errno.EFBIG;
            if (data.Length == 0) return Errno.OK;
            try { return WriteLocked(inode, offset, data, out written, extendSize: true); }
            catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException) { return Guard(ino, () => throw ex); }
        }
        finally { Put(inode); }
    }

    /// <summary>
    /// The foundation write path, copy-on-write and synchronous: for each piece of at most one
    /// extent, widen to whole blocks (reading the partial head and tail blocks), allocate new
    /// space, write data, then in one transaction handle replace the file extent items of the
    /// range, add the checksums and update the inode. The delayed-allocation write path
    /// replaces this seam. Returns a short count with OK when space ran out after some bytes.
    /// Caller holds the inode lock exclusively.
    /// </summary>
    private Errno WriteLocked(Inode inode, ulong offset, ReadOnlySpan<byte> data, out int written, bool extendSize)
    {
        written = 0;
        ulong bs = (ulong)Fs.BlockSize;
        var space = Fs.Space;
        while (written < data.Length)
        {
            ulong pos = offset + (ulong)written;
            ulong a = Units.AlignDown(pos, bs);
            ulong maxLen = space.MaxDataExtent - (pos - a);
            int chunk = (int)Math.Min((ulong)(data.Length - written), maxLen);
            ulong b = Units.AlignUp(pos + (ulong)chunk, bs);
            ulong extLen = b - a;
            if (space.Reserve(true, extLen) != Errno.OK)
            {
                Fs.Commit();
                if (space.Reserve(true, extLen) != Errno.OK) return written > 0 ? Errno.OK : Errno.ENOSPC;
            }
            ulong dataReserved = extLen;
            var buf = ArrayPool<byte>.Shared.Rent((int)extLen);
            try
            {
                var span = buf.AsSpan(0, (int)extLen);
                span.Clear();
                ulong size = inode.Item.FileSize;
                if (a < pos && a < size) FileExtents.Read(Fs, Top.Tree, inode, a, span[..(int)Math.Min(bs, size - a)]);
                ulong tailBlock = b - bs;
                if (b > pos + (ulong)chunk && tailBlock < size && tailBlock >= a && (tailBlock > a || a == pos))
                    FileExtents.Read(Fs, Top.Tree, inode, tailBlock, span.Slice((int)(tailBlock - a), (int)Math.Min(bs, size - tailBlock)));
                data.Slice(written, chunk).CopyTo(span[(int)(pos - a)..]);

                // Overlapped extent items are adjacent in key order: they share leaves.
                int items = 8 + CountExtents(inode.Ino, a, b) / 8;
                var se = Fs.TryStart(items, out var h);
                if (se != Errno.OK) return written > 0 ? Errno.OK : se;
                try
                {
                    using (h)
                    {
                        // Allocate and write first: until the items point at it, the new space is
                        // unreachable, so a crash here loses nothing. A failed device write frees
                        // what was allocated (nothing references it) and changes no tree.
                        var pieces = new List<(ulong Disk, ulong Len, ulong FilePos)>();
                        ulong done = 0;
                        try
                        {
                            while (done < extLen)
                            {
                                var (disk, len) = space.AllocData(extLen - done, fromReservation: true, hint: 0);
                                dataReserved -= len;
                                pieces.Add((disk, len, a + done));
                                Fs.Device.Write(disk, span.Slice((int)done, (int)len));
                                done += len;
                            }
                        }
                        catch
                        {
                            foreach (var p in pieces) space.Free(p.Disk, p.Len, pin: false);
                            throw;
                        }
                        Fs.Stats.DataBytesWritten += (long)extLen;
                        Fs.Sched.Yield("write:data-written");
                        var t = Top.Tree;
                        using (t.Lock.Write())
                        {
                            long delta = 0;
                            FileExtents.Drop(h, t, Top.Id, inode.Ino, a, b, ref delta);
                            foreach (var (disk, len, fpos) in pieces)
                                FileExtents.InsertNew(h, t, Top.Id, inode.Ino, fpos, disk, len, FileExtentType.Regular);
                            using (Fs.CsumTree.Lock.Write())
                                foreach (var (disk, len, fpos) in pieces)
                                    FileExtents.InsertCsums(h, Fs.CsumTree, disk, span.Slice((int)(fpos - a), (int)len), Fs.BlockSize);
                            delta += (long)extLen;
                            inode.Item.Nbytes = (ulong)((long)inode.Item.Nbytes + delta);
                            if (extendSize && pos + (ulong)chunk > inode.Item.FileSize) inode.Item.FileSize = pos + (ulong)chunk;
                            Touch(ref inode.Item, h.Transid);
                            DirItems.PutInode(h, t, inode.Ino, inode.Item);
                        }
                    }
                }
                // Marks the transaction aborted if the handle was open when this was thrown; never catches.
                catch (Exception ex) when (AbortIfMidTransaction(inode.Ino, ex) && false) { }
                written += chunk;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
                space.Release(true, dataReserved);
            }
        }
        return Errno.OK;
    }

    private int CountExtents(ulong ino, ulong a, ulong b)
    {
        using var lk = Top.Tree.Lock.Read();
        return FileExtents.Overlapping(Top.Tree, ino, a, b, 4096).Count;
    }

    /// <summary>fsync and fdatasync: a full commit (every change, not only this file's, becomes
    /// durable; correct, and its cost is measured by the benchmark).</summary>
    public Errno Fsync(ulong ino, bool dataOnly = false)
    {
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        Put(inode);
        return Sync();
    }
}

using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>Items cloned per transaction.</summary>
    private const int CloneBatch = 16;

    /// <summary>
    /// Reflink (btrfs_clone): makes [dstOff, dstOff+len) of <paramref name="dst"/> refer to the
    /// data extents under [srcOff, srcOff+len) of <paramref name="src"/>, each with one more
    /// data reference; nothing is copied and no data space is used. Block-aligned ranges, not
    /// overlapping within one file; the caller holds both inodes' locks and checked the
    /// arguments. The destination's size becomes at least <paramref name="newSize"/>, growing
    /// with each batch of cloned items to the end of what they cover, never past it. Both ranges are written back and their ordered extents finished
    /// first, and the destination's cached pages dropped, so no later writeback lands over the
    /// cloned items. EOPNOTSUPP before any change if the source range holds inline data (it is
    /// not an extent to share: the caller copies it). Batches of items per transaction: ENOSPC
    /// for metadata part way leaves a prefix cloned, as on btrfs; <paramref name="cloned"/>
    /// says how long (block-aligned), so that copy_file_range reports a short copy of exactly
    /// that (with the size set at once to the clone's end, a failed second batch left a file
    /// grown past a prefix copy_file_range called nothing: a real-thread stress run found it).
    /// </summary>
    internal Errno CloneRange(Inode src, Inode dst, ulong srcOff, ulong dstOff, ulong len, ulong newSize, out ulong cloned)
    {
        cloned = 0;
        var ms = MappingOf(src);
        var md = MappingOf(dst);
        Writeback(ms, srcOff, srcOff + len, wait: true);
        WaitOrdered(ms, srcOff, srcOff + len);
        // Everything of the destination below the clone's end reaches the disk first, from its
        // size on disk on: the size on disk then grows to the clone's end in the transactions
        // that insert the cloned items, never past data still in the page cache (a commit in
        // between must not hold extents past the size on disk, nor a size past unwritten data).
        ulong wbFrom = Math.Min(md.DiskSize, dstOff) / (ulong)BlockSize * (ulong)BlockSize;
        Writeback(md, wbFrom, dstOff + len, wait: true);
        WaitOrdered(md, wbFrom, dstOff + len);
        Invalidate(md, dstOff, dstOff + len);
        var st = ms.Subvol.Tree;
        var dt = md.Subvol.Tree;
        using (st.Lock.Read())
            if (FileExtents.Overlapping(st, src.Ino, srcOff, srcOff + len).Any(mp => mp.Fe.Type == FileExtentType.Inline))
                return Errno.EOPNOTSUPP;
        // Across subvolumes with quotas on, the destination starts referencing the extents it
        // does not yet hold: their whole length counts against its groups' limits, so it is
        // reserved first (EDQUOT before any change), and the commit that accounts the clone
        // frees the reservation, as for a write.
        ulong reserved = st != dt && Fs.Quota.Enabled ? NewlyReferencedBytes(st, dt, src.Ino, srcOff, srcOff + len) : 0;
        if (reserved > 0)
        {
            var qe = Fs.Quota.Reserve(dt.Id, reserved);
            if (qe != Errno.OK) return qe;
        }
        try { return CloneItems(src, dst, md, st, dt, srcOff, dstOff, len, newSize, out cloned); }
        finally
        {
            // Handed to the transaction from inside a handle: a commit under way has already
            // taken its records, and one handed to it now would never be freed.
            if (reserved > 0)
                using (var h = Fs.StartReserved(0)) h.Transaction.AddQgroupRecord(dt.Id, reserved);
        }
    }

    /// <summary>Bytes of the distinct data extents under a source range that the destination
    /// tree does not reference yet (by its EXTENT_OWNER_REFs).</summary>
    private static ulong NewlyReferencedBytes(BTree st, BTree dt, ulong ino, ulong from, ulong to)
    {
        var extents = new Dictionary<ulong, ulong>();
        using (st.Lock.Read())
            foreach (var mp in FileExtents.Overlapping(st, ino, from, to))
                if (mp.Fe.DiskBytenr != 0) extents[mp.Fe.DiskBytenr] = mp.Fe.DiskNumBytes;
        ulong bytes = 0;
        foreach (var (bytenr, n) in extents)
            if (!Tx.OwnerRefs.Holds(dt, bytenr)) bytes += n;
        return bytes;
    }

    private Errno CloneItems(Inode src, Inode dst, Mapping md, BTree st, BTree dt, ulong srcOff, ulong dstOff, ulong len, ulong newSize, out ulong done)
    {
        done = 0;
        Span<byte> buf = stackalloc byte[FileExtentItem.RegularSize];
        while (done < len)
        {
            var se = Fs.TryStart(3 * CloneBatch + 2, out var h);
            if (se != Errno.OK) return se;
            ulong chunkEnd;
            using (h)
            {
                // Two trees' write locks in tree id order (one if the files share a subvolume).
                var first = st.Id <= dt.Id ? st : dt;
                var second = st.Id <= dt.Id ? dt : st;
                first.Lock.EnterWrite();
                if (second != first) second.Lock.EnterWrite();
                try
                {
                    ulong from = srcOff + done, to = srcOff + len;
                    var maps = FileExtents.Overlapping(st, src.Ino, from, to, CloneBatch);
                    chunkEnd = maps.Count == CloneBatch ? Math.Min(maps[^1].End, to) : to;
                    long nbytes = 0;
                    // Drop what the destination had there (its references go), then add the clones.
                    while (!FileExtents.Drop(h, dt, dst.Ino, dstOff + done, dstOff + (chunkEnd - srcOff), ref nbytes, 64)) { }
                    foreach (var mp in maps)
                    {
                        ulong a = Math.Max(mp.Pos, from), b = Math.Min(mp.End, chunkEnd);
                        if (a >= b) continue;
                        var fe = mp.Fe;
                        fe.Offset += a - mp.Pos;
                        fe.NumBytes = b - a;
                        ulong at = dstOff + (a - srcOff);
                        fe.Write(buf);
                        dt.Put(h, FileExtents.ExtentKey(dst.Ino, at), buf);
                        if (fe.DiskBytenr != 0)
                            h.FileExtentRef(dt, fe.DiskBytenr, fe.DiskNumBytes, dst.Ino, at - fe.Offset, +1);
                        nbytes += (long)fe.NumBytes;
                    }
                    // Size and byte count change under the tree lock, as ordered-extent completion
                    // (which holds it, not the inode lock) changes them.
                    // The size grows to the end of what is cloned so far (the whole clone's
                    // end with its last batch): a batch that fails leaves the file as long as
                    // the prefix cloned before it, and no longer.
                    dst.Item.Nbytes = (ulong)Math.Max(0, (long)dst.Item.Nbytes + nbytes);
                    ulong sizeNow = Math.Min(newSize, dstOff + (chunkEnd - srcOff));
                    if (sizeNow > dst.Item.FileSize) dst.Item.FileSize = sizeNow;
                    using (md.State.Lock()) md.DiskSize = Math.Max(md.DiskSize, sizeNow);
                    dst.Item.Transid = h.Transid;
                    DirItems.PutInode(h, dt, dst);
                }
                finally
                {
                    if (second != first) second.Lock.ExitWrite();
                    first.Lock.ExitWrite();
                }
            }
            using (md.State.Lock()) md.Es.Remove(dstOff + done, dstOff + (chunkEnd - srcOff));
            done = chunkEnd - srcOff;
        }
        return Errno.OK;
    }
}

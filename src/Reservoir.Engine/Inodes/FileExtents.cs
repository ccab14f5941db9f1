using System.Buffers;
using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// File extent items (SPEC.md §5.4) and data checksums (§5.5): finding what backs a file range,
/// cutting extents out of a range with the matching reference changes, and reading data with
/// checksum verification. Callers hold the inode lock; tree locks are taken here or by the
/// caller as each method says.
/// </summary>
internal static class FileExtents
{
    public static Key ExtentKey(ulong ino, ulong pos) => new(ino, KeyTypes.ExtentData, pos);
    public static Key CsumKey(ulong bytenr) => new(TreeIds.CsumObjectId, KeyTypes.ExtentCsum, bytenr);

    public readonly record struct Mapping(ulong Pos, FileExtentItem Fe, byte[]? Inline)
    {
        public ulong End => Pos + Fe.NumBytes;
    }

    /// <summary>
    /// Bytes of [start, end) the file's extent items cover (none overlap, so their overlaps
    /// add up), without a list. <paramref name="path"/> is read-only and reused by a caller
    /// asking of ranges in ascending order: a range starting inside the leaf the path is in
    /// searches that leaf alone. Caller holds the fs tree lock (read or write) across the calls.
    /// </summary>
    public static ulong CoveredBytes(BTree t, ulong ino, ulong start, ulong end, TreePath path)
    {
        ulong covered = 0;
        for (bool ok = SeekFirst(t, ino, start, path); ok && NextInRange(path, ino, end, out ulong pos, out var fe); ok = t.Next(path))
        {
            ulong s = Math.Max(pos, start), e = Math.Min(pos + fe.NumBytes, end);
            if (e > s) covered += e - s;
        }
        return covered;
    }

    /// <summary>Positions <paramref name="path"/> (read-only) at the file's last extent item at
    /// or below <paramref name="start"/>, which may reach into a range from there, else at its
    /// first item; false past the end of the tree. A path already in the leaf that spans the
    /// key searches that leaf alone (<see cref="BTree.SearchNear"/>).</summary>
    private static bool SeekFirst(BTree t, ulong ino, ulong start, TreePath path)
    {
        var key = ExtentKey(ino, start);
        bool ok = t.SearchNear(key, path);
        if (!ok && path.Slot > 0 && path.Slot <= path.Leaf.NrItems) { path.Slot--; ok = true; }
        else if (!ok) ok = t.SeekLE(key, path);
        if (ok && (path.Key.ObjectId != ino || path.Key.Type != KeyTypes.ExtentData)) return t.Next(path);
        return ok || t.SeekGE(ExtentKey(ino, 0), path);
    }

    /// <summary>Whether the path is at an extent item of the file starting below
    /// <paramref name="end"/>, and that item (corruption if it does not parse).</summary>
    private static bool NextInRange(TreePath path, ulong ino, ulong end, out ulong pos, out FileExtentItem fe)
    {
        var k = path.Key;
        pos = k.Offset;
        fe = default;
        if (k.ObjectId != ino || k.Type != KeyTypes.ExtentData || k.Offset >= end) return false;
        if (!FileExtentItem.TryRead(path.Data, out fe)) throw new CorruptionException($"malformed EXTENT_DATA at offset {k.Offset}", inode: ino);
        return true;
    }

    /// <summary>Extent items overlapping [start, end), in file order. Caller holds the fs tree
    /// lock (read or write).</summary>
    public static List<Mapping> Overlapping(BTree t, ulong ino, ulong start, ulong end, int max = int.MaxValue)
    {
        var list = new List<Mapping>();
        using var lease = TreePath.Rent(out var path);
        for (bool ok = SeekFirst(t, ino, start, path); ok && list.Count < max && NextInRange(path, ino, end, out ulong pos, out var fe); ok = t.Next(path))
        {
            byte[]? inline = fe.Type == FileExtentType.Inline ? path.Data[FileExtentItem.HeaderSize..].ToArray() : null;
            if (pos + fe.NumBytes > start) list.Add(new Mapping(pos, fe, inline));
        }
        return list;
    }

    /// <summary>
    /// Removes [start, end) from the file's extent items: items inside go, items crossing an
    /// edge are trimmed or split, each with the data reference change it implies. Handles at
    /// most <paramref name="maxItems"/> items and returns false if more remain. Returns the
    /// change in referenced bytes (inode nbytes) through <paramref name="nbytesDelta"/>.
    /// Caller holds the fs tree write lock. Unless <paramref name="logged"/> (an ordered
    /// extent's completion, which records its span for the fsync log itself), the inode's
    /// next fsync commits.
    /// </summary>
    public static bool Drop(TransHandle h, BTree t, ulong ino, ulong start, ulong end, ref long nbytesDelta, int maxItems = int.MaxValue, bool logged = false)
    {
        if (!logged) h.Transaction.BlockLog(t.Id, ino);
        var items = Overlapping(t, ino, start, end, maxItems == int.MaxValue ? int.MaxValue : maxItems + 1);
        bool complete = items.Count <= maxItems;
        if (!complete) items.RemoveAt(items.Count - 1);
        Span<byte> buf = stackalloc byte[FileExtentItem.RegularSize];
        foreach (var m in items)
        {
            ulong s = m.Pos, e = m.End;
            var fe = m.Fe;
            if (fe.Type == FileExtentType.Inline)
            {
                t.Delete(h, ExtentKey(ino, s));
                continue;
            }
            ulong refOff = s - fe.Offset;
            if (s < start && e > end)
            {
                // Split: keep the head in place, add the tail as a new item of the same extent.
                var head = fe; head.NumBytes = start - s;
                head.Write(buf); t.Put(h, ExtentKey(ino, s), buf);
                var tail = fe; tail.Offset = fe.Offset + (end - s); tail.NumBytes = e - end;
                tail.Write(buf); t.Put(h, ExtentKey(ino, end), buf);
                h.FileExtentRef(t, fe.DiskBytenr, fe.DiskNumBytes, ino, refOff, +1);
                nbytesDelta -= (long)(end - start);
            }
            else if (s < start)
            {
                var head = fe; head.NumBytes = start - s;
                head.Write(buf); t.Put(h, ExtentKey(ino, s), buf);
                nbytesDelta -= (long)(e - start);
            }
            else if (e > end)
            {
                t.Delete(h, ExtentKey(ino, s));
                var tail = fe; tail.Offset = fe.Offset + (end - s); tail.NumBytes = e - end;
                tail.Write(buf); t.Put(h, ExtentKey(ino, end), buf);
                nbytesDelta -= (long)(end - s);
            }
            else
            {
                t.Delete(h, ExtentKey(ino, s));
                h.FileExtentRef(t, fe.DiskBytenr, fe.DiskNumBytes, ino, refOff, -1);
                nbytesDelta -= (long)fe.NumBytes;
            }
        }
        return complete;
    }

    /// <summary>Adds a file extent item for a newly allocated and written extent, with its
    /// reference. Caller holds the fs tree write lock. <paramref name="logged"/>: as for
    /// <see cref="Drop"/>.</summary>
    public static void InsertNew(TransHandle h, BTree t, ulong ino, ulong pos, ulong bytenr, ulong len, FileExtentType type, bool logged = false)
    {
        if (!logged) h.Transaction.BlockLog(t.Id, ino);
        Span<byte> buf = stackalloc byte[FileExtentItem.RegularSize];
        new FileExtentItem { Generation = h.Transid, RamBytes = len, Type = type, DiskBytenr = bytenr, DiskNumBytes = len, Offset = 0, NumBytes = len }.Write(buf);
        t.Put(h, ExtentKey(ino, pos), buf);
        h.FileExtentRef(t, bytenr, len, ino, pos, +1, isNew: true);
    }

    public static void InsertInline(TransHandle h, BTree t, ulong ino, ReadOnlySpan<byte> data)
    {
        var d = t.Insert(h, ExtentKey(ino, 0), FileExtentItem.HeaderSize + data.Length);
        new FileExtentItem { Generation = h.Transid, RamBytes = (ulong)data.Length, Type = FileExtentType.Inline }.WriteHeader(d);
        data.CopyTo(d[FileExtentItem.HeaderSize..]);
    }

    /// <summary>Writes one CRC32C per block of a new extent. Caller holds the csum tree write lock.</summary>
    public static void InsertCsums(TransHandle h, BTree csumTree, ulong bytenr, ReadOnlySpan<byte> data, int blockSize)
    {
        int n = data.Length / blockSize;
        var d = csumTree.Insert(h, CsumKey(bytenr), n * 4);
        for (int i = 0; i < n; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(d[(i * 4)..], Crc32C.Compute(data.Slice(i * blockSize, blockSize)));
    }

    /// <summary>
    /// Reads file data [off, off+dst.Length) (already clamped to the file size): holes and
    /// preallocated ranges read as zeros; regular extents are read in whole blocks and each
    /// block's checksum verified. Caller holds the inode lock; tree locks are taken here.
    /// </summary>
    public static void Read(FsInfo fs, BTree t, Inode inode, ulong off, Span<byte> dst)
    {
        ulong end = off + (ulong)dst.Length;
        List<Mapping> maps;
        using (t.Lock.Read()) maps = Overlapping(t, inode.Ino, off, end);
        dst.Clear();
        int bs = fs.BlockSize;
        bool verify = (inode.Item.Flags & InodeFlags.NoDataSum) == 0;
        foreach (var m in maps)
        {
            ulong a = Math.Max(m.Pos, off), b = Math.Min(m.End, end);
            if (a >= b) continue;
            var target = dst.Slice((int)(a - off), (int)(b - a));
            if (m.Fe.Type == FileExtentType.Inline)
            {
                var src = m.Inline.AsSpan();
                int from = (int)(a - m.Pos);
                if (from < src.Length) src[from..Math.Min(src.Length, from + target.Length)].CopyTo(target);
                continue;
            }
            if (m.Fe.Type == FileExtentType.Prealloc || m.Fe.DiskBytenr == 0) continue;
            // Offsets within the on-disk extent, widened to whole blocks for verification.
            ulong inExt = m.Fe.Offset + (a - m.Pos);
            ulong blkStart = inExt / (ulong)bs * (ulong)bs;
            ulong blkEnd = Units.AlignUp(inExt + (b - a), (ulong)bs);
            if (blkEnd > m.Fe.DiskNumBytes) throw new CorruptionException($"file extent at {m.Pos} reaches past its disk extent", m.Fe.DiskBytenr, inode.Ino);
            int len = (int)(blkEnd - blkStart);
            var buf = ArrayPool<byte>.Shared.Rent(len);
            try
            {
                fs.Device.Read(m.Fe.DiskBytenr + blkStart, buf.AsSpan(0, len));
                if (verify) VerifyCsums(fs, inode, m.Fe.DiskBytenr, blkStart, buf.AsSpan(0, len));
                buf.AsSpan((int)(inExt - blkStart), target.Length).CopyTo(target);
            }
            finally { ArrayPool<byte>.Shared.Return(buf); }
        }
    }

    private static void VerifyCsums(FsInfo fs, Inode inode, ulong extent, ulong fromInExtent, ReadOnlySpan<byte> data)
    {
        byte[]? sums;
        using (fs.CsumTree.Lock.Read()) sums = fs.CsumTree.Get(CsumKey(extent));
        int bs = fs.BlockSize;
        int first = (int)(fromInExtent / (ulong)bs);
        int n = data.Length / bs;
        if (sums == null || sums.Length < (first + n) * 4)
            throw new FsException(Errno.EIO, $"data extent {extent} of inode {inode.Ino} has no checksums") { Inode = inode.Ino, Block = extent };
        for (int i = 0; i < n; i++)
        {
            uint want = BinaryPrimitives.ReadUInt32LittleEndian(sums.AsSpan((first + i) * 4));
            uint got = Crc32C.Compute(data.Slice(i * bs, bs));
            if (want != got)
            {
                ulong blk = extent + fromInExtent + (ulong)(i * bs);
                throw new FsException(Errno.EIO, $"checksum mismatch in data block {blk} of inode {inode.Ino} (stored {want:x8}, computed {got:x8})") { Inode = inode.Ino, Block = blk };
            }
        }
    }
}

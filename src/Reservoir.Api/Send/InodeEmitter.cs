using System.Buffers;
using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>
/// The commands that make one inode on the receiving side, shared by full and incremental
/// sends. The order of the commands for one inode protects what the receiver would otherwise
/// lose:
/// <list type="bullet">
/// <item>data before ownership and mode: a write on the receiving side clears set-user-ID and
/// file capabilities, so CHOWN and CHMOD come after the last WRITE;</item>
/// <item>xattrs after CHOWN and CHMOD: chown clears security.capability, and a POSIX ACL set
/// before would be rewritten by the chmod;</item>
/// <item>a directory's mode, xattrs and times after its children (the callers' part): a
/// read-only directory would refuse them, a default ACL would be inherited by them, and every
/// child created would move the directory's mtime;</item>
/// <item>holes stay holes: only the ranges SEEK_DATA finds are written, then a TRUNCATE gives the
/// size when the data ends before it.</item>
/// </list>
/// </summary>
internal sealed class InodeEmitter(SendStreamWriter w)
{
    public SendStreamWriter W => w;
    public long Inodes, DataBytes;

    /// <summary>MKFILE, MKDIR, SYMLINK, MKFIFO, MKSOCK or MKNOD at <paramref name="path"/>.</summary>
    public void Create(ISendSource src, string srcPath, string path, SendStat c)
    {
        Inodes++;
        switch (c.Type)
        {
            case 0x4000: w.Begin(SendCommand.Mkdir).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).Finish(); break;
            case 0x8000: w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).Finish(); break;
            case 0xA000:
                w.Begin(SendCommand.Symlink).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).Path(SendAttr.PathLink, src.ReadLink(srcPath)).Finish();
                break;
            case 0x1000:
                w.Begin(SendCommand.Mkfifo).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, 0).Finish();
                break;
            case 0xC000:
                w.Begin(SendCommand.Mksock).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, 0).Finish();
                break;
            case 0x2000 or 0x6000:
                w.Begin(SendCommand.Mknod).Path(SendAttr.Path, path).U64(SendAttr.Ino, c.Ino).U64(SendAttr.Mode, c.Mode).U64(SendAttr.Rdev, c.Rdev).Finish();
                break;
            default:
                throw new FsException(Errno.EINVAL, $"send: '{srcPath}' has file type {c.Type >> 12}, which no stream can carry");
        }
    }

    public void Chown(string path, SendStat c) =>
        w.Begin(SendCommand.Chown).Path(SendAttr.Path, path).U64(SendAttr.Uid, c.Uid).U64(SendAttr.Gid, c.Gid).Finish();

    public void Chmod(string path, SendStat c) =>
        w.Begin(SendCommand.Chmod).Path(SendAttr.Path, path).U64(SendAttr.Mode, c.Mode & 0xFFF).Finish();

    public void SetXattr(string path, byte[] name, byte[] value) =>
        w.Begin(SendCommand.SetXattr).Path(SendAttr.Path, path).Bytes(SendAttr.XattrName, name).Bytes(SendAttr.XattrData, value).Finish();

    public void Utimes(string path, SendStat c) =>
        w.Begin(SendCommand.Utimes).Path(SendAttr.Path, path).Time(SendAttr.Atime, c.Atime).Time(SendAttr.Mtime, c.Mtime).Time(SendAttr.Ctime, c.Ctime).Finish();

    /// <summary>Owner, mode, xattrs and times of a new inode, in that order.</summary>
    public void Attributes(ISendSource src, string srcPath, string path, SendStat c)
    {
        Chown(path, c);
        if (!c.IsLnk) Chmod(path, c);
        foreach (var (name, value) in src.Xattrs(srcPath)) SetXattr(path, name, value);
        Utimes(path, c);
    }

    /// <summary>Where the stream has written each extent's bytes so far, for a full send to send
    /// a later file's range of the same extent (a reflink, or a copy the filesystem shared) as a
    /// CLONE of it: the receiver shares it too, as btrfs's send does. Null: no clones (an
    /// incremental send writes new files under names that change later in the stream).</summary>
    public CloneSources? Clones;

    /// <summary>Block alignment of CLONE commands: FICLONERANGE refuses an unaligned length that
    /// does not reach the end of the file, so a file's last partial block is written instead.</summary>
    private const long CloneAlign = 4096;

    /// <summary>The data of a new file: its data ranges, then its size if they end before it. A
    /// range whose extent the stream wrote before, for an earlier file, goes as a CLONE of it.</summary>
    public void Data(ISendSource src, string srcPath, string path, SendStat c)
    {
        if (Clones == null || c.Size == 0)
        {
            Data(src, srcPath, path, c, null, null, 0);
            return;
        }
        long size = (long)c.Size, end = 0;
        byte[] buf = ArrayPool<byte>.Shared.Rent(SendStreamFormat.MaxWriteData);
        try
        {
            using var f = src.Open(srcPath);
            var map = f.Extents();
            long at = 0;
            while (at < size)
            {
                long data = f.NextData(at);
                if (data < 0 || data >= size) break;
                long hole = Math.Min(f.NextHole(data), size);
                for (long off = data; off < hole;)
                {
                    // The part of [off, hole) that lies in one extent, if the map says which.
                    var piece = map == null ? null : Clones.Piece(map, off, hole);
                    long stop = piece?.End ?? hole;
                    if (piece is { } pc && (stop - off) / CloneAlign > 0 && Clones.Find(pc.Bytenr, pc.ExtentOffset, (stop - off) / CloneAlign * CloneAlign) is { } from)
                    {
                        long len = (stop - off) / CloneAlign * CloneAlign;
                        if (len > 0)
                        {
                            W.Begin(SendCommand.Clone).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)off).U64(SendAttr.CloneLen, (ulong)len)
                                .Uuid(SendAttr.CloneUuid, from.Uuid).U64(SendAttr.CloneCtransid, from.Ctransid)
                                .Path(SendAttr.ClonePath, from.Path).U64(SendAttr.CloneOffset, (ulong)from.Offset).Finish();
                            CloneBytes += len;
                            off += len;
                            end = off;
                            if (off >= stop) continue;
                        }
                    }
                    long start = off;
                    while (off < stop)
                    {
                        int want = (int)Math.Min(SendStreamFormat.MaxWriteData, stop - off);
                        int n = ReadFull(f, off, buf.AsSpan(0, want));
                        if (n <= 0) { stop = off; hole = off; break; } // shorter than lstat said: the size below still holds
                        W.Begin(SendCommand.Write).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)off)
                            .Bytes(SendAttr.Data, buf.AsSpan(0, n)).Finish();
                        DataBytes += n;
                        off += n;
                        end = off;
                    }
                    if (piece is { } written && off > start) Clones.Add(written.Bytenr, written.ExtentOffset + (ulong)(start - written.FileStart), off - start, path, start);
                }
                at = hole;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        if (end != size) W.Begin(SendCommand.Truncate).Path(SendAttr.Path, path).U64(SendAttr.Size, c.Size).Finish();
    }

    public long CloneBytes;

    /// <summary>
    /// The data of <paramref name="c"/> at <paramref name="path"/>; with <paramref name="parent"/>
    /// (the same file in the subvolume the stream is sent against, <paramref name="parentSize"/>
    /// bytes), only the chunks that differ from it: both are read, as rsync does, so an
    /// unchanged range costs reads but no stream. A range the file no longer has data in, but the
    /// parent had, is written as zeros (version 1 has no hole punching; btrfs's v1 send does the
    /// same). The size is set last whenever it differs or the data ends before it.
    /// </summary>
    public void Data(ISendSource src, string srcPath, string path, SendStat c, ISendSource? parent, string? parentPath, ulong parentSize)
    {
        long size = (long)c.Size, end = 0, psize = parent == null ? 0 : (long)parentSize;
        bool sizeDiffers = parent == null || (ulong)size != parentSize;
        if (size > 0)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent(SendStreamFormat.MaxWriteData);
            byte[]? pbuf = parent == null ? null : ArrayPool<byte>.Shared.Rent(SendStreamFormat.MaxWriteData);
            try
            {
                using var f = src.Open(srcPath);
                using var pf = parent?.Open(parentPath!);
                var map = pf == null ? null : f.Extents();
                var pmap = map == null ? null : pf!.Extents();
                long at = 0;
                while (at < size)
                {
                    // Where this file has data; with a parent, also where the parent had data
                    // (those ranges may have become holes, which read as zeros here).
                    long data = f.NextData(at);
                    if (pf != null && at < psize)
                    {
                        long pdata = pf.NextData(at);
                        if (pdata >= 0 && pdata < psize && (data < 0 || pdata < data)) data = pdata;
                    }
                    if (data < 0 || data >= size) break;
                    long hole = Math.Min(f.NextHole(data), size);
                    if (pf != null && data < psize) hole = Math.Max(hole, Math.Min(pf.NextHole(data), Math.Min(psize, size)));
                    for (long off = data; off < hole;)
                    {
                        int want = (int)Math.Min(SendStreamFormat.MaxWriteData, hole - off);
                        if (pmap != null && off + want <= psize && SameExtents(map!, pmap, off, want))
                        {
                            off += want; // shared with the parent: the same bytes, not read
                            continue;
                        }
                        int n = ReadFull(f, off, buf.AsSpan(0, want));
                        if (n < want) buf.AsSpan(n, want - n).Clear(); // a hole at the end of the range
                        bool same = false;
                        if (pf != null && off < psize)
                        {
                            int pn = (int)Math.Min(want, psize - off);
                            int got = ReadFull(pf, off, pbuf.AsSpan(0, pn));
                            if (got < pn) pbuf.AsSpan(got, pn - got).Clear();
                            same = pn == want && buf.AsSpan(0, want).SequenceEqual(pbuf.AsSpan(0, want));
                        }
                        else if (pf != null) same = !buf.AsSpan(0, want).ContainsAnyExcept((byte)0); // past the old end: the size change gives zeros
                        if (!same)
                        {
                            w.Begin(SendCommand.Write).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)off)
                                .Bytes(SendAttr.Data, buf.AsSpan(0, want)).Finish();
                            DataBytes += want;
                            end = Math.Max(end, off + want);
                        }
                        off += want;
                    }
                    at = hole;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
                if (pbuf != null) ArrayPool<byte>.Shared.Return(pbuf);
            }
        }
        if (parent == null ? end != size : sizeDiffers)
            w.Begin(SendCommand.Truncate).Path(SendAttr.Path, path).U64(SendAttr.Size, c.Size).Finish();
    }

    /// <summary>Whether every byte of [off, off + len) is at the same place of the same extent in
    /// both maps (or a hole in both). Inline extents live in tree leaves, not extents: unknown.</summary>
    internal static bool SameExtents(IReadOnlyList<Engine.ExtentMapping> a, IReadOnlyList<Engine.ExtentMapping> b, long off, long len)
    {
        for (long pos = off, end = off + len; pos < end;)
        {
            var (ka, na) = At(a, pos);
            var (kb, nb) = At(b, pos);
            if (ka.Type == "inline" || kb.Type == "inline" || ka != kb) return false;
            pos = Math.Min(na, nb);
        }
        return true;
    }

    /// <summary>What is at file offset <paramref name="pos"/>: the extent's device address, the
    /// offset into it and its type (all zero for a hole), and where that stops.</summary>
    private static ((ulong Bytenr, ulong Offset, string Type) Key, long Next) At(IReadOnlyList<Engine.ExtentMapping> map, long pos)
    {
        int lo = 0, hi = map.Count - 1, found = -1;
        while (lo <= hi) // the last extent starting at or before pos
        {
            int mid = (lo + hi) >>> 1;
            if ((long)map[mid].FileOffset <= pos) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        if (found >= 0 && pos < (long)(map[found].FileOffset + map[found].Length))
        {
            var m = map[found];
            long next = (long)(m.FileOffset + m.Length);
            if (m.Type == "regular" && m.DiskBytenr == 0) return ((0, 0, ""), next); // an explicit hole
            return ((m.DiskBytenr, m.ExtentOffset + (ulong)(pos - (long)m.FileOffset), m.Type), next);
        }
        long hole = found + 1 < map.Count ? (long)map[found + 1].FileOffset : long.MaxValue;
        return ((0, 0, ""), hole);
    }

    private static int ReadFull(ISendFile f, long off, Span<byte> buf)
    {
        int got = 0;
        while (got < buf.Length)
        {
            int n = f.Read(off + got, buf[got..]);
            if (n <= 0) break;
            got += n;
        }
        return got;
    }
}

/// <summary>
/// The extent ranges a receiver will have when a range comes to be sent, by extent: which file
/// (a path in the stream's subvolume, or in the parent of an incremental stream, with that
/// subvolume's uuid and ctransid) holds those bytes at which offset. A later range of the same
/// extent is sent as a CLONE from there. Only ranges wholly inside one known range are cloned;
/// the rest is written. <see cref="LoadMore"/>, when set, is asked once, at the first range not
/// found, for more sources (an incremental send's index of its parent's extents, built only if
/// a new file has an extent at all).
/// </summary>
internal sealed class CloneSources(Guid uuid, ulong ctransid)
{
    private readonly Dictionary<ulong, List<(ulong ExtentOffset, long Length, Guid Uuid, ulong Ctransid, string Path, long FileOffset)>> _known = new();
    public Func<CloneSources, bool>? LoadMore;

    /// <summary>The extent piece of a file from <paramref name="off"/>: which extent, where in it,
    /// and where the piece ends (at <paramref name="limit"/> at most); null in a hole or an inline
    /// or preallocated extent (nothing to share).</summary>
    public (ulong Bytenr, ulong ExtentOffset, long FileStart, long End)? Piece(IReadOnlyList<Engine.ExtentMapping> map, long off, long limit)
    {
        int lo = 0, hi = map.Count - 1, found = -1;
        while (lo <= hi) // the last extent starting at or before off (the map is in file order)
        {
            int mid = (lo + hi) >>> 1;
            if ((long)map[mid].FileOffset <= off) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        if (found < 0) return null;
        var m = map[found];
        long start = (long)m.FileOffset, stop = start + (long)m.Length;
        if (stop <= off || m.Type != "regular" || m.DiskBytenr == 0) return null;
        return (m.DiskBytenr, m.ExtentOffset + (ulong)(off - start), off, Math.Min(stop, limit));
    }

    public (Guid Uuid, ulong Ctransid, string Path, long Offset)? Find(ulong bytenr, ulong extentOffset, long length)
    {
        if (Lookup(bytenr, extentOffset, length) is { } hit) return hit;
        var more = LoadMore;
        LoadMore = null;
        return more != null && more(this) ? Lookup(bytenr, extentOffset, length) : null;
    }

    private (Guid, ulong, string, long)? Lookup(ulong bytenr, ulong extentOffset, long length)
    {
        if (!_known.TryGetValue(bytenr, out var list)) return null;
        foreach (var w in list)
            if (extentOffset >= w.ExtentOffset && extentOffset + (ulong)length <= w.ExtentOffset + (ulong)w.Length)
                return (w.Uuid, w.Ctransid, w.Path, w.FileOffset + (long)(extentOffset - w.ExtentOffset));
        return null;
    }

    /// <summary>A range this stream wrote, at <paramref name="path"/> in its own subvolume.</summary>
    public void Add(ulong bytenr, ulong extentOffset, long length, string path, long fileOffset) =>
        Add(uuid, ctransid, bytenr, extentOffset, length, path, fileOffset);

    public void Add(Guid fromUuid, ulong fromCtransid, ulong bytenr, ulong extentOffset, long length, string path, long fileOffset)
    {
        if (length <= 0) return;
        if (!_known.TryGetValue(bytenr, out var list)) _known[bytenr] = list = new();
        list.Add((extentOffset, length, fromUuid, fromCtransid, path, fileOffset));
    }

    /// <summary>Every regular extent range of a file of <paramref name="size"/> bytes whose
    /// extent map is <paramref name="map"/>, as a source in subvolume <paramref name="fromUuid"/>
    /// (cut at the end of the file: a clone may not read past it).</summary>
    public void AddFile(Guid fromUuid, ulong fromCtransid, string path, long size, IReadOnlyList<Engine.ExtentMapping> map)
    {
        foreach (var m in map)
        {
            if (m.Type != "regular" || m.DiskBytenr == 0 || (long)m.FileOffset >= size) continue;
            long len = Math.Min((long)m.Length, size - (long)m.FileOffset);
            Add(fromUuid, fromCtransid, m.DiskBytenr, m.ExtentOffset, len, path, (long)m.FileOffset);
        }
    }
}

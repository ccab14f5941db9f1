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

    /// <summary>Where the receiver will have each extent's bytes (<see cref="CloneSources"/>), so
    /// that a new file's range of an extent already there (a reflink, or a copy the filesystem
    /// shared) goes as a CLONE of it and the receiver shares it too, as btrfs's send does. Null:
    /// every range is written (a changed file, or new files once their names start to move).</summary>
    public CloneSources? Clones;

    /// <summary>Block alignment of CLONE commands: FICLONERANGE refuses an unaligned length that
    /// does not reach the end of the file, so a file's last partial block is written instead.</summary>
    private const long CloneAlign = 4096;

    /// <summary>How much of a new file is read at once (a multiple of what a WRITE carries: 48 KiB
    /// in version 1, 128 KiB in 2; about 1 MiB).</summary>
    private int ReadChunk => (1 << 20) / w.MaxWriteData * w.MaxWriteData;

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
        byte[] buf = ArrayPool<byte>.Shared.Rent(ReadChunk);
        try
        {
            using var f = src.Open(srcPath);
            var map = f.Extents();
            long at = 0;
            while (at < size)
            {
                // Where data is: from the extent map when there is one (a read-only subvolume's
                // data has all reached its extents), which spares two lseeks through a mount per
                // file; else SEEK_DATA and SEEK_HOLE.
                long data, hole;
                if (map != null)
                {
                    var next = ExtentMaps.NextData(map, at, size);
                    if (next is not { } range) break;
                    (data, hole) = range;
                }
                else
                {
                    data = f.NextData(at);
                    if (data < 0 || data >= size) break;
                    hole = Math.Min(f.NextHole(data), size);
                }
                if (NoData)
                {
                    UpdateExtent(path, data, hole - data); // writes nothing: the TRUNCATE below gives the size
                    at = hole;
                    continue;
                }
                for (long off = data; off < hole;)
                {
                    // The part of [off, hole) that lies in one extent, if the map says which.
                    var piece = map == null ? null : ExtentMaps.Piece(map, off, hole);
                    long stop = piece?.End ?? hole;
                    long len = (stop - off) / CloneAlign * CloneAlign;
                    if (piece is { } pc && len > 0 && Clones.Find(pc.Bytenr, pc.ExtentOffset, len) is { } from)
                    {
                        W.Begin(SendCommand.Clone).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)off).U64(SendAttr.CloneLen, (ulong)len)
                            .Uuid(SendAttr.CloneUuid, from.Uuid).U64(SendAttr.CloneCtransid, from.Ctransid)
                            .Path(SendAttr.ClonePath, from.Path).U64(SendAttr.CloneOffset, (ulong)from.Offset).Finish();
                        CloneBytes += len;
                        off += len;
                        end = off;
                        if (off >= stop) continue;
                    }
                    long start = off;
                    while (off < stop)
                    {
                        // Read a large piece at a time (one request through a mount, not one per
                        // command), then send it as WRITEs of at most 48 KiB.
                        int want = (int)Math.Min(ReadChunk, stop - off);
                        int n = ReadFull(f, off, buf.AsSpan(0, want));
                        if (n <= 0) { stop = off; hole = off; break; } // shorter than lstat said: the size below still holds
                        for (int sent = 0; sent < n;)
                        {
                            int k = Math.Min(w.MaxWriteData, n - sent);
                            W.Begin(SendCommand.Write).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)(off + sent))
                                .Bytes(SendAttr.Data, buf.AsSpan(sent, k)).Finish();
                            sent += k;
                        }
                        DataBytes += n;
                        off += n;
                        end = off;
                        if (n < want) { stop = off; hole = off; break; }
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
    /// <summary>`send --no-data`: where data is, as UPDATE_EXTENT (path, offset, size) commands,
    /// instead of the data; nothing is read that the extent maps can answer.</summary>
    public bool NoData { get; init; }

    private void UpdateExtent(string path, long offset, long length) =>
        w.Begin(SendCommand.UpdateExtent).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)offset).U64(SendAttr.Size, (ulong)length).Finish();
    /// <summary>Bytes a version-2 stream punched out instead of writing zeros.</summary>
    public long HoleBytes;
    private const uint FallocPunchHoleKeepSize = 3;

    /// <summary>
    /// The data of <paramref name="c"/> at <paramref name="path"/>; with <paramref name="parent"/>
    /// (the same file in the subvolume the stream is sent against, <paramref name="parentSize"/>
    /// bytes), only the chunks that differ from it: both are read, as rsync does, so an
    /// unchanged range costs reads but no stream. A range the file no longer has data in, but the
    /// parent had, is punched in a version-2 stream (FALLOCATE) and written as zeros in version 1,
    /// which has no hole punching (btrfs's v1 send does the same). The size is set last whenever
    /// it differs or the data ends before it.
    /// </summary>
    public void Data(ISendSource src, string srcPath, string path, SendStat c, ISendSource? parent, string? parentPath, ulong parentSize)
    {
        long size = (long)c.Size, end = 0, psize = parent == null ? 0 : (long)parentSize;
        bool sizeDiffers = parent == null || (ulong)size != parentSize;
        bool punch = parent != null && w.Version >= 2;
        if (size > 0)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent(w.MaxWriteData);
            byte[]? pbuf = parent == null ? null : ArrayPool<byte>.Shared.Rent(w.MaxWriteData);
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
                    // Version 2: where this file has a hole but the parent had data, the hole is
                    // punched (FALLOCATE) rather than written as zeros.
                    long newData = -1, newHole = -1;
                    for (long off = data; off < hole;)
                    {
                        if (punch && off < psize)
                        {
                            if (off >= newHole)
                            {
                                newData = f.NextData(off);
                                if (newData < 0 || newData > hole) newData = hole;
                                newHole = newData >= hole ? hole : Math.Min(f.NextHole(newData), hole);
                            }
                            if (off < newData)
                            {
                                long stop = Math.Min(newData, psize);
                                w.Begin(SendCommand.Fallocate).Path(SendAttr.Path, path).U32(SendAttr.FallocateMode, FallocPunchHoleKeepSize)
                                    .U64(SendAttr.FileOffset, (ulong)off).U64(SendAttr.Size, (ulong)(stop - off)).Finish();
                                HoleBytes += stop - off;
                                off = newData;
                                continue;
                            }
                        }
                        int want = (int)Math.Min(w.MaxWriteData, hole - off);
                        if (punch && off < psize) want = (int)Math.Min(want, newHole - off); // a WRITE stops where the next hole starts
                        if (pmap != null && off + want <= psize && ExtentMaps.Same(map!, pmap, off, want))
                        {
                            off += want; // shared with the parent: the same bytes, not read
                            continue;
                        }
                        if (NoData && (parent == null || pmap != null))
                        {
                            // No data to send, and nothing to compare that the maps did not say.
                            UpdateExtent(path, off, want); // writes nothing: the size is set below
                            off += want;
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
                            if (NoData) UpdateExtent(path, off, want);
                            else
                            {
                                w.Begin(SendCommand.Write).Path(SendAttr.Path, path).U64(SendAttr.FileOffset, (ulong)off)
                                    .Bytes(SendAttr.Data, buf.AsSpan(0, want)).Finish();
                                DataBytes += want;
                                end = Math.Max(end, off + want);
                            }
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

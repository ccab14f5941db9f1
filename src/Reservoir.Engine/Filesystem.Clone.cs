using Reservoir.Common;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>Reflinks (docs/SNAPSHOTS.md): a file range made to share another's data extents,
/// copied on the next write to either side.</summary>
public sealed partial class Filesystem
{
    /// <summary>
    /// Clones [srcOff, srcOff+len) of <paramref name="srcNode"/> into <paramref name="dstNode"/>
    /// at <paramref name="dstOff"/> (FICLONERANGE; <paramref name="len"/> 0 means to the
    /// source's end). Offsets must be block-aligned and so must the length, unless the range
    /// ends at the source's end of file (then the destination must not extend past it, as on
    /// btrfs); ranges in one file must not overlap. The destination grows to cover the range.
    /// Across subvolumes it works as on btrfs; with quotas on, the extents the destination's
    /// subvolume starts referencing count against its limits (EDQUOT before any change).
    /// A source range holding inline data (a small file's, kept in the tree) is copied.
    /// </summary>
    public Errno CloneRange(ulong srcNode, ulong srcOff, ulong dstNode, ulong dstOff, ulong len) =>
        CloneRange(srcNode, srcOff, dstNode, dstOff, len, out _);

    /// <summary>As above; <paramref name="cloned"/> is how much of the range was cloned when
    /// an error (ENOSPC for metadata part way) stopped it after a first batch, as on btrfs.</summary>
    internal Errno CloneRange(ulong srcNode, ulong srcOff, ulong dstNode, ulong dstOff, ulong len, out ulong cloned)
    {
        cloned = 0;
        ulong prefix = 0;
        var e = Get(srcNode, out var src);
        if (e != Errno.OK) return e;
        try
        {
            e = GetWritable(dstNode, out var dst);
            if (e != Errno.OK) return e;
            try
            {
                var r = Guard(dstNode, () =>
                {
                    // Both exclusively, lower node id first (one lock for one file).
                    var (a, b) = srcNode <= dstNode ? (src, dst) : (dst, src);
                    using var la = a.Lock.Write();
                    using var lb = b != a ? b.Lock.Write() : default(Common.Concurrency.FsRwLock.WriteScope?);
                    return CloneLocked(src, dst, srcOff, dstOff, len, out prefix);
                });
                cloned = prefix;
                return r;
            }
            finally { Put(dst); }
        }
        finally { Put(src); }
    }

    private Errno CloneLocked(Inodes.Inode src, Inodes.Inode dst, ulong srcOff, ulong dstOff, ulong len, out ulong cloned)
    {
        cloned = 0;
        if (src.IsDir || dst.IsDir) return Errno.EISDIR;
        if (!src.IsReg || !dst.IsReg) return Errno.EINVAL;
        if (src.Deleted || dst.Deleted) return Errno.ENOENT;
        if (Fs.ReadOnly) return Errno.EROFS;
        // Checksummed and unchecksummed data do not mix in one file (btrfs refuses the same).
        if (((src.Item.Flags ^ dst.Item.Flags) & InodeFlags.NoDataSum) != 0) return Errno.EINVAL;
        ulong bs = (ulong)Fs.BlockSize, size = src.Item.FileSize;
        if (len == 0) len = srcOff < size ? size - srcOff : 0;
        if (srcOff > size || len > size - srcOff) return Errno.EINVAL;
        if (len == 0) return Errno.OK;
        if (srcOff % bs != 0 || dstOff % bs != 0) return Errno.EINVAL;
        bool toEof = srcOff + len == size;
        if (len % bs != 0 && !(toEof && dstOff + len >= dst.Item.FileSize)) return Errno.EINVAL;
        ulong alen = Units.AlignUp(len, bs);
        if (dstOff + alen < dstOff || dstOff + alen > FormatConstants.MaxFileSize) return Errno.EFBIG;
        if (src == dst && srcOff < dstOff + alen && dstOff < srcOff + alen) return Errno.EINVAL;
        dst.Item.Mtime = dst.Item.Ctime = Timespec.Now(); // written with the cloned items
        var e = Data.CloneRange(src, dst, srcOff, dstOff, alen, dstOff + len, out cloned);
        cloned = Math.Min(cloned, len);
        if (e == Errno.EOPNOTSUPP)
        {
            // Inline data (a small file's, in the tree) is no extent to share: copy it, as
            // btrfs copies inline extents into the destination. Small by definition.
            var buf = new byte[len];
            Data.BufferedRead(src, srcOff, buf);
            return Data.BufferedWrite(dst, dstOff, buf, out _);
        }
        if (e != Errno.OK) return e;
        return Errno.OK;
    }

    /// <summary>
    /// One step of copy_file_range(2): clones where the ranges allow (block-aligned offsets, a
    /// block-aligned length or one reaching the source's end), so a copy shares extents, and
    /// copies up to 1 MiB through the page cache otherwise (or where a clone is refused, such
    /// as across subvolumes with quotas on). <paramref name="done"/> is the count done (0 at or
    /// past the source's end); callers loop, as with write(2). EINVAL for overlapping ranges of
    /// one file, as the kernel answers.
    /// </summary>
    public Errno CopyFileRange(ulong inoIn, ulong offIn, ulong inoOut, ulong offOut, ulong len, out ulong done)
    {
        done = 0;
        var e = GetAttr(inoIn, out var a);
        if (e != Errno.OK) return e;
        e = GetAttr(inoOut, out var b);
        if (e != Errno.OK) return e;
        if (a.IsDir || b.IsDir) return Errno.EISDIR;
        if (!a.IsReg || !b.IsReg) return Errno.EINVAL;
        if (offIn >= a.Size || len == 0) return Errno.OK;
        len = Math.Min(len, a.Size - offIn); // first, as the kernel clamps before its overlap check
        if (inoIn == inoOut && offIn < offOut + len && offOut < offIn + len) return Errno.EINVAL;
        len = Math.Min(len, 1UL << 30);
        ulong bs = (ulong)BlockSize;
        ulong cloneLen = offIn + len == a.Size ? len : len / bs * bs;
        if (offIn % bs == 0 && offOut % bs == 0 && cloneLen > 0)
        {
            var ce = CloneRange(inoIn, offIn, inoOut, offOut, cloneLen, out ulong cloned);
            if (ce == Errno.OK) { done = cloneLen; return Errno.OK; }
            // Part cloned before an error (ENOSPC part way): a short copy of exactly that, as a
            // short write; the next step meets the error again and reports it.
            if (cloned > 0) { done = cloned; return Errno.OK; }
        }
        var buf = new byte[Math.Min(len, 1UL << 20)];
        e = Read(inoIn, offIn, buf, out int n);
        if (e != Errno.OK) return e;
        e = Write(inoOut, offOut, buf.AsSpan(0, n), out int m);
        done = (ulong)m;
        return m > 0 ? Errno.OK : e; // a short copy, as a short write: the next step reports the error
    }
}

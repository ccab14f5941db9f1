using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The ioctls about the whole filesystem, on any file or directory of the mount: its space
/// counters (`reservoir filesystem usage PATH`), fstrim's FITRIM, resizing (btrfs's
/// BTRFS_IOC_RESIZE and Reservoir's own, which answers why a shrink was refused) and the label
/// (FS_IOC_GETFSLABEL, FS_IOC_SETFSLABEL). Trim and resize are for root and for the user the
/// daemon runs as (an ordinary user's mount of their own image), as FITRIM and btrfs's resize
/// are for CAP_SYS_ADMIN; setting the label is for root, as everywhere.
/// </summary>
internal sealed partial class FuseBridge
{
    /// <summary>Reservoir's: _IOR('R', 8, 112 bytes): the space counters `reservoir filesystem
    /// usage` prints, 14 u64: the filesystem's size, data total, data used (with reserved), data
    /// pinned, data may-use, metadata total, used, pinned, may-use, unallocated, global reserve,
    /// counter underflows, what df shows as available for the whole filesystem, and the device
    /// slack (the image file's length past the filesystem).</summary>
    internal const uint IocSpaceInfo = 0x80000000 | (SpaceInfoSize << 16) | (0x52 << 8) | 8;
    internal const uint SpaceInfoSize = 112;

    /// <summary>fstrim(8): FITRIM = _IOWR('X', 121, struct fstrim_range { u64 start, len,
    /// minlen }), on any file or directory of the mount; for root (CAP_SYS_ADMIN, as every
    /// filesystem asks) and for the user the daemon runs as, whose image it is (an ordinary
    /// user's mount through fusermount3); answers the range with len set to the bytes
    /// discarded.</summary>
    internal const uint FiTrim = 0xC0185879;

    /// <summary>Resizing the filesystem, for root and the user the daemon runs as (as FITRIM),
    /// on any file or directory of the mount. btrfs's BTRFS_IOC_RESIZE = _IOW(0x94, 3, struct
    /// btrfs_ioctl_vol_args), whose name field holds `[1:][+|-]SIZE|max`, answers only an
    /// errno; Reservoir's _IOWR('R', 10, 4096 bytes) takes the same argument and answers, in
    /// the same 4096 bytes, u64 the size before, u64 the size after, u32 the errno (0: done)
    /// and the reason as NUL-terminated UTF-8, so that `reservoir filesystem resize PATH` can
    /// say why a shrink was refused and how small it can be.</summary>
    internal const uint IocBtrfsResize = 0x50009403;

    /// <summary>FS_IOC_GETFSLABEL = _IOR(0x94, 49, char[256]) and FS_IOC_SETFSLABEL =
    /// _IOW(0x94, 50, char[256]): the label, NUL-terminated (btrfs filesystem label, xfs_io's
    /// label command and others send them).</summary>
    internal const uint FsIocGetFsLabel = 0x81009431, FsIocSetFsLabel = 0x41009432;

    /// <summary>Reservoir's: _IOWR('R', 11, 16376), on a regular file: its usage as `reservoir
    /// filesystem du` prints it (<see cref="Filesystem.DiskUsage"/>; the kernel keeps FIEMAP to
    /// itself, so no extent flags reach a FUSE filesystem). In: u64 how many shared ranges to
    /// skip. Out: u64 total, u64 exclusive, u64 shared inline bytes, u32 count, u32 more (1 if
    /// the page is full), then count × (u64 device address, u64 length) of shared ranges.</summary>
    internal const uint IocDiskUsage = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 11;
    /// <summary>Reservoir's: _IOWR('R', 13, 16376), on a regular file: its extents, as FIEMAP
    /// would give them (the kernel keeps FIEMAP from FUSE), so that an incremental send through
    /// the mount skips the ranges a file still shares with its parent snapshot without reading
    /// them. In: u64 the file offset to start at. Out: u32 count, u32 more (1 if the page is
    /// full), then count × (u64 file offset, u64 length, u64 device address, u64 offset into the
    /// extent, u32 type: 0 inline, 1 regular, 2 preallocated), in file order, holes left out.</summary>
    internal const uint IocExtentMap = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 13;
    private const int ExtentRecord = 36;

    /// <summary>The checks a per-file page ioctl (disk usage, extent map) makes: a 16376-byte
    /// argument both ways, whose first u64 it returns, on a regular file.</summary>
    private Errno RegularFilePage(ref RequestReader r, ulong ino, uint inSize, uint outSize, out ulong first)
    {
        first = 0;
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        first = BinaryPrimitives.ReadUInt64LittleEndian(arg);
        var ge = fs.GetAttr(ino, out var a);
        if (ge != Errno.OK) return ge;
        return a.IsReg ? Errno.OK : Errno.EINVAL;
    }

    private Errno ExtentMap(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        var ge = RegularFilePage(ref r, ino, inSize, outSize, out ulong from);
        if (ge != Errno.OK) return ge;
        var e = fs.ExtentMap(ino, out var map);
        if (e != Errno.OK) return e;
        return Reply(ref w, Page(map.Where(m => m.FileOffset + m.Length > from), _ => ExtentRecord, (at, m) =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(at, m.FileOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(at[8..], m.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(at[16..], m.DiskBytenr);
            BinaryPrimitives.WriteUInt64LittleEndian(at[24..], m.ExtentOffset);
            BinaryPrimitives.WriteUInt32LittleEndian(at[32..], m.Type switch { "inline" => 0u, "prealloc" => 2u, _ => 1u });
        }));
    }

    private const int FsLabelMax = 256;
    /// <summary>Reservoir's resize ioctl ('R' 10, 4096 bytes both ways). In: the size argument
    /// from byte 8, NUL-terminated. Out: u64 old size, u64 new size, u32 errno, the reason from
    /// byte 20 (NUL-terminated), and at <see cref="ResizeMovedAt"/> three u64: data extents,
    /// data bytes and tree blocks a shrink moved.</summary>
    internal const uint IocResize = 0xC0000000 | (4096u << 16) | (0x52 << 8) | 10;
    internal const int ResizeMovedAt = 4096 - 24;

    private Errno SpaceInfo(ref ReplyWriter w, uint outSize)
    {
        if (outSize != SpaceInfoSize) return Errno.EINVAL;
        var s = fs.Space();
        fs.StatFs(out var st); // the whole filesystem's, not a subvolume's limit
        var page = new byte[SpaceInfoSize];
        int pos = 0;
        foreach (ulong v in (ReadOnlySpan<ulong>)[s.DeviceBytes, s.DataTotal, s.DataUsed, s.DataPinned, s.DataMayUse, s.MetaTotal, s.MetaUsed,
                     s.MetaPinned, s.MetaMayUse, s.Unallocated, s.GlobalReserve, (ulong)s.Underflows, st.BlocksAvail * st.BlockSize, s.DeviceSlack])
        {
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos), v);
            pos += 8;
        }
        IoctlDone(ref w);
        w.Bytes(page);
        return Errno.OK;
    }

    private Errno DiskUsage(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        var ge = RegularFilePage(ref r, ino, inSize, outSize, out ulong skip);
        if (ge != Errno.OK) return ge;
        var e = fs.DiskUsage(ino, out var u);
        if (e != Errno.OK) return e;
        var page = new byte[SubvolListSize];
        BinaryPrimitives.WriteUInt64LittleEndian(page, u.Total);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), u.Exclusive);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(16), u.SharedInline);
        int pos = 32, count = 0;
        for (int i = (int)Math.Min(skip, (ulong)u.Shared.Count); i < u.Shared.Count; i++)
        {
            if (pos + 16 > page.Length) { BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(28), 1); break; }
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos), u.Shared[i].Start);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos + 8), u.Shared[i].Len);
            pos += 16;
            count++;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(24), (uint)count);
        IoctlDone(ref w);
        w.Bytes(page);
        return Errno.OK;
    }

    private Errno GetLabel(ref ReplyWriter w, uint outSize)
    {
        if (outSize != FsLabelMax) return Errno.EINVAL;
        IoctlDone(ref w);
        var o = w.Take(FsLabelMax);
        o.Clear();
        var text = Encoding.UTF8.GetBytes(fs.Label);
        text.AsSpan(0, Math.Min(text.Length, FsLabelMax - 1)).CopyTo(o);
        return Errno.OK;
    }

    private Errno SetLabel(ref RequestReader r, ref ReplyWriter w, uint inSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (inSize != FsLabelMax || !r.TryBytes(FsLabelMax, out var arg)) return Errno.EINVAL;
        int z = arg.IndexOf((byte)0);
        if (z < 0) return Errno.EINVAL; // as the kernel's: the label must end within FSLABEL_MAX
        string label;
        try { label = new UTF8Encoding(false, true).GetString(arg[..z]); }
        catch (DecoderFallbackException) { return Errno.EINVAL; }
        var e = fs.SetLabel(label);
        if (e != Errno.OK) return e;
        IoctlDone(ref w);
        return Errno.OK;
    }

    private Errno Trim(ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (inSize != 24 || outSize != 24 || !r.TryBytes(24, out var range)) return Errno.EINVAL;
        ulong start = BinaryPrimitives.ReadUInt64LittleEndian(range), len = BinaryPrimitives.ReadUInt64LittleEndian(range[8..]);
        ulong minLen = BinaryPrimitives.ReadUInt64LittleEndian(range[16..]);
        var e = fs.Trim(start, len, minLen, out ulong trimmed);
        if (e != Errno.OK) return e;
        IoctlDone(ref w);
        var o = w.Take(24);
        BinaryPrimitives.WriteUInt64LittleEndian(o, start);
        BinaryPrimitives.WriteUInt64LittleEndian(o[8..], trimmed);
        BinaryPrimitives.WriteUInt64LittleEndian(o[16..], minLen);
        return Errno.OK;
    }

    private Errno Resize(uint cmd, ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (inSize != 4096 || (cmd == IocResize && outSize != 4096) || !r.TryBytes(4096, out var arg)) return Errno.EINVAL;
        var field = arg[8..];
        int z = field.IndexOf((byte)0);
        if (z <= 0) return Errno.EINVAL;
        string spec;
        try { spec = new UTF8Encoding(false, true).GetString(field[..z]); }
        catch (DecoderFallbackException) { return Errno.EINVAL; }
        var e = fs.Resize(spec, out var result, out var why);
        if (cmd == IocBtrfsResize) { if (e != Errno.OK) return e; IoctlDone(ref w); return Errno.OK; }
        IoctlDone(ref w);
        var o = w.Take(4096);
        o.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(o, result.OldSize);
        BinaryPrimitives.WriteUInt64LittleEndian(o[8..], result.NewSize);
        BinaryPrimitives.WriteUInt32LittleEndian(o[16..], (uint)e);
        if (why != null)
        {
            var text = Encoding.UTF8.GetBytes(why);
            text.AsSpan(0, Math.Min(text.Length, ResizeMovedAt - 21)).CopyTo(o[20..]);
        }
        // What a shrink moved out of its way (the last 24 bytes: data extents, their bytes,
        // tree blocks).
        var moved = e == Errno.OK && result.NewSize < result.OldSize ? fs.LastRelocation : default;
        BinaryPrimitives.WriteUInt64LittleEndian(o[ResizeMovedAt..], (ulong)moved.DataExtents);
        BinaryPrimitives.WriteUInt64LittleEndian(o[(ResizeMovedAt + 8)..], moved.DataBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(o[(ResizeMovedAt + 16)..], (ulong)moved.TreeBlocks);
        return Errno.OK;
    }
}

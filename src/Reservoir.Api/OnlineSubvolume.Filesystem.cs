using System.Buffers.Binary;
using Reservoir.Common;

namespace Reservoir;

/// <summary>
/// Filesystem-wide commands on a mounted Reservoir through the same ioctls (`reservoir
/// filesystem …` online): label, space, trim, resize, sync, a file's disk usage and extent map,
/// and what a path is (a mount's root, a file type).
/// </summary>
public static partial class OnlineSubvolume
{
    /// <summary>Whether <paramref name="path"/> is the root of a mount (its parent is on
    /// another device, or is itself: "/"): what btrfs's property commands take for the
    /// filesystem object, whose property is the label.</summary>
    public static bool IsMountRoot(string path)
    {
        var a = new byte[256];
        var b = new byte[256];
        if (StatPath(path, a) != 0 || StatPath(Path.Combine(path, ".."), b) != 0) return false;
        // struct stat (x86-64 and aarch64): st_dev at 0, st_ino at 8.
        bool sameDevice = a.AsSpan(0, 8).SequenceEqual(b.AsSpan(0, 8));
        return !sameDevice || a.AsSpan(8, 8).SequenceEqual(b.AsSpan(8, 8));
    }

    /// <summary>FS_IOC_GETFSLABEL on the mount: its label.</summary>
    public static Errno Label(string dir, out string label)
    {
        var b = new byte[256];
        var e = OnDirectory(dir, fd => Ioctl(fd, FsIocGetFsLabel, b));
        int z = Array.IndexOf(b, (byte)0);
        label = e == Errno.OK ? System.Text.Encoding.UTF8.GetString(b, 0, z < 0 ? b.Length : z) : "";
        return e;
    }

    /// <summary>FS_IOC_SETFSLABEL on the mount (root): a new label, at most 255 bytes.</summary>
    public static Errno SetLabel(string dir, string label)
    {
        var text = System.Text.Encoding.UTF8.GetBytes(label);
        if (text.Length >= 256) return Errno.EINVAL;
        var b = new byte[256];
        text.CopyTo(b, 0);
        return OnDirectory(dir, fd => Ioctl(fd, FsIocSetFsLabel, b));
    }

    private const uint FsIocGetFsLabel = 0x81009431, FsIocSetFsLabel = 0x41009432;

    /// <summary>A regular file's usage on the mount (Reservoir's disk-usage ioctl, paged over
    /// its shared ranges); the file is opened read-only without following a symlink.</summary>
    public static Errno DiskUsage(string file, out Engine.FileUsage usage)
    {
        usage = new(0, 0, [], 0);
        int fd = Open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
        if (fd < 0) return LastError;
        try
        {
            var shared = new List<(ulong, ulong)>();
            while (true)
            {
                var page = new byte[PageSize];
                BinaryPrimitives.WriteUInt64LittleEndian(page, (ulong)shared.Count);
                var e = Ioctl(fd, IocDiskUsage, page);
                if (e != Errno.OK) return e;
                int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(24));
                for (int i = 0; i < count; i++) shared.Add((U64(page, 32 + 16 * i), U64(page, 40 + 16 * i)));
                if (BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(28)) == 0 || count == 0)
                {
                    usage = new(U64(page, 0), U64(page, 8), shared, U64(page, 16));
                    return Errno.OK;
                }
            }
        }
        finally { Close(fd); }
    }

    private const uint IocExtentMap = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 13;

    /// <summary>The extents of the regular file open as <paramref name="fd"/> on a mounted
    /// Reservoir (what FIEMAP would say), in file order, holes left out.</summary>
    public static Errno ExtentMap(nint fd, out List<Engine.ExtentMapping> map)
    {
        var found = new List<Engine.ExtentMapping>();
        map = found;
        ulong from = 0;
        while (true)
        {
            var page = new byte[PageSize];
            BinaryPrimitives.WriteUInt64LittleEndian(page, from);
            var e = Ioctl((int)fd, IocExtentMap, page);
            if (e != Errno.OK) return e;
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page);
            for (int i = 0; i < count; i++)
            {
                int at = 8 + 36 * i;
                uint type = BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(at + 32));
                found.Add(new Engine.ExtentMapping(U64(page, at), U64(page, at + 8), U64(page, at + 16), 0, U64(page, at + 24),
                    type switch { 0 => "inline", 2 => "prealloc", _ => "regular" }, 0));
            }
            if (BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) == 0 || count == 0) return Errno.OK;
            from = found[^1].FileOffset + found[^1].Length;
        }
    }

    /// <summary>A path's file type (S_IFMT bits of its mode: 0x4000 directory, 0x8000 regular
    /// file, …) without following a symlink (statx, whose layout is the same everywhere).</summary>
    public static Errno FileType(string path, out uint format)
    {
        format = 0;
        var buf = new byte[256];
        const int AtFdcwd = -100, AtSymlinkNoFollow = 0x100, StatxType = 1;
        if (Statx(AtFdcwd, path, AtSymlinkNoFollow, StatxType, buf) != 0) return LastError;
        format = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan(28)) & 0xF000u;
        return Errno.OK;
    }

    private const uint IocDiskUsage = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 11;
    /// <summary>O_NOFOLLOW: 0x8000 on ARM (asm/fcntl.h there), 0x20000 on x86 and most others.</summary>
    public static readonly int O_NOFOLLOW = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture
        is System.Runtime.InteropServices.Architecture.Arm64 or System.Runtime.InteropServices.Architecture.Arm ? 0x8000 : 0x20000;

    /// <summary>The mounted filesystem's space counters (`reservoir filesystem usage PATH`) and
    /// what df shows as available for the whole filesystem.</summary>
    public static Errno Space(string dir, out Engine.SpaceReport report, out ulong dfAvailable)
    {
        var b = new byte[112];
        var e = OnDirectory(dir, fd => Ioctl(fd, IocSpaceInfo, b));
        ulong U(int i) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(i * 8));
        report = new Engine.SpaceReport(U(0), U(1), U(2), U(3), U(4), U(5), U(6), U(7), U(8), U(9), U(10), (long)U(11), U(13));
        dfAvailable = U(12);
        return e;
    }

    /// <summary>FITRIM (fstrim) on the mounted filesystem: discards its free ranges of at least
    /// <paramref name="minLen"/> bytes; <paramref name="trimmed"/> the bytes discarded.</summary>
    public static Errno Trim(string dir, ulong minLen, out ulong trimmed)
    {
        var b = new byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), ulong.MaxValue);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), minLen);
        var e = OnDirectory(dir, fd => Ioctl(fd, FiTrim, b));
        trimmed = e == Errno.OK ? BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(8)) : 0;
        return e;
    }

    private const uint FiTrim = 0xC0185879;

    /// <summary>Resizes the mounted filesystem (Reservoir's resize ioctl): <paramref name="spec"/>
    /// as btrfs takes it, <c>[1:][+|-]SIZE|max</c>. The sizes before and after, and why it was
    /// refused, come back from the daemon.</summary>
    public static Errno Resize(string dir, string spec, out ulong oldSize, out ulong newSize, out string? why) =>
        Resize(dir, spec, out oldSize, out newSize, out why, out _);

    /// <summary><see cref="Resize(string, string, out ulong, out ulong, out string?)"/>, also
    /// saying what a shrink moved out of its way.</summary>
    public static Errno Resize(string dir, string spec, out ulong oldSize, out ulong newSize, out string? why, out Engine.Tx.RelocationResult moved)
    {
        var b = new byte[4096];
        var text = System.Text.Encoding.UTF8.GetBytes(spec);
        oldSize = newSize = 0;
        why = null;
        moved = default;
        if (text.Length == 0 || text.Length > 4096 - 9) { why = "invalid size argument"; return Errno.EINVAL; }
        text.CopyTo(b, 8);
        var e = OnDirectory(dir, fd => Ioctl(fd, IocResize, b));
        if (e != Errno.OK) return e;
        oldSize = U64(b, 0);
        newSize = U64(b, 8);
        e = (Errno)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16));
        int z = Array.IndexOf(b, (byte)0, 20);
        if (z > 20) why = System.Text.Encoding.UTF8.GetString(b, 20, z - 20);
        const int MovedAt = 4096 - 24;
        moved = new Engine.Tx.RelocationResult((int)U64(b, MovedAt), U64(b, MovedAt + 8), (int)U64(b, MovedAt + 16));
        return e;
    }

    private const uint IocResize = 0xC0000000 | (4096u << 16) | (0x52 << 8) | 10;

    /// <summary>`filesystem sync` on a mounted Reservoir: every dirty page written back and a
    /// commit, by the daemon (its commit ioctl; root's and the image owner's). For another
    /// user, what the kernel offers anyone: syncfs (the kernel's dirty pages to the daemon; on
    /// a fuseblk mount the daemon commits too), then fsync on the directory, which commits.</summary>
    public static Errno SyncFilesystem(string dir)
    {
        var e = QuotaCtl(dir, QuotaOp.Commit);
        if (e != Errno.EPERM) return e;
        return OnDirectory(dir, fd => Syncfs(fd) != 0 || Fsync(fd) != 0 ? LastError : Errno.OK);
    }
}

using System.Runtime.InteropServices;
using Reservoir.Common;

namespace Reservoir.Cli;

/// <summary>
/// Subvolume commands on a mounted Reservoir: btrfs's SUBVOL_CREATE and SNAP_DESTROY ioctls
/// (same numbers and argument) on the parent directory, which the FUSE daemon answers.
/// </summary>
internal static class OnlineSubvolume
{
    private const uint IocSubvolCreate = 0x5000940E, IocSnapDestroy = 0x5000940F;
    private const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000;

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static extern int Ioctl(int fd, nuint request, byte[] arg);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close")]
    private static extern int Close(int fd);

    private const uint IocSubvolList = 0xC0000000 | (16376u << 16) | (0x52 << 8) | 1;

    /// <summary>Every subvolume, listed through the mount (Reservoir's list ioctl, paged).</summary>
    public static Errno List(string dir, out List<(ulong Id, ulong Parent, ulong Generation, ulong Otransid, bool ReadOnly, string Path, long Otime, Guid Uuid)> list)
    {
        list = new();
        int fd = Open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return (Errno)Marshal.GetLastWin32Error();
        try
        {
            ulong after = 0;
            while (true)
            {
                var page = new byte[16376];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(page, after);
                if (Ioctl(fd, IocSubvolList, page) != 0) return (Errno)Marshal.GetLastWin32Error();
                int count = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(page);
                bool more = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) != 0;
                int pos = 8;
                for (int i = 0; i < count; i++)
                {
                    ulong U(int o) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos + o));
                    int n = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(pos + 33));
                    list.Add((U(0), U(8), U(16), U(24), page[pos + 32] != 0, System.Text.Encoding.UTF8.GetString(page, pos + 35, n),
                        (long)U(35 + n), new Guid(page.AsSpan(pos + 43 + n, 16))));
                    after = U(0);
                    pos += 35 + n + 24;
                }
                if (!more || count == 0) return Errno.OK;
            }
        }
        finally { Close(fd); }
    }

    private const uint IocSubvolSetRo = 0x40000000 | (8u << 16) | (0x52 << 8) | 2;

    /// <summary>Makes the subvolume whose root is <paramref name="path"/> read-only or not.</summary>
    public static Errno SetReadOnly(string path, bool ro)
    {
        int fd = Open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return (Errno)Marshal.GetLastWin32Error();
        try
        {
            var arg = new byte[8];
            arg[0] = ro ? (byte)1 : (byte)0;
            return Ioctl(fd, IocSubvolSetRo, arg) == 0 ? Errno.OK : (Errno)Marshal.GetLastWin32Error();
        }
        finally { Close(fd); }
    }

    /// <summary>The subvolume id whose root directory <paramref name="path"/> is, from its inode
    /// number through the mount (tree id &lt;&lt; 40 | inode; the top level's are plain); null if
    /// the path is a directory inside a subvolume, not its root.</summary>
    public static ulong? SubvolumeIdOf(string path)
    {
        var st = new byte[256]; // struct stat (x86-64 and aarch64: st_ino at offset 8)
        if (StatPath(path, st) != 0) return null;
        ulong ino = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(st.AsSpan(8));
        const ulong RootIno = 256, InoMask = (1UL << 40) - 1;
        if ((ino & InoMask) != RootIno) return null;
        return ino >> 40 == 0 ? 5 : ino >> 40;
    }

    [DllImport("libc", EntryPoint = "stat", SetLastError = true)]
    private static extern int StatPath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buf);

    private const uint IocQgroupList = 0xC0000000 | (16376u << 16) | (0x52 << 8) | 3;
    private const uint IocQgroupLimit = 0x40000000 | (24u << 16) | (0x52 << 8) | 4;

    /// <summary>Every qgroup of the mounted filesystem (ENOTCONN when quotas are off).</summary>
    public static Errno Qgroups(string dir, out List<(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive)> groups)
    {
        groups = new();
        int fd = Open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return (Errno)Marshal.GetLastWin32Error();
        try
        {
            // Usage is accounted at commit; fsync on a directory of the mount commits (the kernel
            // sends no syncfs to a FUSE daemon), so the numbers are current, as btrfs's --sync.
            Fsync(fd);
            var page = new byte[16376];
            if (Ioctl(fd, IocQgroupList, page) != 0) return (Errno)Marshal.GetLastWin32Error();
            int count = (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(page);
            for (int i = 0, pos = 8; i < count; i++, pos += 48)
            {
                ulong U(int o) => System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos + o));
                groups.Add((U(0), U(8), U(16), U(24), U(32)));
            }
            return Errno.OK;
        }
        finally { Close(fd); }
    }

    /// <summary>Sets the referenced limit of a subvolume's qgroup through the mount (root only).</summary>
    public static Errno LimitQgroup(string dir, ulong subvolume, ulong maxReferenced)
    {
        int fd = Open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return (Errno)Marshal.GetLastWin32Error();
        try
        {
            var arg = new byte[24];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(arg, subvolume);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), maxReferenced);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), ulong.MaxValue);
            return Ioctl(fd, IocQgroupLimit, arg) == 0 ? Errno.OK : (Errno)Marshal.GetLastWin32Error();
        }
        finally { Close(fd); }
    }

    public static Errno Create(string path) => Call(path, IocSubvolCreate);
    public static Errno Delete(string path) => Call(path, IocSnapDestroy);

    private static Errno Call(string path, uint request)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        string name = Path.GetFileName(full), parent = Path.GetDirectoryName(full) ?? "/";
        var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
        if (nameBytes.Length == 0 || nameBytes.Length > 255) return Errno.EINVAL;
        int fd = Open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return (Errno)Marshal.GetLastWin32Error();
        try
        {
            var arg = new byte[4096]; // struct btrfs_ioctl_vol_args: s64 fd (unused), char name[4088]
            nameBytes.CopyTo(arg, 8);
            return Ioctl(fd, request, arg) == 0 ? Errno.OK : (Errno)Marshal.GetLastWin32Error();
        }
        finally { Close(fd); }
    }
}

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Reservoir.Common;

namespace Reservoir;

/// <summary>
/// Subvolume and qgroup commands on a mounted Reservoir, through ioctls on its directories that
/// the FUSE daemon answers: btrfs's SUBVOL_CREATE and SNAP_DESTROY (same numbers and argument,
/// on the parent directory), and Reservoir's own list, read-only, qgroup-list and qgroup-limit
/// ioctls (see the FUSE bridge). Create, snapshot and delete also work on kernel btrfs (a
/// snapshot there goes through btrfs's SNAP_CREATE_V2), so the stress runner drives subvolume
/// operations on both with the same calls.
/// </summary>
public static partial class OnlineSubvolume
{
    private const uint IocSubvolCreate = 0x5000940E, IocSnapDestroy = 0x5000940F;
    private const uint IocSubvolList = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 1;
    private const uint IocSubvolSetRo = 0x40000000 | (8u << 16) | (0x52 << 8) | 2;
    private const uint IocQgroupList = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 3;
    private const uint IocSnapCreate = 0x40000000 | (4096u << 16) | (0x52 << 8) | 5;
    private const uint IocQuotaCtl = 0x40000000 | (24u << 16) | (0x52 << 8) | 6;
    private const uint IocQgroupRelations = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 7;
    private const uint IocSpaceInfo = 0x80000000 | (112u << 16) | (0x52 << 8) | 8;
    private const uint IocFsIdentity = 0x80000000 | (40u << 16) | (0x52 << 8) | 9;
    private const uint PageSize = 16376;
    /// <summary>BTRFS_IOC_SNAP_CREATE_V2 = _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2): s64 fd
    /// (the source subvolume), u64 transid, u64 flags (BTRFS_SUBVOL_RDONLY = 2), 32 bytes of
    /// union, char name[4040].</summary>
    private const uint IocBtrfsSnapCreateV2 = 0x50009417;
    private const ulong BtrfsSubvolRdonly = 2;
    private const int BtrfsV2NameOffset = 56;
    internal const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000, O_NONBLOCK = 0x800;

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    internal static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static extern int IoctlRaw(int fd, nuint request, byte[] arg);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    private static extern int Syncfs(int fd);

    [DllImport("libc", EntryPoint = "close")]
    internal static extern int Close(int fd);

    [DllImport("libc", EntryPoint = "stat", SetLastError = true)]
    private static extern int StatPath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buf);

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern int Statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buf);

    internal static Errno LastError => (Errno)Marshal.GetLastWin32Error();

    /// <summary>Runs <paramref name="f"/> on the directory opened read-only, closing it after.</summary>
    private static Errno OnDirectory(string dir, Func<int, Errno> f)
    {
        int fd = Open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return LastError;
        try { return f(fd); }
        finally { Close(fd); }
    }

    internal static Errno Ioctl(int fd, uint request, byte[] arg) => IoctlRaw(fd, request, arg) == 0 ? Errno.OK : LastError;

    /// <summary>Every subvolume, listed through the mount (paged by id).</summary>
    public static Errno List(string dir, out List<(ulong Id, ulong Parent, ulong Generation, ulong Otransid, bool ReadOnly, string Path, long Otime, Guid Uuid, Guid ParentUuid, Guid ReceivedUuid, ulong Stransid)> list) =>
        List(dir, out list, out _);

    /// <summary><see cref="List(string, out List{ValueTuple{ulong, ulong, ulong, ulong, bool, string, long, Guid, Guid, Guid, ulong}})"/>,
    /// and the filesystem's default subvolume (what a mount without subvol= shows; 5, the top
    /// level, unless set-default chose another), the listed one marked default.</summary>
    /// <param name="deleted">List the deleted subvolumes whose trees are not dropped yet
    /// instead (no parent, no path: `subvolume list -d`).</param>
    public static Errno List(string dir, out List<(ulong Id, ulong Parent, ulong Generation, ulong Otransid, bool ReadOnly, string Path, long Otime, Guid Uuid, Guid ParentUuid, Guid ReceivedUuid, ulong Stransid)> list,
        out ulong defaultSubvolume, bool deleted = false)
    {
        ulong dflt = 5; // the top level is not listed
        var found = new List<(ulong, ulong, ulong, ulong, bool, string, long, Guid, Guid, Guid, ulong)>();
        list = found;
        var e = OnDirectory(dir, fd =>
        {
            ulong after = 0;
            while (true)
            {
                var page = new byte[PageSize];
                BinaryPrimitives.WriteUInt64LittleEndian(page, after);
                page[8] = deleted ? (byte)1 : (byte)0;
                var e = Ioctl(fd, IocSubvolList, page);
                if (e != Errno.OK) return e;
                int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page);
                bool more = BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) != 0;
                int pos = 8;
                for (int i = 0; i < count; i++)
                {
                    ulong U(int o) => BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos + o));
                    int n = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(pos + 33));
                    if ((page[pos + 32] & 2) != 0) dflt = U(0);
                    found.Add((U(0), U(8), U(16), U(24), (page[pos + 32] & 1) != 0, System.Text.Encoding.UTF8.GetString(page, pos + 35, n),
                        (long)U(35 + n), new Guid(page.AsSpan(pos + 43 + n, 16)), new Guid(page.AsSpan(pos + 59 + n, 16)),
                        new Guid(page.AsSpan(pos + 75 + n, 16)), U(91 + n)));
                    after = U(0);
                    pos += 35 + n + 64;
                }
                if (!more || count == 0) return Errno.OK;
            }
        });
        defaultSubvolume = dflt;
        return e;
    }

    private const uint IocSetReceived = 0x40000000 | (24 << 16) | (0x52 << 8) | 12;

    /// <summary>Records on the writable subvolume whose root is <paramref name="path"/> that it
    /// is the receive of sent subvolume <paramref name="uuid"/> at <paramref name="stransid"/>.</summary>
    public static Errno SetReceived(string path, Guid uuid, ulong stransid)
    {
        var arg = new byte[24];
        uuid.TryWriteBytes(arg);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), stransid);
        return OnDirectory(path, fd => Ioctl(fd, IocSetReceived, arg));
    }

    /// <summary>Makes the subvolume whose root is <paramref name="path"/> read-only or not.</summary>
    public static Errno SetReadOnly(string path, bool ro) =>
        OnDirectory(path, fd => Ioctl(fd, IocSubvolSetRo, BitConverter.GetBytes(ro ? 1UL : 0UL)));

    private const uint IocSubvolGetFlags = 0x80089419; // btrfs's SUBVOL_GETFLAGS, _IOR(0x94, 25, u64)

    /// <summary>Whether the subvolume whose root is <paramref name="path"/> is read-only
    /// (btrfs's SUBVOL_GETFLAGS through the mount); EINVAL when the path is no subvolume's
    /// root, ENOTTY when it is not on a mounted Reservoir.</summary>
    public static Errno GetReadOnly(string path, out bool ro)
    {
        var flags = new byte[8];
        var e = OnDirectory(path, fd => Ioctl(fd, IocSubvolGetFlags, flags));
        ro = e == Errno.OK && (BinaryPrimitives.ReadUInt64LittleEndian(flags) & 2) != 0;
        return e;
    }

    /// <summary>The subvolume id whose root directory <paramref name="path"/> is, from its inode
    /// number through the mount (tree id &lt;&lt; 40 | inode; the top level's are plain); null if
    /// the path is a directory inside a subvolume, not its root.</summary>
    public static ulong? SubvolumeIdOf(string path)
    {
        const ulong RootIno = 256, InoMask = (1UL << 40) - 1;
        return InodeOf(path) is { } ino && (ino & InoMask) == RootIno ? TreeOf(ino) : null;
    }

    /// <summary>The id of the subvolume that holds <paramref name="path"/> on a mounted Reservoir.</summary>
    public static ulong? SubvolumeHolding(string path) => InodeOf(path) is { } ino ? TreeOf(ino) : null;

    /// <summary>The node id of <paramref name="path"/> on a mounted Reservoir (tree id &lt;&lt; 40 |
    /// inode; the top level's are plain): from Reservoir's identity ioctl, which answers it
    /// whatever st_ino shows (with -o submounts, the inode's number within its subvolume, as on
    /// btrfs); where the path cannot be opened or the ioctl is not known, st_ino (which is the
    /// node id on a mount without submounts).</summary>
    private static ulong? InodeOf(string path)
    {
        if (Identity(path, out var id) == Errno.OK) return BinaryPrimitives.ReadUInt64LittleEndian(id.AsSpan(24));
        var st = new byte[256]; // struct stat (x86-64 and aarch64: st_ino at offset 8)
        return StatPath(path, st) != 0 ? null : BinaryPrimitives.ReadUInt64LittleEndian(st.AsSpan(8));
    }

    /// <summary>Reservoir's identity ioctl on <paramref name="path"/> (a file or a directory):
    /// fsid, the daemon's number, the node id, flags (40 bytes).</summary>
    private static Errno Identity(string path, out byte[] id)
    {
        var got = new byte[40];
        id = got;
        int fd = Open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) return LastError;
        try { return Ioctl(fd, IocFsIdentity, got); }
        finally { Close(fd); }
    }

    /// <summary>The mounted filesystem's uuid (from the identity ioctl).</summary>
    public static Errno Fsid(string path, out Guid fsid)
    {
        var e = Identity(path, out var id);
        fsid = e == Errno.OK ? new Guid(id.AsSpan(0, 16)) : Guid.Empty;
        return e;
    }

    /// <summary>Which daemon serves <paramref name="path"/>: the filesystem's uuid and the number
    /// the daemon drew at mount (two copies of one image have one uuid, not one daemon).</summary>
    public static Errno ServedBy(string path, out (Guid Fsid, ulong Daemon) who)
    {
        var e = Identity(path, out var id);
        who = e == Errno.OK ? (new Guid(id.AsSpan(0, 16)), BinaryPrimitives.ReadUInt64LittleEndian(id.AsSpan(16))) : default;
        return e;
    }

    private static ulong TreeOf(ulong ino) => ino >> 40 == 0 ? 5 : ino >> 40;

    private static ulong U64(byte[] page, int pos) => BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos));

    /// <summary>Runs a paged list ioctl (in: u64 where to go on from; out: u32 count, u32 more,
    /// fixed-size records) until the daemon says there is no more.</summary>
    private static Errno Paged(int fd, uint request, int recordSize, Action<byte[], int> record, Func<ulong> next)
    {
        while (true)
        {
            var page = new byte[PageSize];
            BinaryPrimitives.WriteUInt64LittleEndian(page, next());
            var e = Ioctl(fd, request, page);
            if (e != Errno.OK) return e;
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page);
            for (int i = 0; i < count; i++) record(page, 8 + i * recordSize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) == 0 || count == 0) return Errno.OK;
        }
    }

    public static Errno Create(string path)
    {
        var e = ByName(path, IocSubvolCreate);
        if (e == Errno.OK) WaitForOwnMount(path);
        return e;
    }

    /// <summary>On a mount with -o submounts (Reservoir's identity ioctl says so), waits until
    /// the subvolume just made at <paramref name="path"/> shows its own device, as it would at
    /// once on btrfs: the daemon mounts it right after answering (at most 10 s; past that the
    /// subvolume is there, on its parent's device, and the daemon's log says why).</summary>
    internal static void WaitForOwnMount(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        string parent = Path.GetDirectoryName(full) ?? "/";
        if (Identity(parent, out var id) != Errno.OK || (BinaryPrimitives.ReadUInt64LittleEndian(id.AsSpan(32)) & 1) == 0) return;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var a = new byte[256];
        var b = new byte[256];
        while (sw.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (StatPath(full, a) != 0 || StatPath(parent, b) != 0) return;
            if (BinaryPrimitives.ReadUInt64LittleEndian(a) != BinaryPrimitives.ReadUInt64LittleEndian(b)) return; // st_dev at offset 0
            Thread.Sleep(2);
        }
    }

    /// <summary>Snapshots the subvolume at <paramref name="source"/> as <paramref name="dest"/>
    /// (Reservoir's snapshot ioctl on dest's parent, naming the source by the node id the same
    /// daemon gave it). EXDEV if they are on different filesystems.</summary>
    public static Errno Snapshot(string source, string dest, bool readOnly)
    {
        string full = Path.GetFullPath(dest).TrimEnd('/');
        string name = Path.GetFileName(full), parent = Path.GetDirectoryName(full) ?? "/";
        // The source is named by its node id, which means something only to the same daemon.
        var e = SameFilesystem(source, parent, out ulong ino);
        if (e != Errno.OK) return e;
        var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
        if (nameBytes.Length == 0 || nameBytes.Length >= 4080) return Errno.EINVAL;
        var arg = new byte[4096];
        BinaryPrimitives.WriteUInt64LittleEndian(arg, ino);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), readOnly ? 1UL : 0);
        nameBytes.CopyTo(arg, 16);
        e = OnDirectory(parent, fd => Ioctl(fd, IocSnapCreate, arg));
        if (e == Errno.OK) WaitForOwnMount(full);
        // A filesystem that does not know Reservoir's number answers ENOTTY; kernel btrfs takes
        // the source as a descriptor instead.
        return e == Errno.ENOTTY && nameBytes.Length < 4040 ? BtrfsSnapshot(source, parent, nameBytes, readOnly) : e;
    }

    /// <summary>OK if <paramref name="a"/> and <paramref name="b"/> are served by one Reservoir
    /// daemon over one filesystem, and <paramref name="nodeA"/> the node id that names
    /// <paramref name="a"/> to it (Reservoir's identity ioctl). Where that ioctl is not known
    /// (an older daemon, kernel btrfs): OK if both are on one mount, and st_ino names it (mounts,
    /// not st_dev: btrfs gives every subvolume a device number of its own). EXDEV if not.</summary>
    private static Errno SameFilesystem(string a, string b, out ulong nodeA)
    {
        nodeA = 0;
        byte[] ib = [];
        var e = Identity(a, out var ia);
        if (e == Errno.OK) e = Identity(b, out ib);
        if (e == Errno.OK)
        {
            nodeA = BinaryPrimitives.ReadUInt64LittleEndian(ia.AsSpan(24));
            return ia.AsSpan(0, 24).SequenceEqual(ib.AsSpan(0, 24)) ? Errno.OK : Errno.EXDEV;
        }
        if (e is not (Errno.ENOTTY or Errno.EINVAL or Errno.ENOSYS or Errno.EOPNOTSUPP)) return e;
        var st = new byte[256];
        if (StatPath(a, st) != 0) return LastError;
        nodeA = BinaryPrimitives.ReadUInt64LittleEndian(st.AsSpan(8));
        ulong dstMount = 0;
        e = MountOf(a, out ulong srcMount);
        if (e == Errno.OK) e = MountOf(b, out dstMount);
        if (e != Errno.OK) return e;
        return srcMount == dstMount ? Errno.OK : Errno.EXDEV;
    }

    /// <summary>statx's stx_mnt_id (STATX_MNT_ID; struct statx keeps it at byte 144).</summary>
    private static Errno MountOf(string path, out ulong mountId)
    {
        const int AT_FDCWD = -100;
        const uint STATX_MNT_ID = 0x1000;
        var sx = new byte[256];
        mountId = 0;
        if (Statx(AT_FDCWD, path, 0, STATX_MNT_ID, sx) != 0) return LastError;
        if ((BinaryPrimitives.ReadUInt32LittleEndian(sx) & STATX_MNT_ID) == 0) return Errno.EOPNOTSUPP; // kernels before 5.8
        mountId = BinaryPrimitives.ReadUInt64LittleEndian(sx.AsSpan(144));
        return Errno.OK;
    }

    private static Errno BtrfsSnapshot(string source, string parent, byte[] name, bool readOnly) =>
        OnDirectory(source, src =>
        {
            var arg = new byte[4096];
            BinaryPrimitives.WriteInt64LittleEndian(arg, src);
            BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), readOnly ? BtrfsSubvolRdonly : 0);
            name.CopyTo(arg, BtrfsV2NameOffset);
            return OnDirectory(parent, fd => Ioctl(fd, IocBtrfsSnapCreateV2, arg));
        });
    public static Errno Delete(string path) => ByName(path, IocSnapDestroy);

    /// <summary>A btrfs vol_args ioctl (s64 fd, char name[4088]) on the parent of <paramref name="path"/>.</summary>
    private static Errno ByName(string path, uint request)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        string name = Path.GetFileName(full), parent = Path.GetDirectoryName(full) ?? "/";
        var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
        if (nameBytes.Length == 0 || nameBytes.Length > 255) return Errno.EINVAL;
        var arg = new byte[4096];
        nameBytes.CopyTo(arg, 8);
        return OnDirectory(parent, fd => Ioctl(fd, request, arg));
    }
}

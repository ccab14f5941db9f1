using System.Runtime.InteropServices;

namespace Reservoir.Fuse.Session;

/// <summary>The system calls the FUSE session needs, one P/Invoke each.</summary>
internal static unsafe partial class Libc
{
    public const int O_RDWR = 2, O_CLOEXEC = 0x80000;
    public const int EINTR = 4, EAGAIN = 11, ENOENT = 2, ENODEV = 19, EPERM = 1, EINVAL = 22, ENOTCONN = 107;
    public const ulong MS_NOSUID = 2, MS_NODEV = 4, MS_RDONLY = 1, MS_NOATIME = 1024, MS_NOEXEC = 8;
    public const int MNT_DETACH = 2;

    [DllImport("libc", SetLastError = true, EntryPoint = "open")]
    public static extern int Open(string path, int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "read")]
    public static extern nint Read(int fd, byte* buf, nint count);

    [DllImport("libc", SetLastError = true, EntryPoint = "write")]
    public static extern nint Write(int fd, byte* buf, nint count);

    [DllImport("libc", SetLastError = true, EntryPoint = "close")]
    public static extern int Close(int fd);

    /// <summary>poll(2) on one descriptor: struct pollfd is s32 fd, s16 events, s16 revents.</summary>
    [DllImport("libc", SetLastError = true, EntryPoint = "poll")]
    public static extern int Poll(long* pollfd, nuint count, int timeoutMs);

    public const short POLLIN = 1, POLLOUT = 4;
    public const int EPIPE = 32;

    [DllImport("libc", SetLastError = true, EntryPoint = "mount")]
    public static extern int Mount(string source, string target, string fstype, ulong flags, string data);

    [DllImport("libc", SetLastError = true, EntryPoint = "umount2")]
    public static extern int Umount2(string target, int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "setsid")]
    public static extern int Setsid();

    [DllImport("libc", EntryPoint = "geteuid")]
    public static extern uint Geteuid();

    [DllImport("libc", EntryPoint = "getegid")]
    public static extern uint Getegid();

    public const int AF_UNIX = 1, SOCK_STREAM = 1, SOL_SOCKET = 1, SCM_RIGHTS = 1;

    [DllImport("libc", SetLastError = true, EntryPoint = "socketpair")]
    public static extern int Socketpair(int domain, int type, int protocol, int* sv);

    [DllImport("libc", SetLastError = true, EntryPoint = "recvmsg")]
    public static extern nint Recvmsg(int fd, MsgHdr* msg, int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "fcntl")]
    public static extern int Fcntl(int fd, int cmd, int arg);

    public const int F_SETFD = 2, FD_CLOEXEC = 1;
    public const int O_RDONLY = 0, EBUSY = 16;

    [DllImport("libc", SetLastError = true, EntryPoint = "ioctl")]
    public static extern int Ioctl(int fd, nuint request, nint arg);

    [DllImport("libc", SetLastError = true, EntryPoint = "ioctl")]
    public static extern int Ioctl(int fd, nuint request, byte* arg);

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public uint NameLen;
        public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen;
        public int Flags;
    }

    public const int F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0x800;

    [DllImport("libc", SetLastError = true, EntryPoint = "epoll_create1")]
    public static extern int EpollCreate1(int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "epoll_ctl")]
    public static extern int EpollCtl(int epfd, int op, int fd, byte* ev);

    [DllImport("libc", SetLastError = true, EntryPoint = "epoll_wait")]
    public static extern int EpollWait(int epfd, byte* events, int maxEvents, int timeoutMs);

    public const int EPOLL_CTL_ADD = 1, EPOLL_CTL_DEL = 2, EPOLL_CTL_MOD = 3;
    public const uint EPOLLIN = 1, EPOLLONESHOT = 1u << 30;

    /// <summary>struct epoll_event: u32 events, then u64 data; packed (12 bytes) on x86-64,
    /// naturally aligned (16) elsewhere.</summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;
    public static int EpollDataOffset => EpollEventSize == 12 ? 4 : 8;

    [DllImport("libc", SetLastError = true, EntryPoint = "statx")]
    private static extern int Statx(int dirfd, string path, int flags, uint mask, byte* buf);

    /// <summary>The device (st_dev) <paramref name="path"/> is on, from the superblock alone
    /// (AT_STATX_DONT_SYNC: a FUSE mount's root answers without a request); null if it cannot
    /// be looked up. struct statx keeps stx_dev_major and stx_dev_minor at bytes 136 and 140.</summary>
    public static (uint Major, uint Minor)? DeviceOf(string path)
    {
        const int AT_FDCWD = -100, AT_STATX_DONT_SYNC = 0x4000;
        byte* buf = stackalloc byte[256];
        if (Statx(AT_FDCWD, path, AT_STATX_DONT_SYNC, 0, buf) != 0) return null;
        return (*(uint*)(buf + 136), *(uint*)(buf + 140));
    }

    /// <summary>The file type bits (S_IFMT of st_mode) and inode number of open descriptor
    /// <paramref name="fd"/> (statx with AT_EMPTY_PATH: stx_mode at byte 28, stx_ino at 32), or
    /// nulls if it cannot be read.</summary>
    public static (uint? Type, ulong? Inode) FileTypeAndInode(int fd)
    {
        const int AT_EMPTY_PATH = 0x1000;
        const uint STATX_TYPE = 1, STATX_INO = 0x100;
        byte* buf = stackalloc byte[256];
        if (Statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_INO, buf) != 0) return (null, null);
        return ((uint)(*(ushort*)(buf + 28) & 0xF000), *(ulong*)(buf + 32));
    }

    public static int Errno => Marshal.GetLastPInvokeError();
}

using System.Runtime.InteropServices;

namespace Reservoir.Fuse.Session;

/// <summary>The system calls the FUSE session needs, one P/Invoke each.</summary>
internal static unsafe partial class Libc
{
    public const int O_RDWR = 2, O_CLOEXEC = 0x80000;
    public const int EINTR = 4, EAGAIN = 11, ENOENT = 2, ENODEV = 19;
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

    public static int Errno => Marshal.GetLastPInvokeError();
}

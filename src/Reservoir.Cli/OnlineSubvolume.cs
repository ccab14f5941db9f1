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

    [DllImport("libc", EntryPoint = "close")]
    private static extern int Close(int fd);

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

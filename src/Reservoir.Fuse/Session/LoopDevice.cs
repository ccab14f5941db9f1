namespace Reservoir.Fuse.Session;

/// <summary>
/// A loop device over the image, so that a root mount can be a <c>fuseblk</c> mount: the
/// kernel sends FUSE_SYNCFS only to those (and to virtiofs), so only then does sync(1) and
/// syncfs(2) reach the daemon and make everything written durable, as on a kernel filesystem;
/// on a plain <c>fuse</c> mount they return having flushed the kernel's pages to the daemon
/// only. The device is bound with LOOP_CONFIGURE and autoclear: it goes away by itself when
/// the mount (its last user) does. Nothing reads or writes through it; the daemon works on
/// the image file, so there is no second page cache to keep coherent.
/// </summary>
internal static unsafe class LoopDevice
{
    private const nuint LoopCtlGetFree = 0x4C82, LoopConfigure = 0x4C0A;
    private const uint LoFlagsReadOnly = 1, LoFlagsAutoclear = 4;
    // struct loop_config: u32 fd, u32 block_size, struct loop_info64 (232 bytes; lo_flags at
    // its offset 52), u64 __reserved[8].
    private const int ConfigSize = 4 + 4 + 232 + 64, FlagsOffset = 8 + 52;

    /// <summary>Binds a free loop device to <paramref name="image"/>; returns its path and an
    /// open descriptor on it (close it once the mount holds the device), or null with the
    /// reason when the machine has no loop devices to give.</summary>
    public static (string Path, int Fd)? Attach(string image, bool readOnly, out string? why)
    {
        why = null;
        int ctl = Libc.Open("/dev/loop-control", Libc.O_RDWR | Libc.O_CLOEXEC);
        if (ctl < 0) { why = $"no /dev/loop-control (errno {Libc.Errno})"; return null; }
        int file = Libc.Open(image, (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC);
        if (file < 0) { why = $"cannot open {image} (errno {Libc.Errno})"; Libc.Close(ctl); return null; }
        try
        {
            var config = stackalloc byte[ConfigSize];
            new Span<byte>(config, ConfigSize).Clear();
            *(int*)config = file;
            *(uint*)(config + FlagsOffset) = LoFlagsAutoclear | (readOnly ? LoFlagsReadOnly : 0);
            // Another process may take the device between GET_FREE and CONFIGURE: try the next.
            for (int attempt = 0; attempt < 8; attempt++)
            {
                int n = Libc.Ioctl(ctl, LoopCtlGetFree, 0);
                if (n < 0) { why = $"no free loop device (errno {Libc.Errno})"; return null; }
                string path = $"/dev/loop{n}";
                int dev = Libc.Open(path, (readOnly ? Libc.O_RDONLY : Libc.O_RDWR) | Libc.O_CLOEXEC);
                if (dev < 0) { why = $"cannot open {path} (errno {Libc.Errno})"; return null; }
                if (Libc.Ioctl(dev, LoopConfigure, config) == 0) return (path, dev);
                int err = Libc.Errno;
                Libc.Close(dev);
                if (err != Libc.EBUSY) { why = $"LOOP_CONFIGURE on {path} failed (errno {err})"; return null; }
            }
            why = "every free loop device was taken by another process first";
            return null;
        }
        finally
        {
            Libc.Close(file); // the loop device holds the file now
            Libc.Close(ctl);
        }
    }
}

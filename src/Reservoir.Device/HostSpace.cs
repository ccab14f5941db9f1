using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Reservoir.Device;

/// <summary>
/// What the host filesystem holding an image file has for it. A fresh image is sparse: the
/// host gives it blocks only as they are first written, so an image can be larger than the
/// room left on its host. When the host then refuses a write (ENOSPC), the data it carried was
/// already accepted by write(2) inside the image, and the commit that needs it fails: the mount
/// stops taking changes (everything committed before stays). This says beforehand whether that
/// can happen: <see cref="MayGrowBy"/> against <see cref="HostAvailable"/>.
/// </summary>
/// <param name="ImageBytes">The image's size.</param>
/// <param name="AllocatedBytes">What the host has given it so far (st_blocks).</param>
/// <param name="HostAvailable">What the host filesystem has left for an ordinary write (f_bavail).</param>
public readonly record struct HostSpace(ulong ImageBytes, ulong AllocatedBytes, ulong HostAvailable)
{
    /// <summary>How much more of the host the image can take as it fills.</summary>
    public ulong MayGrowBy => ImageBytes > AllocatedBytes ? ImageBytes - AllocatedBytes : 0;

    /// <summary>The host cannot give the image all it may take.</summary>
    public bool Short => MayGrowBy > HostAvailable;

    /// <summary>The figures for a regular image file; null for anything else (a block device
    /// has all its space) or when the host does not say.</summary>
    public static HostSpace? Of(string imagePath)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var stx = new byte[256];
        const int AtFdcwd = -100, StatxSizeAndBlocks = 0x200 | 0x400, RegularFile = 0x8000;
        if (Statx(AtFdcwd, imagePath, 0, StatxSizeAndBlocks, stx) != 0) return null;
        // struct statx: stx_mode u16 at 28, stx_size u64 at 40, stx_blocks u64 (512-byte units) at 48.
        if ((BinaryPrimitives.ReadUInt16LittleEndian(stx.AsSpan(28)) & 0xF000) != RegularFile) return null;
        var vfs = new byte[256];
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(imagePath)) ?? "/";
        if (Statvfs(dir, vfs) != 0) return null;
        // struct statvfs (64-bit Linux): f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, each u64.
        ulong frsize = BinaryPrimitives.ReadUInt64LittleEndian(vfs.AsSpan(8)), bavail = BinaryPrimitives.ReadUInt64LittleEndian(vfs.AsSpan(32));
        return new HostSpace(BinaryPrimitives.ReadUInt64LittleEndian(stx.AsSpan(40)), BinaryPrimitives.ReadUInt64LittleEndian(stx.AsSpan(48)) * 512, frsize * bavail);
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "statx")]
    private static extern int Statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buf);

    [DllImport("libc", SetLastError = true, EntryPoint = "statvfs")]
    private static extern int Statvfs([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte[] buf);
}

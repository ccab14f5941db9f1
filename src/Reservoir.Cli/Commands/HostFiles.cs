using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Reservoir.Format;

namespace Reservoir.Cli.Commands;

/// <summary>
/// What `reservoir cp` needs of a host file that .NET does not give: its owner, its times to
/// the nanosecond and its extended attributes (through statx, utimensat, lchown and the
/// l*xattr calls, which act on a symbolic link itself), and the process's umask. statx's
/// structure is the same on every architecture, unlike struct stat's.
/// </summary>
internal static class HostFiles
{
    public readonly record struct Stat(uint Mode, uint Uid, uint Gid, Timespec Atime, Timespec Mtime);

    private const int AtFdcwd = -100, AtSymlinkNofollow = 0x100, StatxBasicStats = 0x7ff, StatxBtime = 0x800;

    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, byte[] path, int flags, uint mask, byte[] buf);

    [DllImport("libc", SetLastError = true)]
    private static extern int utimensat(int dirfd, byte[] path, long[] times, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int lchown(byte[] path, uint uid, uint gid);

    [DllImport("libc", SetLastError = true)]
    private static extern int chmod(byte[] path, uint mode);

    [DllImport("libc", SetLastError = true)]
    private static extern int fchmod(nint fd, uint mode);

    [DllImport("libc", SetLastError = true)]
    private static extern int fchown(nint fd, uint uid, uint gid);

    [DllImport("libc", SetLastError = true)]
    private static extern int futimens(nint fd, long[] times);

    /// <summary>chmod, chown and utimes of a file already open (one request each through a
    /// mount, and no path to look up again or to check for a link).</summary>
    public static void Chmod(Microsoft.Win32.SafeHandles.SafeFileHandle h, uint mode, string path)
    {
        if (fchmod(h.DangerousGetHandle(), mode) != 0) throw Failed("cannot set the mode of", path);
    }

    public static bool TryChown(Microsoft.Win32.SafeHandles.SafeFileHandle h, uint uid, uint gid) => fchown(h.DangerousGetHandle(), uid, gid) == 0;

    /// <summary>An open file's owner (fstat; through a mount the kernel answers it from the
    /// attributes the create returned, without a request); null if it cannot be read.</summary>
    public static (uint Uid, uint Gid)? OwnerOf(Microsoft.Win32.SafeHandles.SafeFileHandle h)
    {
        const int AtEmptyPath = 0x1000;
        const uint StatxUid = 0x8, StatxGid = 0x10;
        var b = new byte[256];
        if (statx((int)h.DangerousGetHandle(), [0], AtEmptyPath, StatxUid | StatxGid, b) != 0) return null;
        return (BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(20)), BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(24)));
    }

    public static void SetTimes(Microsoft.Win32.SafeHandles.SafeFileHandle h, Timespec atime, Timespec mtime, string path)
    {
        if (futimens(h.DangerousGetHandle(), [atime.Sec, atime.Nsec, mtime.Sec, mtime.Nsec]) != 0) throw Failed("cannot set the times of", path);
    }

    [DllImport("libc", SetLastError = true)]
    private static extern nint llistxattr(byte[] path, byte[]? list, nint size);

    [DllImport("libc", SetLastError = true)]
    private static extern nint lgetxattr(byte[] path, byte[] name, byte[]? value, nint size);

    [DllImport("libc", SetLastError = true)]
    private static extern int lsetxattr(byte[] path, byte[] name, byte[] value, nint size, int flags);

    [DllImport("libc")]
    private static extern uint umask(uint mask);

    private static byte[] Z(string s) => Encoding.UTF8.GetBytes(s + "\0");
    private static byte[] Z(byte[] s) => [.. s, 0];

    private static IOException Failed(string what, string path) =>
        new($"{what} '{path}': {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");

    /// <summary>lstat (statx with AT_SYMLINK_NOFOLLOW): mode, owner and times.</summary>
    public static Stat Lstat(string path)
    {
        var b = new byte[256];
        if (statx(AtFdcwd, Z(path), AtSymlinkNofollow, StatxBasicStats, b) != 0) throw Failed("cannot stat", path);
        static Timespec T(ReadOnlySpan<byte> s) => new(BinaryPrimitives.ReadInt64LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[8..]));
        return new Stat(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(28)), BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(20)),
            BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(24)), T(b.AsSpan(64)), T(b.AsSpan(112)));
    }

    /// <summary>The process's umask (read by setting it and setting it back).</summary>
    public static uint Umask()
    {
        uint m = umask(0x12);
        umask(m);
        return m;
    }

    /// <summary>Access and modification times, of a symbolic link itself too.</summary>
    public static void SetTimes(string path, Timespec atime, Timespec mtime)
    {
        if (utimensat(AtFdcwd, Z(path), [atime.Sec, atime.Nsec, mtime.Sec, mtime.Nsec], AtSymlinkNofollow) != 0) throw Failed("cannot set the times of", path);
    }

    /// <summary>chmod, set-user-ID and the like included.</summary>
    public static void Chmod(string path, uint mode)
    {
        if (chmod(Z(path), mode) != 0) throw Failed("cannot set the mode of", path);
    }

    /// <summary>lchown; false when the caller may not give the file away (cp -p then keeps its
    /// own ownership, as cp does).</summary>
    public static bool TryChown(string path, uint uid, uint gid) => lchown(Z(path), uid, gid) == 0;

    /// <summary>The names of a file's extended attributes (of a link itself), byte for byte.</summary>
    public static List<byte[]> ListXattrs(string path)
    {
        var names = new List<byte[]>();
        nint n = llistxattr(Z(path), null, 0);
        if (n <= 0) return names; // none, or a filesystem without them
        var buf = new byte[n];
        n = llistxattr(Z(path), buf, n);
        if (n < 0) throw Failed("cannot list the attributes of", path);
        int start = 0;
        for (int i = 0; i < n; i++)
            if (buf[i] == 0) { names.Add(buf[start..i]); start = i + 1; }
        return names;
    }

    public static byte[] GetXattr(string path, byte[] name)
    {
        nint n = lgetxattr(Z(path), Z(name), null, 0);
        if (n < 0) throw Failed($"cannot read attribute {Encoding.UTF8.GetString(name)} of", path);
        var v = new byte[n];
        if (n > 0 && lgetxattr(Z(path), Z(name), v, n) < 0) throw Failed($"cannot read attribute {Encoding.UTF8.GetString(name)} of", path);
        return v;
    }

    /// <summary>Everything lstat says that a send needs (statx, AT_SYMLINK_NOFOLLOW).</summary>
    public readonly record struct FullStat(ulong Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Rdev, ulong Size,
        Timespec Atime, Timespec Mtime, Timespec Ctime, ulong Dev, Timespec Btime);

    public static FullStat LstatFull(string path)
    {
        var b = new byte[256];
        if (statx(AtFdcwd, Z(path), AtSymlinkNofollow, StatxBasicStats | StatxBtime, b) != 0) throw Failed("cannot stat", path);
        uint U32(int o) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o));
        ulong U64(int o) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(o));
        Timespec T(int o) => new((long)U64(o), U32(o + 8));
        return new FullStat(U64(32), BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(28)), U32(16), U32(20), U32(24),
            MakeDev(U32(128), U32(132)), U64(40), T(64), T(112), T(96), MakeDev(U32(136), U32(140)),
            (U32(0) & StatxBtime) != 0 ? T(80) : default); // no birth time from this filesystem: 0
    }

    /// <summary>glibc's makedev: the dev_t that mknod(2) takes.</summary>
    public static ulong MakeDev(ulong major, ulong minor) =>
        ((major & 0xFFF) << 8) | ((major & ~0xFFFUL) << 32) | (minor & 0xFF) | ((minor & ~0xFFUL) << 12);

    [DllImport("libc", SetLastError = true)]
    private static extern int mknod(byte[] path, uint mode, ulong dev);

    [DllImport("libc", SetLastError = true)]
    private static extern int link(byte[] existing, byte[] path);

    [DllImport("libc", SetLastError = true)]
    private static extern int lremovexattr(byte[] path, byte[] name);

    [DllImport("libc", SetLastError = true)]
    private static extern long lseek(nint fd, long offset, int whence);

    [DllImport("libc", SetLastError = true)]
    private static extern nint copy_file_range(nint fdIn, ref long offIn, nint fdOut, ref long offOut, nint len, uint flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int mkdir(byte[] path, uint mode);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int OpenFd(byte[] path, int flags);

    /// <summary>open(2) with O_NOFOLLOW: a symbolic link at the path is refused (ELOOP), not
    /// followed.</summary>
    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int CreateFd(byte[] path, int flags, uint mode);

    /// <summary>A new regular file, open for writing: refused if the name exists (a link
    /// included). One request through a mount (CREATE), where mknod and then open take two.</summary>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle CreateNew(string path, uint mode)
    {
        const int OWronly = 1, OCreat = 0x40, OExcl = 0x80, OCloexec = 0x80000;
        int fd = CreateFd(Z(path), OWronly | OCreat | OExcl | OnlineSubvolume.O_NOFOLLOW | OCloexec, mode);
        if (fd < 0) throw Failed("cannot create", path);
        return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
    }

    public static Microsoft.Win32.SafeHandles.SafeFileHandle OpenNoFollow(string path, bool write)
    {
        const int ORdonly = 0, OWronly = 1, OCloexec = 0x80000;
        int fd = OpenFd(Z(path), (write ? OWronly : ORdonly) | OnlineSubvolume.O_NOFOLLOW | OCloexec);
        if (fd < 0) throw Failed("cannot open", path);
        return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int rename(byte[] from, byte[] to);

    [DllImport("libc", SetLastError = true)]
    private static extern int unlink(byte[] path);

    public static void Rename(string from, string to)
    {
        if (rename(Z(from), Z(to)) != 0) throw Failed($"cannot rename to '{to}'", from);
    }

    public static void Unlink(string path)
    {
        if (unlink(Z(path)) != 0) throw Failed("cannot remove", path);
    }

    /// <summary>mkdir(2): fails if the path exists, as a receive must.</summary>
    public static void Mkdir(string path, uint mode)
    {
        if (mkdir(Z(path), mode) != 0) throw Failed("cannot create the directory", path);
    }

    public static void Mknod(string path, uint mode, ulong dev)
    {
        if (mknod(Z(path), mode, dev) != 0) throw Failed("cannot create", path);
    }

    public static void Link(string existing, string path)
    {
        if (link(Z(existing), Z(path)) != 0) throw Failed($"cannot link '{existing}' as", path);
    }

    public static void SetXattr(string path, byte[] name, byte[] value)
    {
        if (lsetxattr(Z(path), Z(name), value, value.Length, 0) != 0) throw Failed($"cannot set attribute {Encoding.UTF8.GetString(name)} of", path);
    }

    public static void RemoveXattr(string path, byte[] name)
    {
        if (lremovexattr(Z(path), Z(name)) != 0) throw Failed($"cannot remove attribute {Encoding.UTF8.GetString(name)} of", path);
    }

    /// <summary>lseek SEEK_DATA (3) or SEEK_HOLE (4); -1 for ENXIO (no data past the offset).</summary>
    public static long SeekDataHole(Microsoft.Win32.SafeHandles.SafeFileHandle h, long offset, bool data, string path)
    {
        long r = lseek(h.DangerousGetHandle(), offset, data ? 3 : 4);
        if (r >= 0) return r;
        if (Marshal.GetLastPInvokeError() == 6) return -1; // ENXIO
        throw Failed("cannot seek in", path);
    }

    /// <summary>copy_file_range(2) to completion: on a Reservoir mount the extents are shared.</summary>
    public static void CopyRange(Microsoft.Win32.SafeHandles.SafeFileHandle from, long fromOff, Microsoft.Win32.SafeHandles.SafeFileHandle to, long toOff, long len, string path)
    {
        while (len > 0)
        {
            nint n = copy_file_range(from.DangerousGetHandle(), ref fromOff, to.DangerousGetHandle(), ref toOff, (nint)len, 0);
            if (n < 0) throw Failed("cannot clone into", path);
            if (n == 0) throw new IOException($"cannot clone into '{path}': the source ends early");
            len -= n;
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int fallocate(nint fd, int mode, long offset, long len);

    /// <summary>fallocate(2) on an open file (mode: FALLOC_FL_* bits).</summary>
    public static void Fallocate(Microsoft.Win32.SafeHandles.SafeFileHandle h, int mode, long offset, long len, string path)
    {
        if (fallocate(h.DangerousGetHandle(), mode, offset, len) != 0) throw Failed("cannot fallocate", path);
    }

    /// <summary>Sets an attribute; the error's text when it cannot be (cp -a warns and goes on).</summary>
    public static string? TrySetXattr(string path, byte[] name, byte[] value) =>
        lsetxattr(Z(path), Z(name), value, value.Length, 0) == 0 ? null : Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
}

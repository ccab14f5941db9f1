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

    private const int AtFdcwd = -100, AtSymlinkNofollow = 0x100, StatxBasicStats = 0x7ff;

    [DllImport("libc", SetLastError = true)]
    private static extern int statx(int dirfd, byte[] path, int flags, uint mask, byte[] buf);

    [DllImport("libc", SetLastError = true)]
    private static extern int utimensat(int dirfd, byte[] path, long[] times, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int lchown(byte[] path, uint uid, uint gid);

    [DllImport("libc", SetLastError = true)]
    private static extern int chmod(byte[] path, uint mode);

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

    /// <summary>Sets an attribute; the error's text when it cannot be (cp -a warns and goes on).</summary>
    public static string? TrySetXattr(string path, byte[] name, byte[] value) =>
        lsetxattr(Z(path), Z(name), value, value.Length, 0) == 0 ? null : Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
}

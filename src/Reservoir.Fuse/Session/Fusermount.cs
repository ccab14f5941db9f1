using System.Diagnostics;
using Reservoir.Common;

namespace Reservoir.Fuse.Session;

/// <summary>
/// Mounting without root, the way libfuse does it: the setuid helper fusermount3 opens
/// /dev/fuse, mounts it on a directory the user owns and passes the open descriptor back over
/// a Unix socket (SCM_RIGHTS) named by the _FUSE_COMMFD environment variable. Unmounting is
/// `fusermount3 -u`. Only the options fusermount3 accepts from users are passed (allow_other
/// also needs user_allow_other in /etc/fuse.conf).
/// </summary>
internal static unsafe class Fusermount
{
    public static string? Find() =>
        new[] { "/usr/bin/fusermount3", "/bin/fusermount3", "/usr/local/bin/fusermount3" }.FirstOrDefault(File.Exists);

    /// <summary>Mounts and returns the /dev/fuse descriptor.</summary>
    public static int Mount(string helper, string mountPoint, string options)
    {
        int* sv = stackalloc int[2];
        if (Libc.Socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM, 0, sv) != 0)
            throw new FsException(Errno.EIO, $"socketpair failed: errno {Libc.Errno}");
        int ours = sv[0], theirs = sv[1];
        // Our end must not leak into the helper; theirs must reach it.
        Libc.Fcntl(ours, Libc.F_SETFD, Libc.FD_CLOEXEC);
        try
        {
            var psi = new ProcessStartInfo(helper, ["-o", options, "--", mountPoint]) { UseShellExecute = false, RedirectStandardError = true };
            psi.Environment["_FUSE_COMMFD"] = theirs.ToString(System.Globalization.CultureInfo.InvariantCulture);
            using var p = Process.Start(psi) ?? throw new FsException(Errno.EIO, $"cannot start {helper}");
            Libc.Close(theirs);
            theirs = -1;
            int fd = ReceiveFd(ours);
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (fd < 0)
                throw new FsException(p.ExitCode == 0 ? Errno.EIO : Errno.EPERM, $"{helper} did not mount '{mountPoint}': {(err.Trim().Length > 0 ? err.Trim() : $"exit {p.ExitCode}")}");
            return fd;
        }
        finally
        {
            Libc.Close(ours);
            if (theirs >= 0) Libc.Close(theirs);
        }
    }

    /// <summary>Reads one message carrying a descriptor (SCM_RIGHTS); -1 when the helper
    /// closed the socket without sending one (it failed and said why on stderr).</summary>
    private static int ReceiveFd(int sock)
    {
        byte data;
        var iov = new Libc.IoVec { Base = &data, Len = 1 };
        const int controlLen = 64;
        byte* control = stackalloc byte[controlLen];
        var msg = new Libc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = controlLen };
        nint n;
        do n = Libc.Recvmsg(sock, &msg, 0);
        while (n < 0 && Libc.Errno == Libc.EINTR);
        if (n <= 0 || msg.ControlLen < 20) return -1;
        // struct cmsghdr { size_t len; int level; int type; } then the data (one int).
        int level = *(int*)(control + 8), type = *(int*)(control + 12);
        if (level != Libc.SOL_SOCKET || type != Libc.SCM_RIGHTS) return -1;
        return *(int*)(control + 16);
    }

    public static bool Unmount(string helper, string mountPoint, bool lazy) => Unmount(helper, mountPoint, lazy, out _);

    /// <summary>fusermount3 -u [-z]; <paramref name="error"/>: what it said, trimmed.</summary>
    public static bool Unmount(string helper, string mountPoint, bool lazy, out string error)
    {
        var psi = new ProcessStartInfo(helper, lazy ? ["-u", "-z", "--", mountPoint] : ["-u", "--", mountPoint]) { UseShellExecute = false, RedirectStandardError = true };
        using var p = Process.Start(psi);
        error = "";
        if (p == null) return false;
        error = p.StandardError.ReadToEnd().Trim();
        p.WaitForExit();
        return p.ExitCode == 0;
    }
}

namespace Reservoir.Common;

/// <summary>
/// Linux errno values (asm-generic/errno-base.h and errno.h). Inside the engine every POSIX
/// outcome is one of these; only these cross the FUSE boundary.
/// </summary>
public enum Errno
{
    OK = 0,
    EPERM = 1,
    ENOENT = 2,
    EINTR = 4,
    EIO = 5,
    ENXIO = 6,
    E2BIG = 7,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EEXIST = 17,
    EXDEV = 18,
    ENODEV = 19,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    ETXTBSY = 26,
    EFBIG = 27,
    ENOSPC = 28,
    ESPIPE = 29,
    EROFS = 30,
    EMLINK = 31,
    ERANGE = 34,
    EDEADLK = 35,
    ENAMETOOLONG = 36,
    ENOLCK = 37,
    ENOSYS = 38,
    ENOTEMPTY = 39,
    ELOOP = 40,
    ENODATA = 61,
    EPROTO = 71,
    EOVERFLOW = 75,
    EOPNOTSUPP = 95,
    ENOTCONN = 107,
    EUCLEAN = 117,
    EDQUOT = 122,
}

public static class ErrnoExtensions
{
    public static string Describe(this Errno e) => e switch
    {
        Errno.OK => "success",
        Errno.EPERM => "operation not permitted",
        Errno.ENOENT => "no such file or directory",
        Errno.EIO => "input/output error",
        Errno.E2BIG => "argument list too long",
        Errno.EBADF => "bad file descriptor",
        Errno.EACCES => "permission denied",
        Errno.EBUSY => "device or resource busy",
        Errno.EEXIST => "file exists",
        Errno.EXDEV => "invalid cross-device link",
        Errno.ENOTDIR => "not a directory",
        Errno.EISDIR => "is a directory",
        Errno.EINVAL => "invalid argument",
        Errno.EFBIG => "file too large",
        Errno.ENOSPC => "no space left on device",
        Errno.EROFS => "read-only file system",
        Errno.EMLINK => "too many links",
        Errno.ERANGE => "numerical result out of range",
        Errno.ENAMETOOLONG => "file name too long",
        Errno.ENOSYS => "function not implemented",
        Errno.ENOTEMPTY => "directory not empty",
        Errno.ELOOP => "too many levels of symbolic links",
        Errno.ENODATA => "no data available",
        Errno.EOPNOTSUPP => "operation not supported",
        Errno.EUCLEAN => "structure needs cleaning (filesystem corrupted)",
        Errno.EDQUOT => "disk quota exceeded",
        _ => e.ToString(),
    };
}

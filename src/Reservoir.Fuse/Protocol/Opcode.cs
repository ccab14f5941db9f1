namespace Reservoir.Fuse.Protocol;

/// <summary>FUSE request opcodes (include/uapi/linux/fuse.h, protocol 7.39).</summary>
public enum Opcode : uint
{
    Lookup = 1, Forget = 2, Getattr = 3, Setattr = 4, Readlink = 5, Symlink = 6, Mknod = 8, Mkdir = 9,
    Unlink = 10, Rmdir = 11, Rename = 12, Link = 13, Open = 14, Read = 15, Write = 16, Statfs = 17,
    Release = 18, Fsync = 20, Setxattr = 21, Getxattr = 22, Listxattr = 23, Removexattr = 24, Flush = 25,
    Init = 26, Opendir = 27, Readdir = 28, Releasedir = 29, Fsyncdir = 30, Getlk = 31, Setlk = 32, Setlkw = 33,
    Access = 34, Create = 35, Interrupt = 36, Bmap = 37, Destroy = 38, Ioctl = 39, Poll = 40, NotifyReply = 41,
    BatchForget = 42, Fallocate = 43, Readdirplus = 44, Rename2 = 45, Lseek = 46, CopyFileRange = 47,
    SetupMapping = 48, RemoveMapping = 49, Syncfs = 50, Tmpfile = 51, Statx = 52,
}

/// <summary>Sizes and flags of the kernel ABI this binding speaks.</summary>
public static class Abi
{
    public const uint KernelMajor = 7;
    /// <summary>7.39 added FUSE_STATX (statx's birth time); nothing else a reply of ours
    /// carries changed.</summary>
    public const uint KernelMinor = 39;
    public const int InHeaderSize = 40;
    public const int OutHeaderSize = 16;
    public const int AttrSize = 88;
    public const int EntryOutSize = 128;
    public const int AttrOutSize = 104;
    /// <summary>fuse_statx_out: 32 bytes, then fuse_statx (statx(2)'s layout, 256 bytes).</summary>
    public const int StatxOutSize = 288;
    public const int OpenOutSize = 16;
    public const int WriteOutSize = 8;
    public const int StatfsOutSize = 80;
    public const int InitOutSize = 64;
    public const int DirentHeaderSize = 24;
    public const ulong RootId = 1;

    // fuse_init flags
    public const uint AsyncRead = 1 << 0;
    public const uint BigWrites = 1 << 5;
    /// <summary>The kernel passes the caller's umask unapplied (mknod, mkdir, create): the
    /// daemon applies it only when the directory has no default ACL, as posix_acl_create does.</summary>
    public const uint DontMask = 1 << 6;
    public const uint IoctlDir = 1 << 11;
    public const uint AutoInvalData = 1 << 12;
    public const uint ParallelDirops = 1 << 18;
    /// <summary>The kernel caches access ACLs and enforces them in its own permission checks
    /// (negotiated with <c>default_permissions</c> only: it implies them).</summary>
    public const uint PosixAcl = 1 << 20;
    public const uint MaxPages = 1 << 22;
    /// <summary>The daemon drops set-user-ID, set-group-ID and security.capability on write,
    /// truncate and chown, so the kernel no longer asks for security.capability (a GETXATTR
    /// round trip) before every write.</summary>
    public const uint HandleKillprivV2 = 1u << 28;

    // fuse_write_in write_flags
    /// <summary>The writer lacks CAP_FSETID: set-user-ID and set-group-ID go.</summary>
    public const uint WriteKillSuidgid = 1 << 2;

    // fuse_open_out flags
    public const uint FopenDirectIo = 1 << 0;
    public const uint FopenKeepCache = 1 << 1;

    // fuse_setattr_in valid bits
    public const uint FattrMode = 1 << 0, FattrUid = 1 << 1, FattrGid = 1 << 2, FattrSize = 1 << 3,
        FattrAtime = 1 << 4, FattrMtime = 1 << 5, FattrFh = 1 << 6, FattrAtimeNow = 1 << 7, FattrMtimeNow = 1 << 8,
        FattrCtime = 1 << 10, FattrKillSuidgid = 1 << 11;
}

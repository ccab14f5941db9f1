using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Data;

namespace Reservoir.Stress;

/// <summary>
/// Any mounted directory, through the kernel's system calls (open, pwrite, O_DIRECT, mmap,
/// fallocate, …), as fsstress drives a filesystem: Reservoir through its FUSE mount, and kernel
/// ext4, btrfs or tmpfs for comparison with the same seed. Paths of the runner ("/p0/f3") live
/// under <see cref="Root"/>. Direct IO uses aligned buffers; page-fault writes map the file
/// shared and store into it.
/// </summary>
public sealed unsafe class PathStressTarget(string root) : IStressTarget
{
    public string Root { get; } = Path.GetFullPath(root);
    public string Describe => $"directory {Root}";
    /// <summary>A mapped store whose writeback fails leaves the kernel's cached page holding
    /// data the filesystem never got (POSIX leaves the contents unspecified after such an
    /// error; FUSE gives the daemon no page fault to refuse the store at). Writeback's errors
    /// are the ones msync reports; open and mmap fail (EROFS in a read-only snapshot, ENOENT,
    /// EACCES) before anything is stored.</summary>
    public bool FailedMappedWriteLeavesContentsUnspecified(Errno e) => e is Errno.EIO or Errno.ENOSPC or Errno.EDQUOT;
    public string? CheckFile(string path) => null;

    private string Full(string p) => Root + p;

    private static Errno Err() => (Errno)Marshal.GetLastPInvokeError();
    private static Errno Check(int rc) => rc == 0 ? Errno.OK : Err();

    public Errno Create(string path)
    {
        int fd = Libc.Open(Full(path), Libc.O_CREAT | Libc.O_EXCL | Libc.O_WRONLY | Libc.O_CLOEXEC, 0x1A4);
        if (fd < 0) return Err();
        Libc.Close(fd);
        return Errno.OK;
    }

    public Errno Mkdir(string path) => Check(Libc.Mkdir(Full(path), 0x1ED));
    public Errno MkFifo(string path) => Check(Libc.Mknod(Full(path), 0x1000 | 0x1A4, 0));
    public Errno Symlink(string target, string path) => Check(Libc.Symlink(target, Full(path)));
    public Errno Link(string from, string to) => Check(Libc.Link(Full(from), Full(to)));
    public Errno Unlink(string path) => Check(Libc.Unlink(Full(path)));
    public Errno Rmdir(string path) => Check(Libc.Rmdir(Full(path)));
    public Errno Rename(string from, string to) => Check(Libc.Rename(Full(from), Full(to)));
    public Errno Exchange(string a, string b) => Check(Libc.Renameat2(Libc.AT_FDCWD, Full(a), Libc.AT_FDCWD, Full(b), Libc.RENAME_EXCHANGE));
    public Errno RenameWhiteout(string from, string to) => Check(Libc.Renameat2(Libc.AT_FDCWD, Full(from), Libc.AT_FDCWD, Full(to), Libc.RENAME_WHITEOUT));
    // Subvolumes through the ioctls that `reservoir subvolume` uses on a mount (btrfs's numbers
    // for create and delete; on kernel btrfs a snapshot goes through its own ioctl). A
    // filesystem without subvolumes (ext4, tmpfs) answers ENOTTY: reported as EOPNOTSUPP, as
    // the in-process target would.
    public Errno CreateSubvolume(string path) => NoIoctl(OnlineSubvolume.Create(Full(path)));
    public Errno DeleteSubvolume(string path) => NoIoctl(OnlineSubvolume.Delete(Full(path)));
    public Errno Snapshot(string source, string dest, bool readOnly) => NoIoctl(OnlineSubvolume.Snapshot(Full(source), Full(dest), readOnly));
    private static Errno NoIoctl(Errno e) => e == Errno.ENOTTY ? Errno.EOPNOTSUPP : e;

    public unsafe Errno CloneRange(string src, ulong srcOff, string dst, ulong dstOff, ulong len, out ulong copied)
    {
        copied = 0;
        int fi = Libc.Open(Full(src), Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fi < 0) return Err();
        try
        {
            int fo = Libc.Open(Full(dst), Libc.O_WRONLY | Libc.O_CLOEXEC, 0);
            if (fo < 0) return Err();
            try
            {
                if (len == 0)
                {
                    var st = new FileInfo(Full(src)).Length;
                    len = (ulong)Math.Max(0, st - (long)srcOff);
                }
                long a = (long)srcOff, b = (long)dstOff;
                while (len > 0)
                {
                    nint n = Libc.CopyFileRange(fi, &a, fo, &b, (nuint)len, 0);
                    if (n < 0) return Err();
                    if (n == 0) break;
                    len -= (ulong)n;
                    copied += (ulong)n;
                }
                return Errno.OK;
            }
            finally { Libc.Close(fo); }
        }
        finally { Libc.Close(fi); }
    }

    public Errno Stat(string path, out StressStat st) => StatX(path, follow: true, out st);
    public Errno Lstat(string path) => StatX(path, follow: false, out _);

    private Errno StatX(string path, bool follow, out StressStat st)
    {
        // statx: the same layout on every architecture (struct stat is not).
        var buf = stackalloc byte[256];
        int rc = Libc.Statx(Libc.AT_FDCWD, Full(path), follow ? 0 : Libc.AT_SYMLINK_NOFOLLOW, 0x7FF, buf);
        if (rc != 0) { st = default; return Err(); }
        uint mode = *(ushort*)(buf + 0x1C);
        ulong size = *(ulong*)(buf + 0x28);
        st = new StressStat((mode & 0xF000) == 0x8000, (mode & 0xF000) == 0x4000, size);
        return Errno.OK;
    }

    public Errno Tmpfile(string path, byte[] data)
    {
        int slash = path.LastIndexOf('/');
        int fd = Libc.Open(Full(slash == 0 ? "/" : path[..slash]), Libc.O_TMPFILE | Libc.O_RDWR | Libc.O_CLOEXEC, 0x1A4);
        if (fd < 0) return Err();
        try
        {
            var e = WriteAll(fd, data, 0, out _);
            return e != Errno.OK ? e : Check(Libc.Linkat(fd, "", Libc.AT_FDCWD, Full(path), Libc.AT_EMPTY_PATH));
        }
        finally { Libc.Close(fd); }
    }

    public Errno Write(string path, ulong offset, byte[] data, StressWriteKind kind, out int written)
    {
        written = 0;
        int flags = (kind == StressWriteKind.Mapped ? Libc.O_RDWR : Libc.O_WRONLY) | Libc.O_CLOEXEC | (kind == StressWriteKind.Direct ? Libc.O_DIRECT : 0);
        int fd = Libc.Open(Full(path), flags, 0);
        if (fd < 0) return Err();
        try
        {
            int done = 0;
            var e = kind switch
            {
                StressWriteKind.Mapped => MappedStore(fd, offset, data),
                StressWriteKind.Direct => Aligned(data.Length, p =>
                {
                    data.CopyTo(new Span<byte>(p, data.Length));
                    nint n = Libc.Pwrite(fd, p, (nuint)data.Length, (long)offset);
                    if (n > 0) done = (int)n;
                    return Whole(n, data.Length);
                }),
                _ => WriteAll(fd, data, offset, out done),
            };
            written = kind == StressWriteKind.Mapped ? (e == Errno.OK ? data.Length : 0) : done;
            return e;
        }
        finally { Libc.Close(fd); }
    }

    private static Errno WriteAll(int fd, byte[] data, ulong offset, out int done)
    {
        done = 0;
        fixed (byte* p = data)
        {
            while (done < data.Length)
            {
                nint n = Libc.Pwrite(fd, p + done, (nuint)(data.Length - done), (long)offset + done);
                if (n < 0) return Err();
                if (n == 0) return Errno.EIO;
                done += (int)n;
            }
        }
        return Errno.OK;
    }

    private static Errno Whole(nint n, int want) => n < 0 ? Err() : n == want ? Errno.OK : Errno.EIO;

    /// <summary>Runs <paramref name="f"/> with an aligned native buffer (O_DIRECT needs one).</summary>
    private static Errno Aligned(int len, WithBuffer f)
    {
        void* p = NativeMemory.AlignedAlloc((nuint)Math.Max(len, 1), 4096);
        try { return f((byte*)p); }
        finally { NativeMemory.AlignedFree(p); }
    }

    private delegate Errno WithBuffer(byte* p);

    /// <summary>A store through a shared writable mapping (the page-fault write path), then
    /// munmap; the kernel writes the dirty pages back like any others.</summary>
    private static Errno MappedStore(int fd, ulong offset, byte[] data)
    {
        if (data.Length == 0) return Errno.OK;
        long page = Environment.SystemPageSize;
        long start = (long)offset / page * page;
        nuint len = (nuint)((long)offset + data.Length - start);
        nint map = Libc.Mmap(0, len, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, start);
        if (map == -1) return Err();
        try
        {
            // The store goes through process_vm_writev into our own mapping: the kernel takes
            // the same write fault (page_mkwrite, the page dirtied) as a CPU store, but a fault
            // it cannot serve (a read error from a failed filesystem, a page past the end after
            // a truncate) comes back as an error instead of SIGBUS, which would kill the runner.
            fixed (byte* p = data)
            {
                var local = new Libc.IoVec { Base = p, Len = (nuint)data.Length };
                var remote = new Libc.IoVec { Base = (byte*)map + ((long)offset - start), Len = (nuint)data.Length };
                nint n = Libc.ProcessVmWritev(Environment.ProcessId, &local, 1, &remote, 1, 0);
                if (n < 0) { var e = Err(); return e == Errno.EFAULT ? Errno.EIO : e; }
                if (n != data.Length) return Errno.EIO;
            }
            // Stores into a mapping reach the filesystem at writeback; msync is where a failure
            // (ENOSPC on a full FUSE mount, whose page faults reserve nothing) is reported.
            if (Libc.Msync(map, len, Libc.MS_SYNC) != 0) return Err();
        }
        finally { Libc.Munmap(map, len); }
        return Errno.OK;
    }

    public Errno Read(string path, ulong offset, byte[] buffer, bool direct, out int read)
    {
        read = 0;
        int fd = Libc.Open(Full(path), Libc.O_RDONLY | Libc.O_CLOEXEC | (direct ? Libc.O_DIRECT : 0), 0);
        if (fd < 0) return Err();
        try
        {
            int got = 0;
            var e = Aligned(buffer.Length, p =>
            {
                while (got < buffer.Length)
                {
                    nint n = Libc.Pread(fd, p + got, (nuint)(buffer.Length - got), (long)offset + got);
                    if (n < 0) return Err();
                    if (n == 0) break;
                    got += (int)n;
                }
                new ReadOnlySpan<byte>(p, got).CopyTo(buffer);
                return Errno.OK;
            });
            read = got;
            return e;
        }
        finally { Libc.Close(fd); }
    }

    public Errno Fallocate(string path, FallocateMode mode, ulong offset, ulong length)
    {
        int fd = Libc.Open(Full(path), Libc.O_WRONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return Err();
        try { return Check(Libc.Fallocate(fd, (int)mode, (long)offset, (long)length)); }
        finally { Libc.Close(fd); }
    }

    public Errno Truncate(string path, ulong size) => Check(Libc.Truncate(Full(path), (long)size));

    public Errno Fsync(string path, bool dataOnly)
    {
        int fd = Libc.Open(Full(path), Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return Err();
        try { return Check(dataOnly ? Libc.Fdatasync(fd) : Libc.Fsync(fd)); }
        finally { Libc.Close(fd); }
    }

    /// <summary>The mounted Reservoir's size when the target was made (0: not a Reservoir).</summary>
    private readonly ulong _startSize = OnlineSubvolume.Space(root, out var sp, out _) == Errno.OK ? sp.DeviceBytes : 0;

    public Errno DiskUsage(string path) => _startSize == 0 ? Errno.ENOTTY : OnlineSubvolume.DiskUsage(Full(path), out _);

    public Errno FindNew(string subvolume, int generationsBack)
    {
        if (_startSize == 0) return Errno.ENOTTY;
        // The marker first (nothing is newer than "never"), then the walk from a few before it.
        var e = OnlineFindNew.Run(Full(subvolume), ulong.MaxValue, _ => { }, out ulong marker);
        if (e != Errno.OK) return e;
        ulong since = marker > (ulong)generationsBack ? marker - (ulong)generationsBack : 0;
        var found = new List<Engine.NewExtent>();
        e = OnlineFindNew.Run(Full(subvolume), since, found.Add, out _);
        if (e == Errno.OK) FindNewCheck.Check(subvolume, since, found, ulong.MaxValue);
        return e;
    }

    /// <summary>75-125 %: of the size it started with. Below 75 %, a shrink into the data: to
    /// 1.6-2.5 times what is in use (statfs's view through the space ioctl), which is mostly
    /// below where the last block in use ends once the workload has spread.</summary>
    public Errno Resize(int percentOfStart)
    {
        if (_startSize == 0) return Errno.ENOTTY;
        ulong to = _startSize * (ulong)percentOfStart / 100;
        if (percentOfStart < 75 && OnlineSubvolume.Space(Root, out var sp, out _) == Errno.OK)
            to = (sp.DataUsed + sp.MetaUsed) * (ulong)(percentOfStart + 50) / 50;
        var e = OnlineSubvolume.Resize(Root, (to >> 20 << 20).ToString(CultureInfo.InvariantCulture), out _, out _, out _, out var moved);
        if (moved.DataExtents + moved.TreeBlocks > 0)
            lock (_relocationsLock) _relocations = (_relocations.Shrinks + 1, _relocations.DataExtents + moved.DataExtents, _relocations.TreeBlocks + moved.TreeBlocks);
        return e;
    }

    private readonly object _relocationsLock = new(); // guards _relocations (workers resize at once)
    private (int Shrinks, long DataExtents, long TreeBlocks) _relocations;
    public (int Shrinks, long DataExtents, long TreeBlocks) Relocations { get { lock (_relocationsLock) return _relocations; } }

    public Errno Sync()
    {
        // syncfs on the target's filesystem, not every filesystem on the host.
        int fd = Libc.Open(Root, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return Err();
        try { return Check(Libc.Syncfs(fd)); }
        finally { Libc.Close(fd); }
    }

    public Errno Chmod(string path, uint mode) => Check(Libc.Chmod(Full(path), mode));

    public Errno SetXattr(string path, string name, byte[] value)
    {
        fixed (byte* v = value) return Check(Libc.Setxattr(Full(path), name, v, (nuint)value.Length, 0));
    }

    public Errno RemoveXattr(string path, string name) => Check(Libc.Removexattr(Full(path), name));

    public Errno ReadDir(string path)
    {
        nint d = Libc.Opendir(Full(path));
        if (d == 0) return Err();
        try
        {
            Marshal.SetLastPInvokeError(0);
            while (Libc.Readdir(d) != 0) { }
            int err = Marshal.GetLastPInvokeError();
            return err == 0 ? Errno.OK : (Errno)err;
        }
        finally { Libc.Closedir(d); }
    }

    public Errno Readlink(string path, out string target)
    {
        var buf = stackalloc byte[4096];
        nint n = Libc.Readlink(Full(path), buf, 4096);
        if (n < 0) { target = ""; return Err(); }
        target = Encoding.UTF8.GetString(buf, (int)n);
        return Errno.OK;
    }

    public byte[] ReadAll(string path) => File.ReadAllBytes(Full(path));
    public bool DirectoryExists(string path) => Directory.Exists(Full(path));
    public IEnumerable<string> Verify() => [];

    /// <summary>The system calls, by their C names (glibc on Linux; x86-64 and arm64 share
    /// these flag values).</summary>
    private static class Libc
    {
        // Every open adds O_NONBLOCK: opening a FIFO (mknod makes them) would otherwise wait for a
        // peer forever; on regular files and directories it changes nothing.
        public const int O_RDONLY = 0x800, O_WRONLY = 0x801, O_RDWR = 0x802, O_CREAT = 0x40, O_EXCL = 0x80, O_CLOEXEC = 0x80000;
        public static readonly int O_DIRECT = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x10000 : 0x4000;
        public const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;
        /// <summary>O_TMPFILE: __O_TMPFILE | O_DIRECTORY, whose value differs on arm64.</summary>
        public static readonly int O_TMPFILE = 0x400000 | (RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x4000 : 0x10000);
        public const int PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1, MS_SYNC = 4;

        [DllImport("libc", EntryPoint = "open", SetLastError = true)] public static extern int Open(string path, int flags, int mode);
        [DllImport("libc", EntryPoint = "close", SetLastError = true)] public static extern int Close(int fd);
        [DllImport("libc", EntryPoint = "pwrite", SetLastError = true)] public static extern nint Pwrite(int fd, byte* buf, nuint count, long offset);
        [DllImport("libc", EntryPoint = "pread", SetLastError = true)] public static extern nint Pread(int fd, byte* buf, nuint count, long offset);
        [DllImport("libc", EntryPoint = "fallocate", SetLastError = true)] public static extern int Fallocate(int fd, int mode, long offset, long len);
        [DllImport("libc", EntryPoint = "copy_file_range", SetLastError = true)] public static extern nint CopyFileRange(int fdIn, long* offIn, int fdOut, long* offOut, nuint len, uint flags);
        [DllImport("libc", EntryPoint = "truncate", SetLastError = true)] public static extern int Truncate(string path, long size);
        [DllImport("libc", EntryPoint = "fsync", SetLastError = true)] public static extern int Fsync(int fd);
        [DllImport("libc", EntryPoint = "fdatasync", SetLastError = true)] public static extern int Fdatasync(int fd);
        [DllImport("libc", EntryPoint = "syncfs", SetLastError = true)] public static extern int Syncfs(int fd);
        [DllImport("libc", EntryPoint = "mkdir", SetLastError = true)] public static extern int Mkdir(string path, int mode);
        [DllImport("libc", EntryPoint = "mknod", SetLastError = true)] public static extern int Mknod(string path, int mode, ulong dev);
        [DllImport("libc", EntryPoint = "symlink", SetLastError = true)] public static extern int Symlink(string target, string path);
        [DllImport("libc", EntryPoint = "link", SetLastError = true)] public static extern int Link(string from, string to);
        [DllImport("libc", EntryPoint = "linkat", SetLastError = true)] public static extern int Linkat(int oldDirFd, string oldPath, int newDirFd, string newPath, int flags);
        [DllImport("libc", EntryPoint = "unlink", SetLastError = true)] public static extern int Unlink(string path);
        [DllImport("libc", EntryPoint = "rmdir", SetLastError = true)] public static extern int Rmdir(string path);
        [DllImport("libc", EntryPoint = "rename", SetLastError = true)] public static extern int Rename(string from, string to);
        [DllImport("libc", EntryPoint = "renameat2", SetLastError = true)] public static extern int Renameat2(int oldDirFd, string from, int newDirFd, string to, uint flags);
        public const uint RENAME_EXCHANGE = 2;
        public const uint RENAME_WHITEOUT = 4;
        [DllImport("libc", EntryPoint = "chmod", SetLastError = true)] public static extern int Chmod(string path, uint mode);
        [DllImport("libc", EntryPoint = "setxattr", SetLastError = true)] public static extern int Setxattr(string path, string name, byte* value, nuint size, int flags);
        [DllImport("libc", EntryPoint = "removexattr", SetLastError = true)] public static extern int Removexattr(string path, string name);
        [DllImport("libc", EntryPoint = "statx", SetLastError = true)] public static extern int Statx(int dirfd, string path, int flags, uint mask, byte* buf);
        [DllImport("libc", EntryPoint = "readlink", SetLastError = true)] public static extern nint Readlink(string path, byte* buf, nuint size);
        [DllImport("libc", EntryPoint = "opendir", SetLastError = true)] public static extern nint Opendir(string path);
        [DllImport("libc", EntryPoint = "readdir", SetLastError = true)] public static extern nint Readdir(nint dir);
        [DllImport("libc", EntryPoint = "closedir", SetLastError = true)] public static extern int Closedir(nint dir);
        [DllImport("libc", EntryPoint = "mmap", SetLastError = true)] public static extern nint Mmap(nint addr, nuint len, int prot, int flags, int fd, long offset);
        [DllImport("libc", EntryPoint = "munmap", SetLastError = true)] public static extern int Munmap(nint addr, nuint len);
        [DllImport("libc", EntryPoint = "msync", SetLastError = true)] public static extern int Msync(nint addr, nuint len, int flags);
        [DllImport("libc", EntryPoint = "process_vm_writev", SetLastError = true)] public static extern nint ProcessVmWritev(int pid, IoVec* local, nuint liovcnt, IoVec* remote, nuint riovcnt, nuint flags);
        public struct IoVec { public byte* Base; public nuint Len; }
    }
}

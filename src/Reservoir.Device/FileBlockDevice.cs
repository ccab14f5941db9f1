using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Reservoir.Common;

namespace Reservoir.Device;

/// <summary>
/// An image file or block device node. Positioned reads and writes (pread/pwrite) so that many
/// threads share one handle; <see cref="Flush"/> is fdatasync. The file is locked exclusively
/// (flock) for read-write opens, so two mounts of one image fail instead of corrupting it.
/// </summary>
public sealed class FileBlockDevice : IBlockDevice
{
    private readonly SafeFileHandle _handle;
    private readonly bool _direct;
    public string Path { get; }
    private ulong _size; // changes only through Resize and ProbeSize
    public ulong Size => Volatile.Read(ref _size);
    public bool ReadOnly { get; }
    /// <summary>A regular file (an image) rather than a block device node.</summary>
    public bool IsImageFile { get; }
    public bool CanResize => IsImageFile && !ReadOnly;

    private FileBlockDevice(string path, SafeFileHandle handle, ulong size, bool readOnly, bool direct)
    {
        Path = path; _handle = handle; _size = size; ReadOnly = readOnly; _direct = direct;
        IsImageFile = IsRegularFile(path);
    }

    public void Resize(ulong newSize)
    {
        if (!CanResize) throw new FsException(ReadOnly ? Errno.EROFS : Errno.EOPNOTSUPP, $"'{Path}' is {(ReadOnly ? "open read-only" : "not an image file")}: its size cannot be changed");
        if (newSize > long.MaxValue) throw new FsException(Errno.EFBIG, $"'{Path}' cannot be {newSize} bytes");
        // An image the host has given all its blocks (mkfs --preallocate) stays so when it
        // grows: the new part is allocated too, or the grow is refused for the host's room.
        ulong oldSize = Size;
        bool whole = newSize > oldSize && HostSpace.Of(Path) is { MayGrowBy: 0 };
        if (OperatingSystem.IsLinux() && SysFtruncate(_handle, (long)newSize) != 0)
        {
            // The host's answer, said as it is: a file past what its filesystem takes (EFBIG),
            // a full host (ENOSPC), or an error.
            int errno = Marshal.GetLastPInvokeError();
            var (e, why) = errno switch
            {
                27 => (Errno.EFBIG, "the filesystem holding it cannot keep a file that large"),
                28 => (Errno.ENOSPC, "the filesystem holding it is full"),
                _ => (Errno.EIO, $"ftruncate failed with errno {errno}"),
            };
            throw new FsException(e, $"cannot make '{Path}' {newSize} bytes: {why}");
        }
        if (whole && Allocate(oldSize, newSize - oldSize) is var refused and not 0)
        {
            _ = SysFtruncate(_handle, (long)oldSize); // as it was: nothing of the grow is kept
            throw new FsException(refused == 28 ? Errno.ENOSPC : Errno.EIO,
                $"cannot make '{Path}' {newSize} bytes: {(refused == 28 ? "the filesystem holding it has no room to allocate the new part (the image is preallocated)" : $"fallocate failed with errno {refused}")}");
        }
        try
        {
            if (!OperatingSystem.IsLinux()) RandomAccess.SetLength(_handle, (long)newSize);
            // The size is the inode's: fsync, not fdatasync, makes a shrink durable too.
            RandomAccess.FlushToDisk(_handle);
        }
        catch (IOException ex)
        {
            throw new FsException(Errno.EIO, $"cannot make '{Path}' {newSize} bytes: {ex.Message}", ex);
        }
        Volatile.Write(ref _size, newSize);
    }

    public ulong ProbeSize()
    {
        if (IsImageFile) Volatile.Write(ref _size, (ulong)RandomAccess.GetLength(_handle));
        return Size;
    }

    /// <summary>statx(path).stx_mode is S_IFREG (struct statx: stx_mode is the u16 at 28).</summary>
    private static unsafe bool IsRegularFile(string path)
    {
        if (!OperatingSystem.IsLinux()) return File.Exists(path);
        var buf = stackalloc byte[256];
        const int AtFdcwd = -100, StatxType = 1;
        if (SysStatx(AtFdcwd, path, 0, StatxType, buf) != 0) return false;
        return (*(ushort*)(buf + 28) & 0xF000) == 0x8000;
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "ftruncate")]
    private static extern int SysFtruncate(SafeFileHandle fd, long length);

    [DllImport("libc", SetLastError = true, EntryPoint = "statx")]
    private static extern unsafe int SysStatx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte* buf);

    /// <summary>Opens an existing image. <paramref name="direct"/> bypasses the host page cache
    /// with O_DIRECT (reads and writes are then bounced through aligned buffers).</summary>
    public static FileBlockDevice Open(string path, bool readOnly = false, bool direct = false)
    {
        if (!File.Exists(path)) throw new FsException(Errno.ENOENT, $"image '{path}' does not exist");
        SafeFileHandle h;
        try
        {
            // A lock held for a moment by someone who is not using the image: between fork and
            // exec a child holds a copy of every descriptor of its parent, close-on-exec ones
            // too, and with it their open file's flock; a program that just closed the image
            // while another of its threads started a process (tests do) finds it "in use" for
            // that moment. So a lock refused is asked again for up to two seconds before the
            // image is called in use (a mount holding it holds it for longer).
            var until = Environment.TickCount64 + LockPatienceMs;
            while (true)
            {
                try
                {
                    h = direct ? OpenDirect(path, readOnly)
                        // .NET maps FileShare.None to flock(LOCK_EX) and other modes to LOCK_SH: a
                        // read-write open excludes every other open, read-only opens share.
                        : File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite,
                            readOnly ? FileShare.ReadWrite : FileShare.None);
                    break;
                }
                catch (IOException ex) when (IsLockRefused(ex) && Environment.TickCount64 < until)
                {
                    Thread.Sleep(20);
                }
            }
        }
        catch (IOException ex) when (ex is not FsException)
        {
            throw new FsException(Errno.EBUSY, $"cannot open '{path}': {ex.Message} (is it mounted?)", ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new FsException(Errno.EACCES, $"cannot open '{path}': {ex.Message}", ex);
        }
        long len = RandomAccess.GetLength(h);
        if (len == 0 && !File.Exists(path)) len = 0;
        return new FileBlockDevice(path, h, (ulong)len, readOnly, direct);
    }

    /// <summary>How long a refused lock is asked again before the image is called in use.</summary>
    private const int LockPatienceMs = 2000;

    /// <summary>The image's lock is held by another open: our own refusal from OpenDirect, or
    /// .NET's sharing violation, which on Linux carries flock's errno as its HResult
    /// (EWOULDBLOCK, 11).</summary>
    private static bool IsLockRefused(IOException ex) =>
        ex is FsException { Errno: Errno.EBUSY } || ex.HResult == 11;

    /// <summary>Creates (or truncates) a sparse image file of <paramref name="size"/> bytes.</summary>
    public static FileBlockDevice Create(string path, ulong size)
    {
        var h = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None);
        RandomAccess.SetLength(h, (long)size);
        return new FileBlockDevice(path, h, size, false, false);
    }

    public void Read(ulong offset, Span<byte> buffer)
    {
        Check(offset, buffer.Length);
        if (_direct) { DirectBounceRead(offset, buffer); return; }
        int done = 0;
        try
        {
            while (done < buffer.Length)
            {
                int n = RandomAccess.Read(_handle, buffer[done..], (long)offset + done);
                if (n <= 0) throw new DeviceIOException($"short read of {buffer.Length} bytes", offset);
                done += n;
            }
        }
        catch (IOException ex) when (ex is not FsException)
        {
            throw new DeviceIOException($"read failed: {ex.Message}", offset, ex);
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        CheckWrite(offset, data.Length);
        if (_direct) { DirectBounceWrite(offset, data); return; }
        try { RandomAccess.Write(_handle, data, (long)offset); }
        catch (IOException ex) when (ex is not FsException) { throw WriteFailed(offset, ex); }
    }

    public void WriteGather(ulong offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool startWriteOut = true)
    {
        if (_direct && !DirectAligned(offset, buffers)) { IBlockDevice.GatherByCopy(this, offset, buffers); return; }
        long total = 0;
        for (int i = 0; i < buffers.Count; i++) total += buffers[i].Length;
        CheckWrite(offset, (int)total);
        try
        {
            if (OperatingSystem.IsLinux()) GatherWrite.WriteAll(_handle, (long)offset, buffers);
            else RandomAccess.Write(_handle, buffers, (long)offset);
        }
        catch (IOException ex) when (ex is not FsException) { throw WriteFailed(offset, ex); }
        // Start the host's write-out of this range now, without waiting: in a kernel
        // filesystem, writeback submits bios to the disk at once; here the bytes would
        // otherwise sit in the host's page cache until the commit's fsync wrote them all at
        // once. Best effort (a failure shows up at the fsync, as it would anyway).
        if (startWriteOut && OperatingSystem.IsLinux()) _ = SyncFileRange(_handle, (long)offset, total, SyncFileRangeWrite);
    }

    /// <summary>Punches a hole in the image (fallocate PUNCH_HOLE | KEEP_SIZE): the host frees
    /// the blocks and the range reads zeros. 0 where the host filesystem cannot (EOPNOTSUPP) or
    /// the image is a block device (its discard is left to the kernel's loop device).</summary>
    public ulong Discard(ulong offset, ulong length)
    {
        if (ReadOnly || !OperatingSystem.IsLinux() || length == 0) return 0;
        Check(offset, 0);
        ulong n = Math.Min(length, Size - offset);
        const int PunchHole = 0x02, KeepSize = 0x01;
        if (SysFallocate(_handle, PunchHole | KeepSize, (long)offset, (long)n) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is 95 or 19) return 0; // EOPNOTSUPP, ENODEV: not a regular file that can
            throw new DeviceIOException($"fallocate(PUNCH_HOLE) failed: errno {errno}", offset);
        }
        return n;
    }

    /// <summary>
    /// Has the host give the whole image its blocks now (fallocate, mode 0), so that no write
    /// into it can later be refused for the host's space (<see cref="HostSpace"/>): `mkfs
    /// --preallocate`. ENOSPC, with what the host has, when it has not that much room; nothing
    /// for a block device, which has its space.
    /// </summary>
    public void Preallocate()
    {
        if (ReadOnly || !IsImageFile || !OperatingSystem.IsLinux()) return;
        int errno = Allocate(0, Size);
        if (errno == 0) return;
        throw errno switch
        {
            28 => new FsException(Errno.ENOSPC, $"the filesystem holding '{Path}' has no room for all its {Units.Human(Size)}" +
                (HostSpace.Of(Path) is { } h ? $" ({Units.Human(h.HostAvailable)} free)" : "")),
            95 => new FsException(Errno.EOPNOTSUPP, $"the filesystem holding '{Path}' cannot preallocate (fallocate)"),
            _ => new FsException(Errno.EIO, $"fallocate of '{Path}' failed: errno {errno}"),
        };
    }

    /// <summary>An image file's range has its room when no hole lies in it (lseek SEEK_HOLE
    /// finds the first at or past its end); a block device's always has.</summary>
    public bool HasRoom(ulong offset, ulong length)
    {
        if (!IsImageFile || !OperatingSystem.IsLinux() || length == 0) return true;
        const int SeekHole = 4;
        long hole = SysLseek(_handle, (long)offset, SeekHole);
        return hole < 0 || (ulong)hole >= offset + length; // < 0: the host cannot say (as before: it decides at the write)
    }

    /// <summary>Allocates the range on the host (fallocate, mode 0; what is allocated already
    /// stays as it is): ENOSPC when the host has not that much room.</summary>
    public Errno MakeRoom(ulong offset, ulong length)
    {
        if (ReadOnly || !IsImageFile || !OperatingSystem.IsLinux() || length == 0) return Errno.OK;
        return Allocate(offset, length) switch { 0 => Errno.OK, 28 => Errno.ENOSPC, 95 => Errno.OK /* cannot say: as before, the host decides at the write */, _ => Errno.EIO };
    }

    /// <summary>fallocate mode 0 (the host allocates the range; what it holds stays): 0, or the errno.</summary>
    private int Allocate(ulong offset, ulong length) =>
        SysFallocate(_handle, 0, (long)offset, (long)length) == 0 ? 0 : Marshal.GetLastPInvokeError();

    [DllImport("libc", SetLastError = true, EntryPoint = "lseek")]
    private static extern long SysLseek(SafeFileHandle fd, long offset, int whence);

    [DllImport("libc", SetLastError = true, EntryPoint = "fallocate")]
    private static extern int SysFallocate(SafeFileHandle fd, int mode, long offset, long len);

    public void Flush()
    {
        if (ReadOnly) return;
        try { DataSync(_handle); }
        catch (IOException ex) { throw new DeviceIOException($"fdatasync failed: {ex.Message}", ulong.MaxValue, ex); }
    }

    /// <summary>
    /// fdatasync(2): the written bytes and whatever the host needs to read them back (block
    /// allocations of a sparse image), not the image's timestamps. With fsync every flush also
    /// wrote the image's inode for its new mtime (one more host journal commit per flush on an
    /// ext4 host). The image never changes size while mounted, so nothing a mount relies on is
    /// lost.
    /// </summary>
    public static void DataSync(SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux()) { RandomAccess.FlushToDisk(handle); return; }
        if (SysFdatasync(handle) != 0) throw new IOException($"errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "fdatasync")]
    private static extern int SysFdatasync(SafeFileHandle fd);

    private void CheckWrite(ulong offset, int len)
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "device is read-only");
        Check(offset, len);
    }

    private static DeviceIOException WriteFailed(ulong offset, IOException ex) => new($"write failed: {ex.Message}", offset, ex);

    private void Check(ulong offset, int len)
    {
        if (offset + (ulong)len > Size || offset + (ulong)len < offset)
            throw new DeviceIOException($"access of {len} bytes beyond the end of the {Size}-byte device", offset);
    }

    private const int Align = 4096;

    /// <summary>Whether a gathered write can go to O_DIRECT as it is: aligned offset, and every
    /// buffer aligned native memory of whole blocks (page-cache frames are). Pinning native
    /// memory costs nothing; managed arrays fail the check and are bounced.</summary>
    private static unsafe bool DirectAligned(ulong offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers)
    {
        if (offset % Align != 0) return false;
        foreach (var b in buffers)
        {
            if (b.Length % Align != 0) return false;
            using var h = b.Pin();
            if ((nuint)h.Pointer % Align != 0) return false;
        }
        return true;
    }

    // O_DIRECT needs aligned offsets, lengths and memory; managed spans are not aligned, so
    // every direct access goes through an aligned native bounce buffer (read-modify-write for
    // unaligned ranges). SAFETY: the buffer is native, freed in finally, never escapes.
    private unsafe void DirectBounceRead(ulong offset, Span<byte> buffer)
    {
        ulong start = offset / Align * Align;
        ulong end = (offset + (ulong)buffer.Length + Align - 1) / Align * Align;
        int len = (int)(end - start);
        void* p = NativeMemory.AlignedAlloc((nuint)len, Align);
        try
        {
            var span = new Span<byte>(p, len);
            int n = RandomAccess.Read(_handle, span, (long)start);
            if (n < len && start + (ulong)n < offset + (ulong)buffer.Length) throw new DeviceIOException("short direct read", offset);
            span.Slice((int)(offset - start), buffer.Length).CopyTo(buffer);
        }
        finally { NativeMemory.AlignedFree(p); }
    }

    private unsafe void DirectBounceWrite(ulong offset, ReadOnlySpan<byte> data)
    {
        ulong start = offset / Align * Align;
        ulong end = (offset + (ulong)data.Length + Align - 1) / Align * Align;
        int len = (int)(end - start);
        void* p = NativeMemory.AlignedAlloc((nuint)len, Align);
        try
        {
            var span = new Span<byte>(p, len);
            if (start != offset || end != offset + (ulong)data.Length) RandomAccess.Read(_handle, span, (long)start);
            data.CopyTo(span[(int)(offset - start)..]);
            RandomAccess.Write(_handle, (ReadOnlySpan<byte>)span, (long)start);
        }
        finally { NativeMemory.AlignedFree(p); }
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "open")]
    private static extern int SysOpen(string path, int flags, int mode);

    private const uint SyncFileRangeWrite = 2;

    [DllImport("libc", SetLastError = true, EntryPoint = "sync_file_range")]
    private static extern int SyncFileRange(SafeFileHandle fd, long offset, long nbytes, uint flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "flock")]
    private static extern int SysFlock(int fd, int op);

    private static SafeFileHandle OpenDirect(string path, bool readOnly)
    {
        const int O_RDONLY = 0, O_RDWR = 2, O_DIRECT = 0x4000, O_CLOEXEC = 0x80000;
        int fd = SysOpen(path, (readOnly ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC, 0);
        if (fd < 0) throw new FsException(Errno.EIO, $"open(O_DIRECT) of '{path}' failed: errno {Marshal.GetLastPInvokeError()}");
        const int LOCK_EX = 2, LOCK_SH = 1, LOCK_NB = 4;
        if (SysFlock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0)
        {
            new SafeFileHandle(fd, true).Dispose();
            throw new FsException(Errno.EBUSY, $"'{path}' is in use by another process");
        }
        return new SafeFileHandle(fd, true);
    }

    public void Dispose() => _handle.Dispose();
}

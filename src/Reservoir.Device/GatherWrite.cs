using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Reservoir.Device;

/// <summary>
/// pwritev(2) of a list of buffers at one offset, to the end: what RandomAccess.Write with a
/// list does, without its two arrays per call sized by the number of buffers (writeback hands
/// one buffer per 4 KiB page, so they were allocations per block: <c>Reservoir.Bench --alloc</c>).
/// The buffers are pinned for the call (a page arena's frames are native memory: pinning them
/// is free); the iovecs live on the stack, at most <see cref="IovMax"/> per system call; a short
/// write resumes where it stopped, and EINTR retries.
/// </summary>
internal static unsafe class GatherWrite
{
    /// <summary>Linux's IOV_MAX (UIO_MAXIOV).</summary>
    private const int IovMax = 1024;
    private const int EINTR = 4;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public byte* Base;
        public nuint Len;
    }

    [DllImport("libc", SetLastError = true, EntryPoint = "pwritev")]
    private static extern nint SysPwritev(SafeFileHandle fd, IoVec* iov, int iovcnt, long offset);

    /// <summary>Writes every buffer in order from <paramref name="offset"/>; an IOException
    /// (with the host's errno in words) when the host refuses.</summary>
    public static void WriteAll(SafeFileHandle handle, long offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers)
    {
        int count = buffers.Count;
        if (count == 0) return;
        var pins = ArrayPool<MemoryHandle>.Shared.Rent(count);
        int pinned = 0;
        try
        {
            for (; pinned < count; pinned++) pins[pinned] = buffers[pinned].Pin();
            IoVec* iov = stackalloc IoVec[Math.Min(count, IovMax)];
            long pos = offset;
            for (int at = 0; at < count; at += IovMax)
            {
                int n = Math.Min(IovMax, count - at);
                for (int j = 0; j < n; j++) iov[j] = new IoVec { Base = (byte*)pins[at + j].Pointer, Len = (nuint)buffers[at + j].Length };
                int first = 0;
                while (first < n && iov[first].Len == 0) first++; // empty buffers
                while (first < n)
                {
                    nint done = SysPwritev(handle, iov + first, n - first, pos);
                    if (done < 0)
                    {
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno == EINTR) continue;
                        throw new IOException($"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
                    }
                    if (done == 0) throw new IOException("pwritev wrote nothing");
                    pos += done;
                    // Past the iovecs written whole; into the one written in part.
                    nuint left = (nuint)done;
                    while (left > 0 && first < n)
                    {
                        if (iov[first].Len <= left) { left -= iov[first].Len; first++; }
                        else { iov[first].Base += left; iov[first].Len -= left; left = 0; }
                    }
                    while (first < n && iov[first].Len == 0) first++; // empty buffers
                }
            }
        }
        finally
        {
            for (int i = 0; i < pinned; i++) pins[i].Dispose();
            ArrayPool<MemoryHandle>.Shared.Return(pins, clearArray: true);
        }
    }
}

using Microsoft.Win32.SafeHandles;
using Reservoir.Fuse.Session;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The write end of a caller's pipe as a stream that a daemon-written send can be stopped on:
/// the descriptor is non-blocking, and a write that finds the pipe full waits in poll(2) a
/// quarter second at a time, asking <paramref name="stopping"/> in between, so an unmount never
/// waits for a reader that stopped reading. A reader gone (EPIPE) is an <see cref="IOException"/>.
/// The pipe stays its owner's to close (<see cref="DaemonStreamService"/>, after the outcome).
/// </summary>
internal sealed unsafe class PipeOutput(SafeFileHandle pipe, Func<bool> stopping) : Common.IO.ForwardStream
{
    public override bool CanRead => false;
    public override bool CanWrite => true;

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> data)
    {
        int fd = (int)pipe.DangerousGetHandle();
        fixed (byte* p = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = Libc.Write(fd, p + done, data.Length - done);
                if (n > 0) { done += (int)n; continue; }
                int e = Libc.Errno;
                if (e == Libc.EINTR) continue;
                if (e == Libc.EPIPE) throw new IOException("the reader of the stream is gone (broken pipe)");
                if (e != Libc.EAGAIN) throw new IOException($"cannot write the stream: errno {e}");
                if (stopping()) throw new IOException("the mount is going away");
                long pfd = (uint)fd | ((long)Libc.POLLOUT << 32);
                Libc.Poll(&pfd, 1, 250);
            }
        }
    }
}

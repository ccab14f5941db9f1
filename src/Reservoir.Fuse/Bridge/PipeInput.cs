using Microsoft.Win32.SafeHandles;
using Reservoir.Fuse.Session;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The read end of a caller's pipe as a stream that a daemon-applied receive can be stopped on:
/// the descriptor is non-blocking, and a read that finds the pipe empty waits in poll(2) a
/// quarter second at a time, asking <paramref name="stopping"/> in between, so an unmount never
/// waits for a writer that stopped writing. The end of the stream is the writer closing its end.
/// The pipe stays its owner's to close (<see cref="DaemonStreamService"/>).
/// </summary>
internal sealed unsafe class PipeInput(SafeFileHandle pipe, Func<bool> stopping) : Common.IO.ForwardStream
{
    /// <summary>Bytes read so far.</summary>
    public long BytesRead { get; private set; }

    public override bool CanRead => true;
    public override bool CanWrite => false;

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> into)
    {
        if (into.Length == 0) return 0;
        int fd = (int)pipe.DangerousGetHandle();
        fixed (byte* p = into)
        {
            while (true)
            {
                nint n = Libc.Read(fd, p, into.Length);
                if (n >= 0)
                {
                    BytesRead += n;
                    return (int)n;
                }
                int e = Libc.Errno;
                if (e == Libc.EINTR) continue;
                if (e != Libc.EAGAIN) throw new IOException($"cannot read the stream: errno {e}");
                if (stopping()) throw new IOException("the mount is going away");
                long pfd = (uint)fd | ((long)Libc.POLLIN << 32);
                Libc.Poll(&pfd, 1, 250);
            }
        }
    }
}

using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>
/// Asks the daemon serving a mounted Reservoir to write a send itself (the FUSE bridge's
/// 'R' 17 and 18): makes a pipe, names its write end in the ioctl on the subvolume's root,
/// copies what the daemon writes into it to the output, and at its end asks how the send ended. The stream is the one a
/// send walking the mount writes, without a FUSE round trip per file. Only root and the user the
/// daemon runs as may ask (as with <see cref="OnlineSendQueries"/>); for anyone else, or a
/// daemon that does not write sends, <see cref="TryRun"/> answers false before writing anything
/// and the caller walks the mount instead.
/// </summary>
public static class DaemonStreamClient
{
    private const uint PageSize = 16376;
    private const uint IocDaemonSend = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 17;
    private const uint IocDaemonSendOutcome = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 18;
    private const uint IocDaemonReceive = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 19;
    private const int NameAt = 32, ClonesAt = 288, MessageAt = 64;
    private const int MaxClones = ((int)PageSize - ClonesAt) / 8;
    private const int O_CLOEXEC = 0x80000;

    [DllImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static extern unsafe int Pipe2(int* fds, int flags);

    [DllImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static extern int Fcntl(int fd, int cmd, int arg);

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern unsafe int Statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte* buf);

    /// <summary>
    /// Sends subvolume <paramref name="subvolumeRoot"/> (a read-only subvolume's root on a
    /// mounted Reservoir) as <paramref name="name"/>: whole (<paramref name="parent"/> 0) or the
    /// changes since subvolume <paramref name="parent"/>, with <paramref name="cloneSources"/>
    /// (subvolume ids of the same filesystem). False when the daemon would not write it (nothing
    /// has been written then); an <see cref="FsException"/> for a send that failed, an
    /// <see cref="IOException"/> when writing <paramref name="output"/> failed.
    /// </summary>
    public static bool TrySend(string subvolumeRoot, ulong parent, IReadOnlyList<ulong> cloneSources, string name, SendOptions options, Stream output, out SendSummary summary)
    {
        summary = default;
        var nameBytes = Encoding.UTF8.GetBytes(name);
        if (cloneSources.Count > MaxClones || nameBytes.Length is 0 or > 255) return false;
        using var ch = Channel.Open(subvolumeRoot);
        if (ch == null) return false;
        var page = new byte[PageSize];
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)ch.WriteEnd!.DangerousGetHandle());
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), (uint)options.Version);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), ch.PipeIno);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(16), parent);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(24), (options.NoData ? 1u : 0u) | (options.OmitStreamHeader ? 2u : 0u) | (options.OmitEnd ? 4u : 0u));
        BinaryPrimitives.WriteUInt16LittleEndian(page.AsSpan(28), (ushort)nameBytes.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(page.AsSpan(30), (ushort)cloneSources.Count);
        nameBytes.CopyTo(page.AsSpan(NameAt));
        for (int i = 0; i < cloneSources.Count; i++) BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(ClonesAt + 8 * i), cloneSources[i]);

        var e = OnlineSubvolume.Ioctl(ch.Dir, IocDaemonSend, page);
        // Refused before anything was written (not allowed, not this daemon's): walk.
        if (e != Errno.OK) return false;
        ulong token = BinaryPrimitives.ReadUInt64LittleEndian(page);
        // The daemon has its own end now; with ours closed, the end of the stream is the end
        // of its send. Read here, outside any FUSE request: killed meanwhile, this process
        // just closes the pipe and the daemon's send ends on EPIPE. An output that fails
        // closes the pipe as well (disposed on the way out), with the same effect.
        ch.WriteEnd.Dispose();
        long bytes = 0;
        var buf = new byte[1 << 20];
        using (var input = new FileStream(ch.ReadEnd!, FileAccess.Read, 0))
        {
            int n;
            while ((n = input.Read(buf)) > 0)
            {
                try { output.Write(buf, 0, n); }
                catch (IOException ex) { throw new IOException($"cannot write the stream: {ex.Message}", ex); }
                bytes += n;
            }
        }
        // The daemon records the outcome before it closes the pipe, so it is there now.
        var result = Outcome(ch.Dir, token, page);
        if (result != Errno.OK) throw new FsException(result, Message(page, result));
        long C(int i) => BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(8 + 8 * i));
        summary = new SendSummary(C(0), C(1), C(2), C(3), C(4), C(5), C(6));
        if (bytes != summary.StreamBytes)
            throw new FsException(Errno.EIO, $"the daemon wrote {summary.StreamBytes} bytes of stream, {bytes} arrived");
        return true;
    }

    /// <summary>
    /// Receives the streams on <paramref name="input"/> into <paramref name="directory"/> (on a
    /// mounted Reservoir) by the daemon; <paramref name="said"/>: what receive says of each
    /// ("At subvol NAME"). False when the daemon would not do it (nothing of the input has been
    /// read then); an <see cref="FsException"/> for a stream that could not be received (the
    /// daemon deleted what it had made of it), an <see cref="IOException"/> when reading
    /// <paramref name="input"/> failed.
    /// </summary>
    /// <param name="stopAtEnd">`receive -e`: only the first stream's commands up to its END are
    /// read from <paramref name="input"/> and passed on</param>
    /// <param name="detail">`receive -v`: <paramref name="said"/> also says what each stream names</param>
    public static bool TryReceive(string directory, Stream input, out IReadOnlyList<string> said, bool stopAtEnd = false, bool detail = false)
    {
        said = [];
        using var ch = Channel.Open(directory);
        if (ch == null) return false;
        var page = new byte[PageSize];
        BinaryPrimitives.WriteUInt64LittleEndian(page, (ulong)ch.ReadEnd!.DangerousGetHandle());
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), ch.PipeIno);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(16), detail ? 1UL : 0);
        if (OnlineSubvolume.Ioctl(ch.Dir, IocDaemonReceive, page) != Errno.OK) return false;
        ulong token = BinaryPrimitives.ReadUInt64LittleEndian(page);
        // The daemon reads its own end; the end of what is written here is the end of the
        // streams. A daemon that failed closes its end: the write then fails (EPIPE) and the
        // outcome says why.
        ch.ReadEnd.Dispose();
        IOException? inputFailed = null;
        var buf = new byte[1 << 20];
        using (var pipe = new FileStream(ch.WriteEnd!, FileAccess.Write, 0))
        {
            var source = stopAtEnd ? new FirstStream(input) : input;
            while (true)
            {
                int n;
                try { n = source.Read(buf); }
                catch (IOException ex) { inputFailed = ex; break; }
                if (n == 0) break;
                try { pipe.Write(buf, 0, n); }
                catch (IOException) { break; }
            }
        }
        // The daemon ends once it has read to the end (and committed nothing more than a
        // receive through the mount would): wait for it, outside any request.
        var e = Outcome(ch.Dir, token, page, waitMs: int.MaxValue);
        if (inputFailed != null) throw new IOException($"cannot read the stream: {inputFailed.Message}", inputFailed);
        if (e != Errno.OK) throw new FsException(e, Message(page, e));
        int len = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)), PageSize - MessageAt);
        said = len == 0 ? [] : Encoding.UTF8.GetString(page, MessageAt, len).Split('\n');
        // With -o submounts, each received subvolume shows its own device when this returns.
        foreach (var line in said)
            if (Receiver.NameIn(line) is { } name) OnlineSubvolume.WaitForOwnMount(Path.Combine(directory, name));
        return true;
    }

    /// <summary>Asks for the outcome of <paramref name="token"/> into <paramref name="page"/>
    /// (while the daemon still runs it, again every 10 ms for up to <paramref name="waitMs"/>);
    /// the errno the outcome carries.</summary>
    private static Errno Outcome(int dir, ulong token, byte[] page, int waitMs = 5000)
    {
        Errno e;
        var since = Environment.TickCount64;
        while (true)
        {
            Array.Clear(page);
            BinaryPrimitives.WriteUInt64LittleEndian(page, token);
            e = OnlineSubvolume.Ioctl(dir, IocDaemonSendOutcome, page);
            if (e != Errno.EAGAIN || Environment.TickCount64 - since > waitMs) break;
            Thread.Sleep(10);
        }
        if (e != Errno.OK) throw new FsException(e, "cannot learn how the daemon's send or receive ended");
        return (Errno)BinaryPrimitives.ReadInt32LittleEndian(page);
    }

    /// <summary>The reason the outcome in <paramref name="page"/> gives, or the errno's words.</summary>
    private static string Message(byte[] page, Errno e)
    {
        int len = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)), PageSize - MessageAt);
        return len > 0 ? Encoding.UTF8.GetString(page, MessageAt, len) : e.Describe();
    }

    /// <summary>
    /// A stream's bytes up to and with its first END command, read no further: what `receive -e`
    /// passes on, so that a sender that keeps its end open does not hold the receive. It follows
    /// the framing only (a 17-byte header, then commands of a 10-byte header and as many bytes as
    /// it says); a stream that breaks the framing goes on whole, for the receive to refuse.
    /// </summary>
    private sealed class FirstStream(Stream input) : Common.IO.ForwardStream
    {
        private readonly byte[] _head = new byte[SendStreamFormat.CommandHeaderSize];
        private int _headLen, _headOut;  // of the command header: bytes gathered, bytes passed on
        private bool _inHead;            // between two commands: a header being gathered and passed
        private long _body = SendStreamFormat.StreamHeaderSize; // bytes of the stream header or a command's body still to pass
        private bool _ended;             // the END command is passed whole: nothing more

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (count == 0) return 0;
            while (true)
            {
                if (_inHead)
                {
                    if (_headOut < _headLen)
                    {
                        int n = Math.Min(count, _headLen - _headOut);
                        Array.Copy(_head, _headOut, buffer, offset, n);
                        _headOut += n;
                        return n;
                    }
                    if (_headLen == _head.Length)
                    {
                        _body = BinaryPrimitives.ReadUInt32LittleEndian(_head);
                        _ended = BinaryPrimitives.ReadUInt16LittleEndian(_head.AsSpan(4)) == (ushort)SendCommand.End;
                        _inHead = false;
                        continue;
                    }
                    int got = input.Read(_head, _headLen, _head.Length - _headLen);
                    if (got == 0) return 0;
                    _headLen += got;
                    continue;
                }
                if (_body > 0)
                {
                    int r = input.Read(buffer, offset, (int)Math.Min(count, _body));
                    if (r == 0) return 0;
                    _body -= r;
                    return r;
                }
                if (_ended) return 0;
                _inHead = true;
                _headLen = _headOut = 0;
            }
        }

        public override bool CanRead => true;
        public override bool CanWrite => false;
    }

    /// <summary>The directory the ioctls go to, opened, and a pipe of 1 MiB (the most an
    /// ordinary user may ask by default, pipe-max-size; a sixteenth of the wake-ups of 64 KiB)
    /// with its inode, which the daemon checks. Disposing closes what is still open.</summary>
    private sealed class Channel : IDisposable
    {
        public int Dir { get; private init; } = -1;
        public SafeFileHandle? ReadEnd { get; private set; }
        public SafeFileHandle? WriteEnd { get; private set; }
        public ulong PipeIno { get; private set; }

        /// <summary>Null when the directory or the pipe cannot be had (the caller walks).</summary>
        public static unsafe Channel? Open(string directory)
        {
            int dir = OnlineSubvolume.Open(directory, OnlineSubvolume.O_RDONLY | OnlineSubvolume.O_DIRECTORY | OnlineSubvolume.O_CLOEXEC);
            if (dir < 0) return null;
            var ch = new Channel { Dir = dir };
            int* fds = stackalloc int[2];
            if (Pipe2(fds, O_CLOEXEC) != 0) { ch.Dispose(); return null; }
            const int F_SETPIPE_SZ = 1031;
            Fcntl(fds[0], F_SETPIPE_SZ, 1 << 20); // best effort
            ch.ReadEnd = new SafeFileHandle(fds[0], ownsHandle: true);
            ch.WriteEnd = new SafeFileHandle(fds[1], ownsHandle: true);
            // statx with AT_EMPTY_PATH on the descriptor: stx_ino at byte 32.
            byte* buf = stackalloc byte[256];
            if (Statx(fds[1], "", 0x1000, 0x100, buf) != 0) { ch.Dispose(); return null; }
            ch.PipeIno = *(ulong*)(buf + 32);
            return ch;
        }

        public void Dispose()
        {
            ReadEnd?.Dispose();
            WriteEnd?.Dispose();
            if (Dir >= 0) OnlineSubvolume.Close(Dir);
        }
    }
}

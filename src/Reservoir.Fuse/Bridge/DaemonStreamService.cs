using Microsoft.Win32.SafeHandles;
using Reservoir.Common;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The sends a mount's daemon writes and the receives it applies (<see cref="FuseBridge"/>'s
/// 'R' 17, 18 and 19), shared by the main mount and its subvolumes' mounts. Each runs on a
/// thread of its own, not on a FUSE request thread: the ioctl that starts it returns at once
/// with a token, the caller reads (or writes) the pipe to its end and then asks for the outcome
/// by token. So a caller killed meanwhile only closes the pipe (the send ends on EPIPE, the
/// receive on a stream cut short, deleting what it made): it is never a process stuck in a FUSE
/// request whose answer waits for that same process (the kernel lets a request the daemon has
/// read finish before a killed caller exits, with its descriptors still open).
/// </summary>
public sealed class DaemonStreamService(DaemonSendWriter send, DaemonReceiver receive)
{
    /// <summary>How a send or receive ended: its errno (OK when whole), the reason in words,
    /// what a send wrote, what a receive says it received, and the stream's bytes.</summary>
    internal readonly record struct Outcome(Errno Errno, string Message, DaemonSendCounts Counts, IReadOnlyList<string> Received, long StreamBytes);

    /// <summary>Outcomes nobody asked for (a caller that died) are dropped past this many.</summary>
    private const int KeptOutcomes = 64;

    /// <summary>Guards <see cref="_running"/>, <see cref="_outcomes"/>, <see cref="_order"/>
    /// and the start of threads against <see cref="_stopping"/>: a token is in at most one of
    /// the two tables, and nothing starts once the service is stopping.</summary>
    private readonly object _lock = new();
    private readonly Dictionary<ulong, Thread> _running = new();
    private readonly Dictionary<ulong, Outcome> _outcomes = new();
    private readonly Queue<ulong> _order = new();
    private volatile bool _stopping;
    private int _started;

    /// <summary>Sends and receives started, and those still running (tests, logs).</summary>
    public int Started => Volatile.Read(ref _started);
    public int Running { get { lock (_lock) return _running.Count; } }

    /// <summary>Starts writing <paramref name="request"/> into <paramref name="pipe"/> (taken
    /// over: closed when the send ends); the token to ask for its outcome, or 0 when the service
    /// is stopping (the pipe is closed then).</summary>
    internal ulong StartSend(DaemonSendRequest request, SafeFileHandle pipe) => Start(pipe, () =>
    {
        var output = new PipeOutput(pipe, () => _stopping);
        try
        {
            // Not disposed: that would close the pipe before the outcome is recorded.
            var buffered = new BufferedStream(output, 1 << 20);
            var counts = send(request, buffered);
            buffered.Flush();
            return new Outcome(Errno.OK, "", counts, [], counts.StreamBytes);
        }
        catch (IOException ex) when (ex is not FsException) { return new Outcome(Errno.EPIPE, ex.Message, default, [], 0); }
    });

    /// <summary>Starts applying the streams read from <paramref name="pipe"/> in directory
    /// <paramref name="destination"/> (saying what each names with <paramref name="detail"/>);
    /// <paramref name="whenDone"/> gets the names of the
    /// subvolumes made there (kept or not), before the outcome is recorded.</summary>
    internal ulong StartReceive(ulong destination, bool detail, SafeFileHandle pipe, Action<IReadOnlyList<string>> whenDone) => Start(pipe, () =>
    {
        var input = new PipeInput(pipe, () => _stopping);
        var made = new List<string>();
        try
        {
            var buffered = new BufferedStream(input, 1 << 20);
            var names = receive(destination, buffered, made, detail);
            return new Outcome(Errno.OK, "", default, names, input.BytesRead);
        }
        catch (IOException ex) when (ex is not FsException) { return new Outcome(Errno.EIO, $"cannot read the stream: {ex.Message}", default, [], input.BytesRead); }
        finally { whenDone(made); }
    });

    private ulong Start(SafeFileHandle pipe, Func<Outcome> work)
    {
        lock (_lock)
        {
            if (_stopping) { pipe.Dispose(); return 0; }
            ulong token;
            do token = (ulong)Random.Shared.NextInt64(1, long.MaxValue); while (_running.ContainsKey(token) || _outcomes.ContainsKey(token));
            // Started under the lock: StopAll joins only threads that run.
            var thread = new Thread(() => Run(token, pipe, work)) { Name = "daemon-stream", IsBackground = true };
            _running[token] = thread;
            Interlocked.Increment(ref _started);
            thread.Start();
            return token;
        }
    }

    private void Run(ulong token, SafeFileHandle pipe, Func<Outcome> work)
    {
        Outcome outcome;
        try { outcome = work(); }
        catch (FsException ex) { outcome = new Outcome(ex.Errno, ex.Reason, default, [], 0); }
        catch (Exception ex)
        {
            // A bug in a send or receive must not take the mount down; the caller gets it in words.
            outcome = new Outcome(Errno.EIO, $"{ex.GetType().Name}: {ex.Message}", default, [], 0);
        }
        // The outcome is in the table before the pipe closes: the caller of a send asks for it
        // when it reads the end of the stream.
        lock (_lock)
        {
            _running.Remove(token);
            _outcomes[token] = outcome;
            _order.Enqueue(token);
            while (_order.Count > KeptOutcomes) _outcomes.Remove(_order.Dequeue());
        }
        pipe.Dispose();
    }

    /// <summary>The outcome of what <paramref name="token"/> names, taken out of the table:
    /// EAGAIN while it runs, ENOENT for a token unknown (or dropped).</summary>
    internal Errno TakeOutcome(ulong token, out Outcome outcome)
    {
        lock (_lock)
        {
            if (_outcomes.Remove(token, out outcome)) return Errno.OK;
            return _running.ContainsKey(token) ? Errno.EAGAIN : Errno.ENOENT;
        }
    }

    /// <summary>Ends every running send and receive (at its next wait on the pipe) and waits
    /// up to <paramref name="wait"/> for them, before the filesystem they use is closed; nothing
    /// starts after this.</summary>
    public void StopAll(TimeSpan wait)
    {
        List<Thread> threads;
        lock (_lock)
        {
            _stopping = true;
            threads = [.. _running.Values];
        }
        var until = DateTime.UtcNow + wait;
        foreach (var t in threads)
        {
            var left = until - DateTime.UtcNow;
            t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }
    }
}

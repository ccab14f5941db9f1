using Microsoft.Win32.SafeHandles;
using Reservoir.Common;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The sends a mount's daemon writes (<see cref="FuseBridge"/>'s 'R' 17 and 18), shared by the
/// main mount and its subvolumes' mounts. A send runs on a thread of its own, not on a FUSE
/// request thread: the ioctl that starts it returns at once with a token, the caller reads the
/// pipe to its end and then asks for the outcome by token. So a caller killed while it reads
/// only closes the pipe (the send ends on EPIPE): it is never a process stuck in a FUSE request
/// whose answer waits for that same process to read (the kernel lets a request already read by
/// the daemon finish before a killed caller exits, with its descriptors still open).
/// </summary>
public sealed class DaemonSendService(DaemonSendWriter writer)
{
    /// <summary>A send's outcome: its errno (OK when the stream is whole), the reason in words,
    /// and what it wrote.</summary>
    internal readonly record struct Outcome(Errno Errno, string Message, DaemonSendCounts Counts);

    /// <summary>Outcomes nobody asked for (a caller that died) are dropped past this many.</summary>
    private const int KeptOutcomes = 64;

    /// <summary>Guards <see cref="_running"/>, <see cref="_outcomes"/>, <see cref="_order"/>
    /// and <see cref="_stopping"/>: a token is in at most one of the two tables, and a send is
    /// started only while the service is not stopping.</summary>
    private readonly object _lock = new();
    private readonly Dictionary<ulong, Thread> _running = new();
    private readonly Dictionary<ulong, Outcome> _outcomes = new();
    private readonly Queue<ulong> _order = new();
    private volatile bool _stopping;
    private int _started;

    /// <summary>Sends started, and sends still running (for tests and the daemon's log).</summary>
    public int Started => Volatile.Read(ref _started);
    public int Running { get { lock (_lock) return _running.Count; } }

    /// <summary>Starts writing <paramref name="request"/> into <paramref name="pipe"/> (taken
    /// over: closed when the send ends); the token to ask for its outcome, or 0 when the service
    /// is stopping (the pipe is closed then).</summary>
    internal ulong Start(DaemonSendRequest request, SafeFileHandle pipe)
    {
        lock (_lock)
        {
            if (_stopping) { pipe.Dispose(); return 0; }
            ulong token;
            do token = (ulong)Random.Shared.NextInt64(1, long.MaxValue); while (_running.ContainsKey(token) || _outcomes.ContainsKey(token));
            // Started under the lock: StopAll joins only threads that run.
            var thread = new Thread(() => Run(token, request, pipe)) { Name = "daemon-send", IsBackground = true };
            _running[token] = thread;
            Interlocked.Increment(ref _started);
            thread.Start();
            return token;
        }
    }

    private void Run(ulong token, DaemonSendRequest request, SafeFileHandle pipe)
    {
        var outcome = new Outcome(Errno.OK, "", default);
        var output = new PipeOutput(pipe, () => _stopping);
        try
        {
            using var buffered = new BufferedStream(output, 1 << 20);
            var counts = writer(request, buffered);
            buffered.Flush();
            outcome = outcome with { Counts = counts };
        }
        catch (FsException ex) { outcome = new Outcome(ex.Errno, ex.Message, default); }
        catch (IOException ex) { outcome = new Outcome(Errno.EPIPE, ex.Message, default); }
        catch (Exception ex)
        {
            // A bug in the send must not take the mount down; the caller gets it in words.
            outcome = new Outcome(Errno.EIO, $"send failed: {ex.GetType().Name}: {ex.Message}", default);
        }
        // The outcome is in the table before the pipe closes: the caller asks for it when it
        // reads the end of the stream.
        lock (_lock)
        {
            _running.Remove(token);
            _outcomes[token] = outcome;
            _order.Enqueue(token);
            while (_order.Count > KeptOutcomes) _outcomes.Remove(_order.Dequeue());
        }
        output.Dispose();
    }

    /// <summary>The outcome of the send <paramref name="token"/> names, taken out of the table:
    /// EAGAIN while it runs, ENOENT for a token unknown (or dropped).</summary>
    internal Errno TakeOutcome(ulong token, out Outcome outcome)
    {
        lock (_lock)
        {
            if (_outcomes.Remove(token, out outcome)) return Errno.OK;
            return _running.ContainsKey(token) ? Errno.EAGAIN : Errno.ENOENT;
        }
    }

    /// <summary>Ends every running send (its next write fails) and waits up to
    /// <paramref name="wait"/> for them, before the filesystem they read is closed; no send
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

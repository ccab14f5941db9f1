using System.Diagnostics;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Session;

/// <summary>
/// Says in the daemon's log when a request has been in flight for long (a minute by default):
/// the program that sent it is waiting in the kernel, and a request that never ends is a mount
/// that hangs for that program. The line names the request (opcode, node, the sender's pid) and
/// the thread serving it, so a hang can be reported with what it was waiting for. Each request
/// thread owns a <see cref="Slot"/> it marks before and after each request (two stores, no
/// allocation); one background thread looks at the slots a few times per threshold. Each
/// request is said once.
/// </summary>
public sealed class RequestWatch : IDisposable
{
    /// <summary>One request thread's request in flight: written by that thread only, read by
    /// the watch (a torn read of the three fields at worst names the wrong request once).</summary>
    public sealed class Slot
    {
        internal readonly string Thread;
        /// <summary>Stopwatch timestamp of the request's start; 0: none in flight.</summary>
        private long _since;
        private ulong _unique, _node;
        private uint _opcode, _pid;
        /// <summary>The unique of the request last said, so it is said once.</summary>
        internal ulong Reported;

        internal Slot(string thread) => Thread = thread;

        /// <summary>The thread begins the request in <paramref name="request"/>.</summary>
        public void Begin(ReadOnlySpan<byte> request)
        {
            var r = new RequestReader(request);
            if (request.Length < Abi.InHeaderSize) return;
            (_unique, _node, _opcode, _pid) = (r.Unique, r.NodeId, (uint)r.Opcode, r.Pid);
            Volatile.Write(ref _since, Stopwatch.GetTimestamp());
        }

        /// <summary>The request is answered.</summary>
        public void End() => Volatile.Write(ref _since, 0);

        internal (long Since, ulong Unique, ulong Node, Opcode Opcode, uint Pid) Read() =>
            (Volatile.Read(ref _since), _unique, _node, (Opcode)_opcode, _pid);
    }

    private readonly List<Slot> _slots = new(); // guarded by itself
    private readonly Action<string> _log;
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread _thread;

    /// <summary>How long a request may be in flight before it is said.</summary>
    public TimeSpan Threshold { get; }

    public RequestWatch(Action<string> log, TimeSpan? threshold = null)
    {
        _log = log;
        Threshold = threshold ?? TimeSpan.FromMinutes(1);
        _thread = new Thread(Run) { Name = "fuse-request-watch", IsBackground = true };
        _thread.Start();
    }

    /// <summary>A slot for a request thread named <paramref name="thread"/>, watched until it
    /// is given back with <see cref="Release"/>.</summary>
    public Slot Take(string thread)
    {
        var s = new Slot(thread);
        lock (_slots) _slots.Add(s);
        return s;
    }

    public void Release(Slot s)
    {
        lock (_slots) _slots.Remove(s);
    }

    private void Run()
    {
        var every = Threshold / 4;
        if (every < TimeSpan.FromMilliseconds(10)) every = TimeSpan.FromMilliseconds(10);
        if (every > TimeSpan.FromSeconds(5)) every = TimeSpan.FromSeconds(5);
        while (!_stop.Wait(every))
        {
            long now = Stopwatch.GetTimestamp();
            lock (_slots)
                foreach (var s in _slots)
                {
                    var (since, unique, node, op, pid) = s.Read();
                    if (since == 0 || s.Reported == unique) continue;
                    var age = Stopwatch.GetElapsedTime(since, now);
                    if (age < Threshold) continue;
                    s.Reported = unique;
                    _log($"fuse: request {op} (unique {unique}) on node {node} from pid {pid} has been in flight for {age.TotalSeconds:0} s on {s.Thread}; the program that sent it waits for it");
                }
        }
    }

    public void Dispose()
    {
        _stop.Set();
        _thread.Join();
        _stop.Dispose();
    }
}

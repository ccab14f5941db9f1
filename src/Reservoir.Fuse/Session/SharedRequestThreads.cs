using System.Collections.Concurrent;
using Reservoir.Fuse.Bridge;

namespace Reservoir.Fuse.Session;

/// <summary>
/// A fixed set of request threads serving any number of FUSE connections through one epoll set,
/// so that a mount with a thousand subvolumes, each its own mount, has a few threads and a few
/// request buffers, not a thousand. A connection is armed one-shot: the thread that wakes for
/// it reads one request, arms it again (so another thread may take its next request
/// meanwhile) and answers. The main mount keeps its own blocking threads (one read per request,
/// no epoll_wait).
/// </summary>
internal sealed unsafe class SharedRequestThreads : IDisposable
{
    private readonly int _ep;
    private readonly ConcurrentDictionary<long, SubmountConnection> _connections = new();
    private readonly List<Thread> _threads = new();
    private readonly Action<string> _log;
    private volatile bool _stopping;
    private readonly RequestWatch? _watch;

    public SharedRequestThreads(int threads, Action<string> log, RequestWatch? watch = null)
    {
        _log = log;
        _watch = watch;
        _ep = Libc.EpollCreate1(Libc.O_CLOEXEC);
        if (_ep < 0) throw new Common.FsException(Common.Errno.EIO, $"epoll_create1 failed: errno {Libc.Errno}");
        for (int i = 0; i < threads; i++)
        {
            var t = new Thread(Loop) { Name = $"fuse-sub-{i}", IsBackground = true };
            _threads.Add(t);
            t.Start();
        }
    }

    public void Add(SubmountConnection c)
    {
        _connections[c.Key] = c;
        if (!Arm(c, Libc.EPOLL_CTL_ADD)) _log($"fuse: epoll_ctl(ADD) for {c.MountPoint} failed: errno {Libc.Errno}");
    }

    private bool Arm(SubmountConnection c, int op)
    {
        byte* ev = stackalloc byte[16];
        new Span<byte>(ev, 16).Clear();
        *(uint*)ev = Libc.EPOLLIN | Libc.EPOLLONESHOT;
        *(long*)(ev + Libc.EpollDataOffset) = c.Key;
        return Libc.EpollCtl(_ep, op, c.Fd, ev) == 0;
    }

    private void Loop()
    {
        using var b = new FuseSession.RequestBuffers();
        byte* ev = stackalloc byte[16];
        var slot = _watch?.Take(Thread.CurrentThread.Name ?? "a submount thread");
        try { LoopWith(b, ev, slot); }
        finally { if (slot != null) _watch!.Release(slot); }
    }

    private void LoopWith(FuseSession.RequestBuffers b, byte* ev, RequestWatch.Slot? slot)
    {
        while (!_stopping)
        {
            // A timeout, so that Dispose is noticed without a wake-up descriptor.
            int n = Libc.EpollWait(_ep, ev, 1, 500);
            if (n <= 0) continue;
            long key = *(long*)(ev + Libc.EpollDataOffset);
            if (!_connections.TryGetValue(key, out var c) || !c.TryEnter()) continue;
            try
            {
                var got = FuseSession.ReadRequest(c.Fd, b.Request, out nint r, _log, c.MountPoint);
                if (got is FuseSession.ReadOutcome.Unmounted or FuseSession.ReadOutcome.Failed)
                {
                    // Unmounted: out of the set before the descriptor is closed (by the last
                    // thread out, in Exit).
                    _connections.TryRemove(key, out _);
                    Libc.EpollCtl(_ep, Libc.EPOLL_CTL_DEL, c.Fd, ev);
                    c.End();
                    continue;
                }
                // Armed again before answering: another thread may take its next request.
                Arm(c, Libc.EPOLL_CTL_MOD);
                if (got == FuseSession.ReadOutcome.Request) FuseSession.Answer(c.Fd, c.Bridge, b.Request, r, b.Reply, _log, slot);
            }
            finally { c.Exit(); }
        }
    }

    /// <summary>A thread of a connection's own: blocking reads of its (blocking) descriptor until
    /// the kernel ends it. It holds the connection entered while it waits in read(2), so the
    /// descriptor is closed only when every such thread has read ENODEV.</summary>
    public static void ServeBlocking(SubmountConnection c, Action<string> log, RequestWatch? watch = null)
    {
        using var b = new FuseSession.RequestBuffers();
        var slot = watch?.Take(Thread.CurrentThread.Name ?? "a submount thread");
        try
        {
            while (c.TryEnter())
            {
                try
                {
                    var got = FuseSession.ReadRequest(c.Fd, b.Request, out nint r, log, c.MountPoint);
                    if (got is FuseSession.ReadOutcome.Unmounted or FuseSession.ReadOutcome.Failed) c.End();
                    else if (got == FuseSession.ReadOutcome.Request) FuseSession.Answer(c.Fd, c.Bridge, b.Request, r, b.Reply, log, slot);
                }
                finally { c.Exit(); }
            }
        }
        finally { if (slot != null) watch!.Release(slot); }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var t in _threads) t.Join(TimeSpan.FromSeconds(5));
        Libc.Close(_ep);
    }
}

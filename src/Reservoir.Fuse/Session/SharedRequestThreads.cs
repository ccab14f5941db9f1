using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Reservoir.Fuse.Bridge;

namespace Reservoir.Fuse.Session;

/// <summary>
/// One FUSE connection served by <see cref="SharedRequestThreads"/>: a subvolume's own mount
/// (<see cref="SubvolumeMounts"/>). Its descriptor is non-blocking and armed in the threads'
/// epoll set one-shot.
/// </summary>
internal sealed unsafe class PooledConnection(ulong subvolumeId, string mountPoint, int fd, FuseBridge bridge, long key, string? helper)
{
    /// <summary>The device its mount point showed right after mounting: an unmount checks it
    /// still does (the mount point may hold another mount by then).</summary>
    public (uint Major, uint Minor)? Device { get; set; }

    /// <summary>fusermount3, when an ordinary user mounted (it unmounts too).</summary>
    public string? Helper { get; } = helper;
    public ulong SubvolumeId { get; } = subvolumeId;
    public string MountPoint { get; } = mountPoint;
    public int Fd { get; } = fd;
    public FuseBridge Bridge { get; } = bridge;
    public long Key { get; } = key;

    /// <summary>Guards _inflight, _ended and _closed: the descriptor is closed once, by the last
    /// thread out after the connection ended, so no thread reads, replies or notifies through a
    /// descriptor number that may by then belong to another mount.</summary>
    private readonly object _gate = new();
    private int _inflight;
    private bool _ended, _closed;
    private readonly ManualResetEventSlim _gone = new(false);

    /// <summary>True while the connection is live; the caller must <see cref="Exit"/>.</summary>
    public bool TryEnter()
    {
        lock (_gate)
        {
            if (_ended) return false;
            _inflight++;
            return true;
        }
    }

    public void Exit()
    {
        lock (_gate)
        {
            _inflight--;
            CloseIfDone();
        }
    }

    /// <summary>The kernel ended the connection (read answered ENODEV: unmounted).</summary>
    public void End()
    {
        lock (_gate)
        {
            _ended = true;
            CloseIfDone();
        }
    }

    public bool Ended { get { lock (_gate) return _ended; } }

    /// <summary>Run once, when the descriptor is closed.</summary>
    public Action? Gone { get; set; }

    /// <summary>Waits until the connection ended and its descriptor is closed.</summary>
    public bool WaitGone(TimeSpan timeout) => _gone.Wait(timeout);

    private void CloseIfDone()
    {
        if (!_ended || _inflight > 0 || _closed) return;
        _closed = true;
        Libc.Close(Fd);
        _gone.Set();
        Gone?.Invoke();
    }

    /// <summary>Writes a notification to the kernel, unless the connection is gone.</summary>
    public void Notify(byte[] msg, Action<string> log)
    {
        if (!TryEnter()) return;
        try
        {
            fixed (byte* p = msg)
            {
                nint wr = Libc.Write(Fd, p, msg.Length);
                if (wr < 0 && Libc.Errno is not (Libc.ENOENT or Libc.ENODEV)) log($"fuse: notification write failed on {MountPoint}: errno {Libc.Errno}");
            }
        }
        finally { Exit(); }
    }
}

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
    private readonly ConcurrentDictionary<long, PooledConnection> _connections = new();
    private readonly List<Thread> _threads = new();
    private readonly Action<string> _log;
    private volatile bool _stopping;

    public SharedRequestThreads(int threads, Action<string> log)
    {
        _log = log;
        _ep = Libc.EpollCreate1(Libc.O_CLOEXEC);
        if (_ep < 0) throw new Common.FsException(Common.Errno.EIO, $"epoll_create1 failed: errno {Libc.Errno}");
        for (int i = 0; i < threads; i++)
        {
            var t = new Thread(Loop) { Name = $"fuse-sub-{i}", IsBackground = true };
            _threads.Add(t);
            t.Start();
        }
    }

    public void Add(PooledConnection c)
    {
        _connections[c.Key] = c;
        if (!Arm(c, Libc.EPOLL_CTL_ADD)) _log($"fuse: epoll_ctl(ADD) for {c.MountPoint} failed: errno {Libc.Errno}");
    }

    private bool Arm(PooledConnection c, int op)
    {
        byte* ev = stackalloc byte[16];
        new Span<byte>(ev, 16).Clear();
        *(uint*)ev = Libc.EPOLLIN | Libc.EPOLLONESHOT;
        *(long*)(ev + Libc.EpollDataOffset) = c.Key;
        return Libc.EpollCtl(_ep, op, c.Fd, ev) == 0;
    }

    private void Loop()
    {
        byte* buf = (byte*)NativeMemory.AlignedAlloc(FuseSession.BufferSize, 4096);
        byte* reply = (byte*)NativeMemory.AlignedAlloc(FuseSession.BufferSize, 4096);
        byte* ev = stackalloc byte[16];
        try
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
                    nint r = Libc.Read(c.Fd, buf, FuseSession.BufferSize);
                    if (r < 0)
                    {
                        int err = Libc.Errno;
                        if (err is Libc.EAGAIN or Libc.EINTR or Libc.ENOENT) { Arm(c, Libc.EPOLL_CTL_MOD); continue; }
                        if (err != Libc.ENODEV) _log($"fuse: read from /dev/fuse for {c.MountPoint} failed: errno {err}");
                        // Unmounted: out of the set before the descriptor is closed (by the
                        // last thread out, in Exit).
                        _connections.TryRemove(key, out _);
                        Libc.EpollCtl(_ep, Libc.EPOLL_CTL_DEL, c.Fd, ev);
                        c.End();
                        continue;
                    }
                    Arm(c, Libc.EPOLL_CTL_MOD);
                    FuseSession.Answer(c.Fd, c.Bridge, buf, r, reply, _log);
                }
                finally { c.Exit(); }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(buf);
            NativeMemory.AlignedFree(reply);
        }
    }

    /// <summary>A thread of a connection's own: blocking reads of its (blocking) descriptor until
    /// the kernel ends it. It holds the connection entered while it waits in read(2), so the
    /// descriptor is closed only when every such thread has read ENODEV.</summary>
    public static void ServeBlocking(PooledConnection c, Action<string> log)
    {
        byte* buf = (byte*)NativeMemory.AlignedAlloc(FuseSession.BufferSize, 4096);
        byte* reply = (byte*)NativeMemory.AlignedAlloc(FuseSession.BufferSize, 4096);
        try
        {
            while (c.TryEnter())
            {
                try
                {
                    nint r = Libc.Read(c.Fd, buf, FuseSession.BufferSize);
                    if (r < 0)
                    {
                        int err = Libc.Errno;
                        if (err is Libc.EAGAIN or Libc.EINTR or Libc.ENOENT) continue;
                        if (err != Libc.ENODEV) log($"fuse: read from /dev/fuse for {c.MountPoint} failed: errno {err}");
                        c.End();
                        continue;
                    }
                    FuseSession.Answer(c.Fd, c.Bridge, buf, r, reply, log);
                }
                finally { c.Exit(); }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(buf);
            NativeMemory.AlignedFree(reply);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var t in _threads) t.Join(TimeSpan.FromSeconds(5));
        Libc.Close(_ep);
    }
}

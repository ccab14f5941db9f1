using Reservoir.Fuse.Bridge;

namespace Reservoir.Fuse.Session;

/// <summary>
/// One subvolume's own mount (<see cref="SubvolumeMounts"/>): its /dev/fuse descriptor and
/// bridge, served either by threads of its own (a blocking descriptor,
/// <see cref="SharedRequestThreads.ServeBlocking"/>) or by <see cref="SharedRequestThreads"/>
/// (non-blocking, armed one-shot in their epoll set).
/// </summary>
internal sealed unsafe class SubmountConnection(string mountPoint, int fd, FuseBridge bridge, long key, string? helper)
{
    /// <summary>The device its mount point showed right after mounting: an unmount checks it
    /// still does (the mount point may hold another mount by then).</summary>
    public (uint Major, uint Minor)? Device { get; set; }

    /// <summary>fusermount3, when an ordinary user mounted (it unmounts too).</summary>
    public string? Helper { get; } = helper;
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

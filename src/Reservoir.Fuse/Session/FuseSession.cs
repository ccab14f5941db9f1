using System.Diagnostics;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Reservoir.Common;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Session;

/// <summary>
/// A mounted FUSE filesystem: /dev/fuse, the mount, and the request threads. Each thread reads
/// one request into its own native buffer, handles it inline and writes the reply (go-fuse
/// found inline handling much faster than hand-offs). The threads never touch the mount
/// themselves, or they would deadlock on their own requests. They end only when the kernel ends
/// the connection (umount, SIGTERM, <see cref="Dispose"/>: reads fail with ENODEV), never on a
/// flag of their own, since the kernel may still be waiting for an answer.
/// </summary>
public sealed unsafe class FuseSession : IDisposable
{
    public const int MaxWrite = 1 << 20;
    internal const int BufferSize = MaxWrite + 64 * 1024;
    private readonly int _fd;
    private readonly FuseBridge _bridge;
    private readonly List<Thread> _threads = new();
    /// <summary>Work that must wait for a reply to reach the kernel (notifications that take a
    /// lock the kernel holds until then), run in order by one thread of its own.</summary>
    private readonly BlockingCollection<Action> _deferred = new();
    private Thread? _deferredThread;
    private readonly Action<string> _log;
    /// <summary>Says requests in flight for long, of this mount's threads and its submounts'.</summary>
    private readonly RequestWatch _watch;
    private string? _helper; // fusermount3, when an ordinary user mounted
    private int _running;
    public string MountPoint { get; }
    public FuseMountOptions Options { get; }
    public long Requests => _bridge.Requests;

    private FuseSession(int fd, string mountPoint, FuseBridge bridge, FuseMountOptions options, Action<string> log)
    {
        _fd = fd;
        MountPoint = mountPoint;
        _bridge = bridge;
        Options = options;
        _log = log;
        _watch = new RequestWatch(log, options.SlowRequestAfter);
    }

    /// <summary>Mounts <paramref name="fs"/> on <paramref name="mountPoint"/> (as root with
    /// mount(2); as an ordinary user through fusermount3) and starts serving. Returns once the
    /// kernel has the mount; the first request (INIT) is answered by the threads.</summary>
    public static FuseSession Mount(Engine.Filesystem fs, string imagePath, string mountPoint, FuseMountOptions options, Action<string>? log = null)
    {
        log ??= _ => { };
        if (!Directory.Exists(mountPoint))
            throw File.Exists(mountPoint) ? new FsException(Errno.ENOTDIR, $"mount point '{mountPoint}' is not a directory") : new FsException(Errno.ENOENT, $"mount point '{mountPoint}' does not exist");
        if (!File.Exists("/dev/fuse")) throw new FsException(Errno.ENODEV, "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container the device");
        string mp = Path.GetFullPath(mountPoint);
        // fusermount3 (setuid root) must reach a subvolume's directory through this mount to
        // mount on it, and a FUSE mount refuses every other user, root too, without allow_other.
        if (options.Submounts && Libc.Geteuid() != 0 && !options.AllowOther)
            throw new FsException(Errno.EINVAL, "submounts as an ordinary user needs -o allow_other (and user_allow_other in /etc/fuse.conf): fusermount3 mounts each subvolume through this mount");
        // Before anything is mounted: a bad subvol= or subvolid= is an error now, not a mount
        // that dies on its first request.
        var bridge = new FuseBridge(fs, options, log);
        string source = options.FsName.Length > 0 ? options.FsName : Path.GetFullPath(imagePath);
        int fd = OpenAndMount(source, mp, imagePath, options, options.FuseBlk, nonBlocking: false, log, out string? helper);
        var s = new FuseSession(fd, mp, bridge, options, log) { _helper = helper };
        bridge.Notifier = s.Notify;
        bridge.Defer = work => { if (!s._deferred.IsAddingCompleted) s._deferred.TryAdd(work); };
        s._deferredThread = new Thread(s.RunDeferred) { Name = "fuse-notify", IsBackground = true };
        s._deferredThread.Start();
        for (int i = 0; i < options.Threads; i++)
        {
            var t = new Thread(s.Loop) { Name = $"fuse-{i}", IsBackground = true };
            s._threads.Add(t);
            Interlocked.Increment(ref s._running);
            t.Start();
        }
        // What the mount point shows while this mount is there: Dispose unmounts only that.
        s._device = Libc.DeviceOf(mp);
        bridge.MountToken = (ulong)Random.Shared.NextInt64();
        if (options.Submounts)
        {
            // After the threads: the submounts' mount(2) calls walk their paths through this mount.
            try
            {
                // The subvolumes' mounts show the main mount's source (a fuseblk mount's is its
                // loop device), as every btrfs subvolume mount shows the device: that is also how
                // `reservoir umount` tells them from other mounts below (MountTreeUnmount).
                string shown = MountInfo.At(mp)?.Source ?? source;
                s.Submounts = new SubvolumeMounts(fs, imagePath, mp, shown, bridge.RootNode, bridge.MountToken, options, log, s._watch);
                bridge.Submounts = s.Submounts;
                s.Submounts.Main = bridge;
                int n = s.Submounts.MountExisting(TimeSpan.FromMinutes(5));
                log(n >= 0 ? $"reservoir: {n} subvolume(s) mounted below {mp}" : $"reservoir: some subvolume(s) mounted below {mp}, the rest still being mounted");
            }
            catch
            {
                s.Dispose();
                throw;
            }
        }
        return s;
    }

    /// <summary>Runs at FUSE_DESTROY, before umount(2) returns (fuseblk mounts only): the
    /// owner commits and closes the image there.
    /// Not while subvolumes' own mounts still serve (a lazy unmount of the tree lets the top go
    /// before a busy subvolume): then the owner closes after the session ends.</summary>
    public Action? OnDestroy
    {
        set => _bridge.OnDestroy = value == null ? null : () =>
        {
            // `reservoir umount` (or umount -R) has unmounted the subvolumes before the top; the shared threads read
            // their ends a moment later.
            var sw = Stopwatch.StartNew();
            while ((Submounts?.Count ?? 0) > 0 && sw.Elapsed < TimeSpan.FromSeconds(2)) Thread.Sleep(1);
            if ((Submounts?.Count ?? 0) == 0) value();
        };
    }

    /// <summary>With -o submounts, the subvolumes' own mounts.</summary>
    public SubvolumeMounts? Submounts { get; private set; }

    /// <summary>Opens /dev/fuse and mounts it on <paramref name="mp"/>: as root with mount(2)
    /// (a fuseblk mount over a loop device of the image when <paramref name="fuseBlk"/>), as an
    /// ordinary user through fusermount3 (<paramref name="helper"/> says which). Returns the
    /// descriptor; <paramref name="nonBlocking"/> for descriptors served through epoll.</summary>
    internal static int OpenAndMount(string source, string mp, string imagePath, FuseMountOptions options, bool fuseBlk, bool nonBlocking, Action<string> log, out string? helper)
    {
        int fd;
        helper = null;
        if (Libc.Geteuid() == 0)
        {
            fd = Libc.Open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC | (nonBlocking ? Libc.O_NONBLOCK : 0));
            if (fd < 0) throw new FsException(Errno.EACCES, $"cannot open /dev/fuse: errno {Libc.Errno}");
            var data = $"fd={fd},rootmode=40000,user_id={Libc.Geteuid()},group_id={Libc.Getegid()},max_read={MaxWrite}";
            if (options.DefaultPermissions) data += ",default_permissions";
            if (options.AllowOther) data += ",allow_other";
            // A fuseblk mount over a loop device of the image when the machine has one: the
            // kernel sends syncfs to those only, so sync(1) makes everything durable (see
            // LoopDevice); else, or if the kernel refuses it, a plain fuse mount.
            int err = 0;
            bool mounted = false;
            if (fuseBlk && File.Exists(imagePath))
            {
                if (LoopDevice.Attach(imagePath, options.ReadOnly, out var why) is var (loopPath, loopFd))
                {
                    mounted = Libc.Mount(loopPath, mp, "fuseblk.reservoir", options.MountFlags(), data + ",blksize=4096") == 0;
                    if (!mounted) why = $"the fuseblk mount failed (errno {Libc.Errno})";
                    Libc.Close(loopFd); // the mount holds the device now; without it, autoclear frees it
                }
                if (!mounted) log($"mounting as fuse.reservoir ({why}): sync(1) does not reach a plain fuse mount's daemon; fsync, and `sync {mp}` (fsync on the directory), do");
            }
            if (!mounted && Libc.Mount(source, mp, "fuse.reservoir", options.MountFlags(), data) != 0)
            {
                err = Libc.Errno;
                Libc.Close(fd);
                // The kernel's own errno (ENOENT when the directory went away meanwhile, EBUSY…):
                // it said "errno 2 (EIO…)", naming an error that had not happened.
                throw new FsException(err > 0 ? (Errno)err : Errno.EIO, $"mount(2) of '{mp}' failed");
            }
        }
        else
        {
            // An ordinary user: the setuid helper mounts and hands /dev/fuse over.
            helper = Fusermount.Find() ?? throw new FsException(Errno.EPERM, "mounting as an ordinary user needs fusermount3 (apt-get install fuse3), or run as root");
            var o = new List<string> { $"fsname={source.Replace(",", "\\,")}", "subtype=reservoir", $"max_read={MaxWrite}", "nosuid", "nodev" };
            if (options.DefaultPermissions) o.Add("default_permissions");
            if (options.AllowOther) o.Add("allow_other");
            if (options.ReadOnly) o.Add("ro");
            if (options.NoAtime) o.Add("noatime");
            if (options.NoExec) o.Add("noexec");
            fd = Fusermount.Mount(helper, mp, string.Join(',', o));
            Libc.Fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
            if (nonBlocking) Libc.Fcntl(fd, Libc.F_SETFL, Libc.Fcntl(fd, Libc.F_GETFL, 0) | Libc.O_NONBLOCK);
        }
        return fd;
    }

    private void Loop()
    {
        using var b = new RequestBuffers();
        var slot = _watch.Take(Thread.CurrentThread.Name ?? "a request thread");
        try
        {
            // Until the kernel ends the connection, never before: see Dispose.
            for (;;)
            {
                var got = ReadRequest(_fd, b.Request, out nint n, _log, MountPoint);
                if (got == ReadOutcome.Retry) continue;
                if (got != ReadOutcome.Request) { _unmounted = got == ReadOutcome.Unmounted; break; }
                Answer(_fd, _bridge, b.Request, n, b.Reply, _log, slot);
                if (_threadsQuitForTest) break;
            }
        }
        finally
        {
            _watch.Release(slot);
            Interlocked.Decrement(ref _running);
        }
    }

    internal enum ReadOutcome { Request, Retry, Unmounted, Failed }

    /// <summary>Reads one request from <paramref name="fd"/>. Retry: interrupted, nothing there
    /// (a non-blocking descriptor) or a request the kernel took back (ENOENT). Unmounted: the
    /// kernel ended the connection (ENODEV). Failed: any other error, logged; the connection
    /// is given up too.</summary>
    internal static ReadOutcome ReadRequest(int fd, byte* buf, out nint n, Action<string> log, string mountPoint)
    {
        n = Libc.Read(fd, buf, BufferSize);
        if (n >= 0) return ReadOutcome.Request;
        int err = Libc.Errno;
        if (err is Libc.EINTR or Libc.EAGAIN or Libc.ENOENT) return ReadOutcome.Retry;
        if (err == Libc.ENODEV) return ReadOutcome.Unmounted;
        log($"fuse: read from /dev/fuse for {mountPoint} failed: errno {err}");
        return ReadOutcome.Failed;
    }

    /// <summary>A request thread's two buffers (request in, reply out), page-aligned, native
    /// (no GC pinning on the hot path), freed when the thread ends.</summary>
    internal readonly struct RequestBuffers : IDisposable
    {
        public readonly byte* Request, Reply;
        public RequestBuffers()
        {
            Request = (byte*)NativeMemory.AlignedAlloc(BufferSize, 4096);
            Reply = (byte*)NativeMemory.AlignedAlloc(BufferSize, 4096);
        }
        public void Dispose()
        {
            NativeMemory.AlignedFree(Request);
            NativeMemory.AlignedFree(Reply);
        }
    }

    /// <summary>Unmounts <paramref name="mountPoint"/> (through fusermount3 when an ordinary user
    /// mounted it), lazily if it is busy.</summary>
    internal static void Unmount(string mountPoint, string? helper)
    {
        if (helper != null) { if (!Fusermount.Unmount(helper, mountPoint, lazy: false)) Fusermount.Unmount(helper, mountPoint, lazy: true); }
        else if (Libc.Umount2(mountPoint, 0) != 0) Libc.Umount2(mountPoint, Libc.MNT_DETACH);
    }

    /// <summary>Handles the request of <paramref name="n"/> bytes in <paramref name="buf"/> and
    /// writes its reply (if it has one) to <paramref name="fd"/>. A request never kills the
    /// daemon: whatever it throws is answered EIO and logged.</summary>
    internal static void Answer(int fd, FuseBridge bridge, byte* buf, nint n, byte* reply, Action<string> log, RequestWatch.Slot? slot = null)
    {
        var req = new ReadOnlySpan<byte>(buf, (int)n);
        var outBuf = new Span<byte>(reply, BufferSize);
        int len;
        slot?.Begin(req);
        try { len = bridge.Handle(req, outBuf); }
        catch (Exception ex)
        {
            log($"fuse: request failed: {ex}");
            var w = new ReplyWriter(outBuf);
            len = w.Finish(new RequestReader(req).Unique, (int)Errno.EIO).Length;
        }
        finally { slot?.End(); }
        if (len <= 0) return; // FORGET: no reply
        nint wr = Libc.Write(fd, reply, len);
        if (wr < 0 && Libc.Errno is not (Libc.ENOENT or Libc.ENODEV)) log($"fuse: reply write failed: errno {Libc.Errno}");
    }

    private void RunDeferred()
    {
        foreach (var work in _deferred.GetConsumingEnumerable())
        {
            try { work(); }
            catch (Exception ex) { _log($"fuse: deferred notification failed: {ex.Message}"); }
        }
    }

    /// <summary>Writes a notification (an out header with unique 0 and the notify code as its
    /// error) to the kernel. ENOENT means the kernel had nothing cached: not an error.</summary>
    private void Notify(byte[] msg)
    {
        fixed (byte* p = msg)
        {
            nint wr = Libc.Write(_fd, p, msg.Length);
            if (wr < 0 && Libc.Errno is not (Libc.ENOENT or Libc.ENODEV)) _log($"fuse: notification write failed: errno {Libc.Errno}");
        }
    }

    /// <summary>Starts a new session (setsid), so a background mount outlives the terminal
    /// and the process that started it.</summary>
    public static void DetachFromTerminal() => Libc.Setsid();

    /// <summary>True until the kernel connection ended (unmounted).</summary>
    public bool Running => Volatile.Read(ref _running) > 0;

    /// <summary>Waits until the filesystem is unmounted (by umount or <see cref="Dispose"/>).</summary>
    public void WaitUntilUnmounted()
    {
        foreach (var t in _threads) t.Join();
    }

    /// <summary>How long a lazily detached mount goes on serving the programs still in it
    /// before <see cref="Dispose"/> aborts its connection (they then get ENOTCONN, as after a
    /// daemon's exit).</summary>
    public TimeSpan LastUserGrace { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Unmounts (lazily if busy) and stops serving. The request threads are not told
    /// to stop: they end when the kernel ends the connection (their read answers ENODEV). Until
    /// then the kernel may still send requests that must be answered: a fuseblk mount's
    /// umount(2) waits for the answer to FUSE_DESTROY, and a lazily detached mount serves the
    /// programs still in it; a thread that quit before them would leave the unmount (and every
    /// later sync(2) on the machine) waiting forever, or the programs failing. So the unmount
    /// is watched (should no thread be left to answer, the connection is aborted through
    /// fusectl), and a detached mount still in use after <see cref="LastUserGrace"/> is aborted.
    /// Closes the /dev/fuse descriptor once, and only when no thread of the session can still
    /// read or write it: a descriptor number closed twice, or closed under a thread still in
    /// read(2), may by then name another mount's /dev/fuse in the same process (tests mount
    /// several at once), whose connection closing it would abort, or whose requests the stale
    /// thread would take. A thread that does not stop keeps the descriptor open: leaked, and
    /// said in the log.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // The subvolumes' mounts first, while this mount's threads still serve the walks to them.
        Submounts?.Dispose();
        // Unmounted already (umount, or a lazy umount the last user has let go of): the mount
        // point may hold someone else's mount by now (a new mount of the image, the moment the
        // user saw this one go), which an unmount here would take away. So only while the
        // kernel has not ended the connection, and only if the mount point still shows this
        // mount's device.
        if (!_unmounted && (_device == null || Libc.DeviceOf(MountPoint) == _device))
            UnmountWatched();
        bool stopped = JoinThreads(LastUserGrace);
        if (!stopped)
        {
            string why = _device is { } d ? FuseControl.Abort(d) ?? "" : "the mount's device is unknown";
            _log(why.Length == 0
                ? $"fuse: {MountPoint} was still in use {LastUserGrace.TotalSeconds:0} s after it was detached; its connection is aborted"
                : $"fuse: {MountPoint} is still in use after it was detached, and {why}");
            stopped = JoinThreads(TimeSpan.FromSeconds(10));
        }
        _deferred.CompleteAdding();
        stopped &= _deferredThread?.Join(TimeSpan.FromSeconds(30)) ?? true;
        if (stopped) Libc.Close(_fd);
        else _log($"fuse: a thread of the session on {MountPoint} did not stop; its /dev/fuse descriptor stays open");
        _watch.Dispose();
    }

    private bool JoinThreads(TimeSpan limit)
    {
        var sw = Stopwatch.StartNew();
        bool all = true;
        foreach (var t in _threads)
        {
            var left = limit - sw.Elapsed;
            all &= t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }
        return all;
    }

    /// <summary>Unmounts (lazily if busy) while a watchdog makes sure the kernel is never left
    /// waiting for an answer no thread will give: should every request thread have ended (a
    /// failed read of /dev/fuse) while umount(2) still waits, the connection is aborted, which
    /// the kernel takes as the answer.</summary>
    private void UnmountWatched()
    {
        using var done = new ManualResetEventSlim();
        var watchdog = new Thread(() =>
        {
            while (!done.Wait(50))
                // Not when they ended because the kernel ended the connection (ENODEV): the
                // unmount is then finishing, with nothing left to answer.
                if (Volatile.Read(ref _running) == 0 && !_unmounted && _device is { } d)
                {
                    string? why = FuseControl.Abort(d);
                    _log($"fuse: no request thread was left to answer the unmount of {MountPoint}; " + (why ?? "its connection is aborted"));
                    return;
                }
        }) { Name = "fuse-unmount-watch", IsBackground = true };
        watchdog.Start();
        try { Unmount(MountPoint, _helper); }
        finally
        {
            done.Set();
            watchdog.Join();
        }
    }

    private int _disposed;
    /// <summary>Tests only: each request thread ends after its next request, while the
    /// connection lives (as a thread whose read of /dev/fuse failed would), to show that the
    /// unmount's watchdog answers for them.</summary>
    internal void EndThreadsAfterTheirNextRequestForTest() => _threadsQuitForTest = true;
    private volatile bool _threadsQuitForTest;
    /// <summary>A request thread read ENODEV: the kernel ended the connection (unmounted).</summary>
    private volatile bool _unmounted;
    /// <summary>The device the mount point showed right after mounting (this mount's).</summary>
    private (uint Major, uint Minor)? _device;
}

using System.Collections.Concurrent;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Bridge;

namespace Reservoir.Fuse.Session;

/// <summary>
/// `-o submounts`: every subvolume below the mount's root gets a FUSE mount of its own on its
/// directory, so stat shows each subvolume its own st_dev, as btrfs does. The kernel gives every
/// inode of one FUSE superblock the superblock's device and takes no device number from the
/// daemon; only virtiofs may have the kernel make submounts itself (FUSE_ATTR_SUBMOUNT), so here
/// the daemon makes them, one connection each, over the same engine.
///
/// What follows from being mounts, as on btrfs where subvolumes are not mounts: hard links and
/// renames across subvolumes answer EXDEV (btrfs answers the same); `find -xdev`, `du -x` and
/// `df` treat each subvolume as its own filesystem (btrfs: the same for -xdev); a subvolume's
/// directory cannot be renamed, nor an empty one removed with rmdir, while mounted (EBUSY; btrfs
/// allows both; `subvolume delete` works); copy_file_range across
/// subvolumes copies instead of sharing extents (the kernel passes it to FUSE only within one
/// superblock); the whole tree unmounts with `reservoir umount` (umount(8) runs it through
/// install.sh's helper; <see cref="MountTreeUnmount"/>), `umount -R` or `umount -l`. Subvolumes made or
/// snapshotted through the mount get their mount right after the ioctl answers (`reservoir
/// subvolume create|snapshot` waits for it); a deleted one's mount goes with the invalidation
/// of its name (the kernel detaches mounts on a dentry it invalidates).
///
/// Mounts are made and taken down by one thread of its own ("fuse-submounts"): mount(2) walks
/// the path through the mount itself, so it must not run on a request thread, which would wait
/// for its own lookups. The first connections get request threads of their own, the rest are
/// served by <see cref="SharedRequestThreads"/> (see <see cref="_dedicated"/>).
/// </summary>
public sealed class SubvolumeMounts : IDisposable
{
    private readonly Filesystem _fs;
    private readonly string _image, _mountPoint, _source;
    private readonly FuseMountOptions _options;
    private readonly Action<string> _log;
    private readonly string _rootPath; // the mount root's path from the top-level root ("" for it)
    private readonly ulong _token;
    private readonly SharedRequestThreads _threads;
    /// <summary>The main mount's watch of long requests, which the submounts' threads report to.</summary>
    private readonly RequestWatch? _watch;
    /// <summary>Mounts to make, in order, by the submount thread; each with the event set when done.</summary>
    private readonly BlockingCollection<(Func<int> Work, TaskCompletionSource<int> Done)> _work = new();
    private readonly Thread _worker;
    /// <summary>The submounts by subvolume id: added by the submount thread, removed by whichever
    /// thread closes one's descriptor.</summary>
    private readonly ConcurrentDictionary<ulong, SubmountConnection> _mounts = new();
    /// <summary>Notifications that must wait for a reply to reach the kernel, for every
    /// submount's bridge, in order, on one thread (as <see cref="FuseSession"/> has for its own).</summary>
    private readonly BlockingCollection<Action> _deferred = new();
    private readonly Thread _deferredThread;
    private long _nextKey;
    /// <summary>The first subvolumes mounted (dedicated=N, 16) get request threads of their own,
    /// blocking in read(2) as the main mount's do: a stat through epoll took 95-108 µs where the
    /// main mount's took 53-64, and 62-63 with threads of its own (three requests). The rest
    /// share <see cref="SharedRequestThreads"/>, so that thousands of snapshots cost descriptors,
    /// not threads.</summary>
    /// <summary>Live connections with threads of their own (incremented by the submount thread,
    /// decremented by whichever thread closes one).</summary>
    private int _dedicated;

    internal SubvolumeMounts(Filesystem fs, string image, string mountPoint, string source, ulong rootNode, ulong token, FuseMountOptions options, Action<string> log, RequestWatch? watch = null)
    {
        _watch = watch;
        _fs = fs;
        _image = image;
        _mountPoint = mountPoint.TrimEnd('/');
        _source = source;
        _options = options;
        _log = log;
        _token = token;
        var e = fs.ShowSubvolume(rootNode, out var root);
        if (e != Errno.OK) throw new FsException(e, "submounts: the mount's root is not a subvolume's root");
        _rootPath = root.Path;
        _threads = new SharedRequestThreads(options.Threads, log, watch);
        _worker = new Thread(RunWork) { Name = "fuse-submounts", IsBackground = true };
        _worker.Start();
        _deferredThread = new Thread(RunDeferred) { Name = "fuse-sub-notify", IsBackground = true };
        _deferredThread.Start();
    }

    /// <summary>How many subvolumes have a mount of their own now.</summary>
    public int Count => _mounts.Count(kv => !kv.Value.Ended);

    /// <summary>The main mount's bridge (set by the session once made).</summary>
    internal FuseBridge? Main { get; set; }

    /// <summary>The bridge whose connection serves subvolume <paramref name="treeId"/>'s
    /// directories: its own mount's, or the main mount's.</summary>
    internal FuseBridge? Serving(ulong treeId) => _mounts.TryGetValue(treeId, out var c) && !c.Ended ? c.Bridge : Main;

    /// <summary>Mounts every subvolume below the root that exists now, parents before the
    /// subvolumes inside them; returns how many were mounted.</summary>
    public int MountExisting(TimeSpan timeout)
    {
        var done = Enqueue(() =>
        {
            var e = _fs.ListSubvolumes(out var all);
            if (e != Errno.OK) { _log($"submounts: cannot list subvolumes: {e.Describe()}"); return 0; }
            int n = 0;
            foreach (var sv in all.Select(s => (s.Id, Rel: Relative(s.Path))).Where(s => s.Rel != null).OrderBy(s => s.Rel!.Count(ch => ch == '/')).ThenBy(s => s.Rel, StringComparer.Ordinal))
                if (MountOne(sv.Id, sv.Rel!)) n++;
            return n;
        });
        if (!done.Wait(timeout)) { _log($"submounts: mounting the existing subvolumes took longer than {timeout.TotalSeconds:0} s; going on in the background"); return -1; }
        return done.Result;
    }

    /// <summary>Mounts subvolume <paramref name="id"/> (just made) on its directory, soon, on the
    /// submount thread. Called from a request thread, which must not wait for it: the mount's
    /// lookups need request threads, and the directory's lock may be held by a caller whose
    /// request waits for one.</summary>
    internal void MountNew(ulong id) => Enqueue(() =>
    {
        var e = _fs.ShowSubvolume(NodeIds.Encode(id, Filesystem.RootIno), out var sv);
        if (e != Errno.OK) return 0; // deleted meanwhile
        return Relative(sv.Path) is { } rel && MountOne(id, rel) ? 1 : 0;
    });

    /// <summary>The path below the mount point of the subvolume at <paramref name="path"/> (from
    /// the top-level root), or null if it is not below the mount's root.</summary>
    private string? Relative(string path)
    {
        if (path.Length == 0) return null; // the top level: never below another root
        if (_rootPath.Length == 0) return path;
        return path.Length > _rootPath.Length + 1 && path.StartsWith(_rootPath + "/", StringComparison.Ordinal) ? path[(_rootPath.Length + 1)..] : null;
    }

    private Task<int> Enqueue(Func<int> work)
    {
        var tcs = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_work.IsAddingCompleted)
        {
            try { _work.Add((work, tcs)); }
            catch (InvalidOperationException) { tcs.TrySetResult(0); }
        }
        else tcs.TrySetResult(0);
        return tcs.Task;
    }

    private void RunWork()
    {
        foreach (var (work, done) in _work.GetConsumingEnumerable())
        {
            try { done.TrySetResult(work()); }
            catch (Exception ex) { _log($"submounts: {ex.Message}"); done.TrySetResult(0); }
        }
    }

    private void RunDeferred()
    {
        foreach (var work in _deferred.GetConsumingEnumerable())
        {
            try { work(); }
            catch (Exception ex) { _log($"fuse: deferred notification failed: {ex.Message}"); }
        }
    }

    /// <summary>On the submount thread: a connection for subvolume <paramref name="id"/>, mounted
    /// on <paramref name="rel"/> below the mount point.</summary>
    private bool MountOne(ulong id, string rel)
    {
        if (_mounts.TryGetValue(id, out var old) && !old.Ended) return false;
        string mp = Path.Combine(_mountPoint, rel);
        var o = _options.ForSubmount(id);
        FuseBridge bridge;
        int fd;
        string? helper;
        bool dedicated = Volatile.Read(ref _dedicated) < _options.DedicatedSubmounts;
        try
        {
            bridge = new FuseBridge(_fs, o, _log) { MountToken = _token, Submounts = this };
            fd = FuseSession.OpenAndMount(_source, mp, _image, o, fuseBlk: false, nonBlocking: !dedicated, _log, out helper);
        }
        catch (FsException ex)
        {
            _log($"submounts: subvolume {id} at {mp}: {ex.Message}");
            return false;
        }
        var c = new SubmountConnection(mp, fd, bridge, Interlocked.Increment(ref _nextKey), helper);
        bridge.Notifier = msg => c.Notify(msg, _log);
        bridge.Defer = work => { if (!_deferred.IsAddingCompleted) _deferred.TryAdd(work); };
        _mounts[id] = c;
        // A connection that ended (unmounted, its subvolume deleted) leaves the table, or a
        // long life of snapshots made and deleted would keep a bridge for each.
        c.Gone = () =>
        {
            _mounts.TryRemove(KeyValuePair.Create(id, c));
            if (dedicated) Interlocked.Decrement(ref _dedicated);
        };
        if (dedicated)
        {
            Interlocked.Increment(ref _dedicated);
            for (int i = 0; i < Math.Max(2, _options.Threads); i++)
                new Thread(() => SharedRequestThreads.ServeBlocking(c, _log, _watch)) { Name = $"fuse-sv{id}-{i}", IsBackground = true }.Start();
        }
        else _threads.Add(c);
        c.Device = Libc.DeviceOf(mp);
        return true;
    }

    /// <summary>Detaches every submount (the deepest first) and waits for their connections to
    /// end; one still busy after the wait is cut off (its descriptor closed, which aborts it).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _work.CompleteAdding();
        _worker.Join(TimeSpan.FromSeconds(30));
        var live = _mounts.Values.Where(c => !c.Ended).OrderByDescending(c => c.MountPoint.Count(ch => ch == '/')).ToList();
        foreach (var c in live)
        {
            // Only a mount point that still shows this connection's mount: one unmounted by
            // the user whose end is not read yet may have another mount there by now.
            if (c.Device != null && Libc.DeviceOf(c.MountPoint) != c.Device) continue;
            FuseSession.Unmount(c.MountPoint, c.Helper);
        }
        foreach (var c in live)
            if (!c.WaitGone(TimeSpan.FromSeconds(10))) _log($"submounts: {c.MountPoint} is still busy; its connection is cut off");
        _threads.Dispose();
        foreach (var c in live) c.End(); // no thread serves them any more: close what is left
        _deferred.CompleteAdding();
        _deferredThread.Join(TimeSpan.FromSeconds(30));
    }

    private int _disposed;
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;

namespace Reservoir.Engine.Data;

/// <summary>Switches that bring back the two seed bugs, so that tests can show the harness
/// catches them (issue 6, "a harness with teeth"). Never set outside tests.</summary>
public sealed class SeedBugSwitches
{
    /// <summary>Seed 000 (btrfs 7dbeaad0 reverted): an ordered extent does not take the qgroup
    /// reservation of its range; releasing a clean page clears the range's reserved bits without
    /// freeing; finishing an ordered extent hands over only the bits still set.</summary>
    public bool OldQgroupReleaseTiming;
    /// <summary>Seed 001 (ext4 fix reverted): a page-fault write that found a hole does not
    /// look again under the exclusive mapping lock before reserving and inserting Delayed.</summary>
    public bool NoSecondLookupInPageMkwrite;
}

public sealed class DataOptions
{
    /// <summary>Memory for cached pages; clean pages are evicted beyond it.</summary>
    public long PageCacheBytes { get; set; } = 256L << 20;
    /// <summary>Dirty data older than this is written back (dirty_expire_centisecs).</summary>
    public int DirtyExpireMs { get; set; } = 30_000;
    /// <summary>How often the flusher wakes (dirty_writeback_centisecs).</summary>
    public int WritebackIntervalMs { get; set; } = 5_000;
    /// <summary>Background writeback starts above this share of the page cache being dirty.</summary>
    public int DirtyBackgroundPercent { get; set; } = 10;
    /// <summary>Writers write back their own pages above this share (balance_dirty_pages).</summary>
    public int DirtyPercent { get; set; } = 20;
    public int CompletionWorkers { get; set; } = 2;
    public SeedBugSwitches Bugs { get; } = new();
    /// <summary>Test hook: called before an ordered extent is finished, on the completion
    /// worker; lets a deterministic test delay completion past other steps.</summary>
    public Action<OrderedExtentInfo>? BeforeFinish { get; set; }
}

public readonly record struct OrderedExtentInfo(ulong Inode, ulong FileOffset, ulong Length, ulong QgroupRsv, string Kind);

/// <summary>
/// The per-filesystem part of the data path: the registry of mappings, the page cache budget,
/// the flusher thread, the ordered-extent completion workers and the leak checks.
/// Locks: <see cref="_lock"/> guards the registry and the flusher's wake-up; it is a leaf lock
/// taken inside a mapping's State lock only to kick the flusher, never the other way round. The
/// page and dirty counts are atomic counters: every buffered write changes them, and a global
/// lock taken several times per 4 KiB write was a cost of its own and a point where every FUSE
/// thread met.
/// </summary>
internal sealed partial class DataEngine : IDisposable
{
    private readonly FsMutex _lock; // guards _mappings, _stopping, _kick (read unlocked as a hint)
    private readonly HashSet<Mapping> _mappings = new();
    private long _cachedPages, _dirtyPages; // Interlocked
    private bool _stopping, _kick;
    private readonly WorkQueue _endio;
    private FsThread? _flusher;
    private long _clock;
    public FsInfo Fs { get; }
    /// <summary>The subvolumes whose inodes have mappings (asked when idle mappings are dropped).</summary>
    private readonly Func<IEnumerable<Subvolume>> _subvolumes;
    public DataOptions Options { get; }
    public IScheduler Sched => Fs.Sched;
    /// <summary>Where page frames come from (native chunks; see <see cref="PageArena"/>).</summary>
    internal PageArena Arena { get; }
    public int BlockSize => Fs.BlockSize;

    /// <summary>The page indexes meeting the byte range [start, end): First inclusive, Last
    /// exclusive; Last is long.MaxValue when the range runs to the end of any file (an end
    /// within one block of ulong.MaxValue would overflow when rounded up).</summary>
    internal (long First, long Last) PageSpan(ulong start, ulong end)
    {
        ulong bs = (ulong)BlockSize;
        long last = end >= ulong.MaxValue - bs ? long.MaxValue : (long)((end + bs - 1) / bs);
        return ((long)(start / bs), last);
    }
    /// <summary>Reservation leaks found by the checks (bytes): every test requires zero.</summary>
    public long LeakedBytes;
    public readonly List<string> LeakReports = new();

    public DataEngine(FsInfo fs, Func<IEnumerable<Subvolume>> subvolumes, DataOptions options)
    {
        Fs = fs;
        _subvolumes = subvolumes;
        Options = options;
        _lock = Sched.CreateMutex("page-cache");
        // Keep up to a quarter of the cache budget (at most 64 MiB) of free frames for reuse.
        Arena = new PageArena(BlockSize, Math.Min(options.PageCacheBytes / 4, 64L << 20));
        _endio = new WorkQueue(Sched, "endio-write", Math.Max(1, options.CompletionWorkers))
        {
            OnError = ex => fs.Warn($"ordered extent completion failed: {ex}"),
        };
        fs.FlushDelalloc = () =>
        {
            foreach (var m in AllMappings()) Writeback(m, 0, ulong.MaxValue, wait: true);
            foreach (var m in AllMappings()) WaitOrdered(m, 0, ulong.MaxValue);
        };
    }

    public void StartFlusher()
    {
        if (Fs.ReadOnly || Options.WritebackIntervalMs <= 0) return;
        _flusher = Sched.Start("flusher", FlusherLoop);
    }

    public long MaxCachedPages => Math.Max(64, Options.PageCacheBytes / BlockSize);

    /// <summary>The inode's mapping, created on first use. An inode's mapping is set once and
    /// never replaced (an idle mapping leaves with its inode), so a set one is returned without
    /// the registry lock.</summary>
    public Mapping MappingOf(Inode inode)
    {
        if (Volatile.Read(ref inode.Mapping) is { } m) return m;
        using var _ = _lock.Lock();
        if (inode.Mapping == null)
        {
            Volatile.Write(ref inode.Mapping, new Mapping(inode, Sched));
            _mappings.Add(inode.Mapping!);
        }
        return inode.Mapping!;
    }

    internal void CountPages(long cachedDelta, long dirtyDelta)
    {
        if (cachedDelta != 0) Interlocked.Add(ref _cachedPages, cachedDelta);
        long dirty = dirtyDelta != 0 ? Interlocked.Add(ref _dirtyPages, dirtyDelta) : Interlocked.Read(ref _dirtyPages);
        if (dirty <= MaxCachedPages * Options.DirtyBackgroundPercent / 100 || Volatile.Read(ref _kick)) return;
        using (_lock.Lock())
            if (!_kick) { _kick = true; _lock.PulseAll(); }
    }

    public (long Cached, long Dirty) PageCounts => (Interlocked.Read(ref _cachedPages), Interlocked.Read(ref _dirtyPages));

    internal List<Mapping> AllMappings()
    {
        using var _ = _lock.Lock();
        return _mappings.ToList();
    }

    internal long NextClock() => Interlocked.Increment(ref _clock);

    // ------------------------------------------------------------------ flusher

    private void FlusherLoop()
    {
        while (true)
        {
            bool background;
            using (_lock.Lock())
            {
                if (!_stopping && !_kick) _lock.Wait(Options.WritebackIntervalMs);
                if (_stopping) return;
                background = _kick;
                _kick = false;
            }
            try
            {
                long now = Sched.NowMs;
                foreach (var m in AllMappings())
                {
                    // Old dirty data always; everything when past the background threshold.
                    WritebackExpired(m, background ? long.MaxValue : now - Options.DirtyExpireMs);
                }
                EvictIfOverBudget();
                DropIdleMappings();
            }
            catch (FsException ex) { Fs.Warn($"background writeback failed: {ex.Message}"); }
        }
    }

    /// <summary>
    /// Writers call this after dirtying pages (caller holds the inode lock, no page lock, no
    /// transaction handle): past the dirty limit they write back their own file
    /// (balance_dirty_pages), so dirty memory stays bounded. Pages the flusher is writing back
    /// meanwhile can be neither written again nor evicted until their IO ends, so a writer
    /// that would leave the cache over its budget waits for its file's IO in flight, as Linux
    /// throttles on dirty and writeback pages alike: without it one in-process write of 32 MiB
    /// with a 4 MiB budget could leave 5,888 pages cached, the flusher's share still under IO
    /// when the write balanced (EmbeddedApiTests). The wait cannot close a cycle:
    /// the IO ends without the inode lock (EndIo takes only State; completion, which takes
    /// tree locks, comes after).
    /// </summary>
    internal void BalanceDirty(Mapping m)
    {
        long dirty = Interlocked.Read(ref _dirtyPages);
        if (dirty > MaxCachedPages * Options.DirtyPercent / 100) Writeback(m, 0, ulong.MaxValue, wait: false);
        EvictIfOverBudget();
        if (Interlocked.Read(ref _cachedPages) <= MaxCachedPages) return;
        bool waited = false;
        using (m.State.Lock())
            while (m.PagesInWriteback > 0) { m.State.Wait(); waited = true; }
        if (!waited) return;
        Interlocked.Increment(ref WriterThrottleWaits);
        EvictIfOverBudget();
    }

    /// <summary>How many times a writer waited for the flusher's IO in <see cref="BalanceDirty"/>.</summary>
    internal long WriterThrottleWaits;

    // ------------------------------------------------------------------ completion

    /// <summary>Forgets mappings (and their inodes) that own nothing, so that memory does not
    /// grow with every file ever written. Clean pages are dropped first when idle.</summary>
    internal int DropIdleMappings()
    {
        int n = 0;
        foreach (var sv in _subvolumes()) n += sv.DropIdleMappings(DropIfIdle);
        return n;
    }

    /// <summary>Forgets the idle mappings of one subvolume (one being deleted).</summary>
    internal int DropIdleMappings(Subvolume sv) => sv.DropIdleMappings(DropIfIdle);

    /// <summary>
    /// Raises the size on disk to the file's size when nothing below the file's end waits to
    /// reach the disk (no dirty page, page under writeback or locked, or ordered extent above
    /// the size on disk): what lies between is holes or extents already on disk. A punch or
    /// zero range that dropped the dirty pages past the size on disk calls it before writing the
    /// inode; without it the file shrank back to the old size on disk once its mapping was
    /// dropped and the inode reloaded (the stress runner, seed 34).
    /// </summary>
    internal void SettleDiskSize(Mapping m)
    {
        using var _ = m.State.Lock();
        SettleDiskSizeLocked(m);
    }

    /// <summary>
    /// <see cref="SettleDiskSize"/> with State held. Ordered-extent completion calls it after
    /// raising the size on disk to its own end: when that extent was the last thing waiting
    /// above the size on disk, the rest up to the file's size is holes (a punch past the end
    /// while the end was only in dirty pages leaves exactly that: one dirty edge page and a
    /// hole above it), and without this step nothing would ever raise the size on disk past
    /// the edge page, so a snapshot, and the image after unmount, kept a shorter file (the
    /// mount soak of 2026-12-02, seed 2051). The extent being finished is still in
    /// <see cref="Mapping.Ordered"/>, but it ends at or below the new size on disk. Cheap checks
    /// first: the common case (a writer ahead of writeback) stops at the ordered extents or
    /// the dirty-page index; the page walk covers at most the pages above the size on disk.
    /// </summary>
    internal void SettleDiskSizeLocked(Mapping m)
    {
        if (m.DiskSize < m.Inode.Item.FileSize && NothingWaitsAboveDiskSize(m)) m.DiskSize = m.Inode.Item.FileSize;
    }

    /// <summary>No ordered extent, and no page dirty, locked or under writeback, reaches above
    /// the size on disk. Caller holds State.</summary>
    private bool NothingWaitsAboveDiskSize(Mapping m)
    {
        ulong bs = (ulong)BlockSize;
        foreach (var oe in m.Ordered.Values)
            if (oe.End > m.DiskSize) return false;
        long first = (long)(m.DiskSize / bs), last = (long)((m.Inode.Item.FileSize + bs - 1) / bs); // pages [first, last) reach above
        foreach (var _ in m.DirtyPages.Between(first, long.MaxValue)) return false;
        return !AnyPageIn(m, first, last, static p => p.Writeback || p.Locked);
    }

    private bool DropIfIdle(Mapping m)
    {
        using (m.State.Lock())
        {
            if (m.DirtyPages.Count > 0 || m.Ordered.Count > 0 || !m.Ledger.IsEmpty || m.MetaRsv > 0 || m.OutstandingExtents != 0) return false;
            // A size not yet on disk would be lost with the mapping (the inode reloads the
            // smaller size from the tree): keep it until an inode write carries it.
            if (m.DiskSize < m.Inode.Item.FileSize) return false;
            if (m.Pages.Values.Any(p => p.Locked || p.Writeback)) return false;
            long pages = m.Pages.Count;
            foreach (var p in m.Pages.Values.ToList()) RemovePageUnsynchronized(m, p);
            if (pages > 0) CountPages(-pages, 0);
        }
        using (_lock.Lock()) _mappings.Remove(m);
        return true;
    }

    internal void QueueFinish(Mapping m, OrderedExtent oe) => _endio.Enqueue(() => FinishOrdered(m, oe));

    public void Dispose()
    {
        using (_lock.Lock())
        {
            _stopping = true;
            _lock.PulseAll();
        }
        _flusher?.Join();
        _endio.Dispose();
        Arena.Dispose(); // last: the flusher and the completion workers no longer touch pages
    }

    // ------------------------------------------------------------------ leak checks

    /// <summary>
    /// The per-inode leak check (design notes invariant 2): with no writes in flight, a mapping
    /// owns no reserved byte (ledger empty, no ordered extent, no metadata reservation). Every
    /// non-zero finding is logged with the inode and range, counted in <see cref="LeakedBytes"/>,
    /// and freed so that counters stay usable.
    /// </summary>
    internal void CheckMappingQuiescent(Mapping m, string when)
    {
        using var _ = m.State.Lock();
        foreach (var (s, (e, bits)) in m.Ledger.Overlapping(0, ulong.MaxValue).ToList())
        {
            Leak($"inode {m.Inode.Ino}: {when}: range [{s}, {e}) still owns {bits}", (long)(e - s));
            ulong len = e - s;
            if ((bits & RangeBits.Delalloc) != 0) Fs.Space.Release(true, len);
            if ((bits & RangeBits.QgroupReserved) != 0) Fs.Quota.Free(m.Subvol.Id, len);
            m.Ledger.Clear(s, e, bits);
        }
        foreach (var oe in m.Ordered.Values) Leak($"inode {m.Inode.Ino}: {when}: unfinished {oe}", (long)oe.NumBytes);
        if (m.MetaRsv > 0 || m.OutstandingExtents != 0)
        {
            Leak($"inode {m.Inode.Ino}: {when}: {m.MetaRsv} bytes of metadata reservation, {m.OutstandingExtents} outstanding extents", (long)Math.Max(1, m.MetaRsv));
            Fs.Space.Release(false, m.MetaRsv);
            m.MetaRsv = 0;
        }
        m.OutstandingExtents = 0;
    }

    /// <summary>The unmount check (invariant 1): after everything was written and committed,
    /// may_use of data and metadata and every qgroup's reservation are zero.</summary>
    internal void CheckUnmount()
    {
        foreach (var m in AllMappings()) CheckMappingQuiescent(m, "unmount");
        var s = Fs.Space;
        if (s.Data.MayUse != 0) Leak($"unmount: data may_use is {s.Data.MayUse}", (long)s.Data.MayUse);
        if (s.Meta.MayUse != 0) Leak($"unmount: metadata may_use is {s.Meta.MayUse}", (long)s.Meta.MayUse);
        if (s.Data.Reserved != 0) Leak($"unmount: {s.Data.Reserved} data bytes allocated but never given an extent item", (long)s.Data.Reserved);
        foreach (var g in Fs.Quota.Snapshot())
            if (g.RsvData != 0) Leak($"unmount: qgroup {Format.Items.QgroupId.Show(g.Id)} still reserves {g.RsvData} data bytes", (long)g.RsvData);
        if (!Fs.Quota.Enabled && Fs.Quota.TotalRsv is var rsv and not 0) Leak($"unmount: subvolumes still reserve {rsv} data bytes (quotas off)", (long)rsv);
        if (s.Data.Underflows + s.Meta.Underflows + Fs.Quota.Underflows > 0)
            Leak($"unmount: {s.Data.Underflows + s.Meta.Underflows + Fs.Quota.Underflows} counter underflow(s) (more released than reserved)", 0);
    }

    private void Leak(string msg, long bytes)
    {
        Interlocked.Add(ref LeakedBytes, Math.Max(1, bytes));
        lock (LeakReports) LeakReports.Add(msg);
        Fs.Warn("RESERVATION LEAK: " + msg);
    }
}

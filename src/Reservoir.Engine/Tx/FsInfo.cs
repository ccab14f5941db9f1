using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Alloc;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The mounted filesystem's core state (btrfs's fs_info): device, superblock, node store,
/// space manager, the global trees and the transaction machinery.
///
/// Lock order (outer to inner): inode locks (higher layer) → <see cref="_commitLock"/> (read, by
/// handles) → tree locks → leaf locks (space, delayed refs, transaction dirty set, node cache).
/// A thread holding a handle never waits for an inode lock, so a commit, which takes
/// <see cref="_commitLock"/> for writing, can always finish.
/// </summary>
internal sealed partial class FsInfo : IDisposable
{
    public IBlockDevice Device { get; }
    public IScheduler Sched { get; }
    public MountOptions Options { get; }
    /// <summary>The superblock the next commit starts from. Replaced, never changed in place:
    /// under the commit lock held exclusively, or by <see cref="SetIncompat"/>'s exchange.</summary>
    public Superblock Super { get => _super; private set => _super = value; }
    private Superblock _super = null!;
    public NodeStore Store { get; }
    public SpaceManager Space { get; }
    public EngineStats Stats { get; } = new();
    public int NodeSize { get; }
    public int BlockSize { get; }
    public Guid Fsid { get; }
    public bool ReadOnly { get; private set; }
    /// <summary>Set when a commit failed: the in-memory state no longer matches what can be
    /// committed, so nothing more is written. The last commit on disk stays intact.</summary>
    public string? FailedReason { get; private set; }
    public List<string> Warnings { get; } = new();

    public BTree RootTree { get; private set; } = null!;
    public BTree ExtentTree { get; private set; } = null!;
    public BTree CsumTree { get; private set; } = null!;
    /// <summary>Null until quotas are enabled.</summary>
    public BTree? QuotaTree { get; private set; }
    public Quota.Qgroups Quota { get; }
    /// <summary>Where each snapshot came from (SNAPSHOT_LINEAGE items).</summary>
    public Quota.Lineage Lineage { get; } = new();
    private readonly Dictionary<ulong, BTree> _fsTrees = new(); // guarded by _treesLock
    private readonly FsMutex _treesLock;
    /// <summary>Makes "is this tree block shared?" and the reference changes decided on the
    /// answer one step (copy-on-write of a shared block, dropping a deleted tree). Taken under
    /// a tree's write lock; takes the extent tree's read lock and the delayed refs' lock.</summary>
    public FsMutex SharingLock { get; }

    /// <summary>Handles hold it shared for their lifetime; a commit holds it exclusively.
    /// Guards the identity of <see cref="Running"/>.</summary>
    private readonly FsRwLock _commitLock;
    /// <summary>Serialises commits and guards the committer's wake-up state.</summary>
    private readonly FsMutex _commitMutex;
    /// <summary>Commits every commit interval, or when kicked (too much dirty); null without
    /// background threads (interval 0, read-only).</summary>
    private KickedWorker? _committer;
    public Transaction Running { get; private set; }
    /// <summary>Writes back all dirty data and waits for its ordered extents; set by the data
    /// layer above (the transaction layer cannot call up). Called with no handle held.</summary>
    public Action? FlushDelalloc { get; set; }

    /// <summary>Which primary superblock slot (0: 64 KiB, 1: 256 KiB) holds the newest durable
    /// commit; the next commit writes the other one, so a power cut during it always leaves
    /// this one (SPEC.md §1). Guarded by the commit mutex.</summary>
    private int _superSlot;
    /// <summary>The newest durable commit was found only in a backup copy (both primary slots
    /// damaged): the next commit leaves the backups alone, or a power cut during it could leave
    /// no whole commit anywhere. Guarded by the commit mutex.</summary>
    private bool _durableOnlyInBackups;

    private FsInfo(IBlockDevice dev, Superblock sb, MountOptions opts, SpaceManager space, ulong newestSeen)
    {
        Device = dev;
        Sched = opts.Scheduler;
        Options = opts;
        Super = sb;
        NodeSize = (int)sb.NodeSize;
        BlockSize = (int)sb.BlockSize;
        Fsid = sb.Fsid;
        ReadOnly = opts.ReadOnly || dev.ReadOnly;
        Space = space;
        Store = new NodeStore(dev, Sched, NodeSize, Fsid, opts.NodeCacheBytes);
        _treesLock = Sched.CreateMutex("fs-trees");
        SharingLock = Sched.CreateMutex("tree-block-sharing");
        _commitLock = Sched.CreateRwLock("commit");
        _commitMutex = Sched.CreateMutex("commit-serial");
        _relationChangesLock = Sched.CreateMutex("qgroup-relation-changes");
        _resizeMutex = Sched.CreateMutex("resize");
        // Past every generation any copy claims (a torn commit's copies may survive in a
        // backup slot: no later commit may share their generation).
        Running = NewTransaction(Math.Max(sb.Generation, newestSeen) + 1);
        var offs = FormatConstants.SuperblockOffsets;
        // Where the copy in use was found (mkfs's superblock was found nowhere: neither).
        int at = Array.IndexOf(offs, sb.Bytenr);
        _superSlot = at == 1 ? 1 : 0;
        _durableOnlyInBackups = at >= 2;
        Quota = new Quota.Qgroups(Sched);
    }

    public void Warn(string msg)
    {
        lock (Warnings) Warnings.Add(msg);
        Options.Log?.Invoke(msg);
    }

    public BTree? FsTree(ulong id)
    {
        using var _ = _treesLock.Lock();
        return _fsTrees.GetValueOrDefault(id);
    }

    public IReadOnlyList<BTree> AllFsTrees()
    {
        using var _ = _treesLock.Lock();
        return _fsTrees.Values.ToList();
    }

    /// <summary>Bytes of metadata an operation touching <paramref name="items"/> items may
    /// dirty. Per item, in the tallest tree: the copied path (height nodes) plus one split or
    /// one merged sibling per level plus a new root, i.e. 2·height + 1 nodes. Extent-tree
    /// updates at commit are paid from the global reserve. Tests assert that no operation ever
    /// allocates beyond this (EngineStats.ReservationOverruns).</summary>
    public ulong MetaReserveFor(int items) =>
        (ulong)items * (ulong)NodeSize * (ulong)(2 * Volatile.Read(ref _maxTreeHeight) + 1);

    /// <summary>The tallest any tree has been on this mount: set at mount from every tree and
    /// raised whenever a node is allocated at a level no tree reached before (a root split),
    /// so the reservation every write asks for costs the same with one subvolume or 10,000
    /// snapshots (walking the trees for it did not).</summary>
    private int _maxTreeHeight = 1;

    internal void NoteNodeLevel(int level)
    {
        int h = level + 1;
        int cur;
        while ((cur = Volatile.Read(ref _maxTreeHeight)) < h && Interlocked.CompareExchange(ref _maxTreeHeight, h, cur) != cur) { }
    }

    /// <summary>Fault injection (tests, `reservoir explore --enospc`): asked at every
    /// <see cref="TryStart"/> that may fail for space (not those drawing on the global reserve,
    /// which a full disk does not refuse); an errno other than OK is answered instead of
    /// starting, as a full metadata space would (ENOSPC at a chosen step of an operation that
    /// spans several transactions, which a real full disk hits only by timing).</summary>
    internal Func<Errno>? StartFault { get; set; }

    /// <summary>
    /// Joins the running transaction for an operation that changes at most
    /// <paramref name="items"/> tree items. Reserves their metadata first; if that fails,
    /// commits once (freeing pinned space) and tries again before answering ENOSPC.
    /// <paramref name="useGlobalReserve"/> lets deletions proceed on a full filesystem.
    /// </summary>
    /// <param name="flush">False for callers that hold a mapping's DataSem or page locks: the
    /// flush waits for page locks, whose holders may be waiting for that DataSem. They get
    /// ENOSPC at once, release their locks, flush, and retry.</param>
    public Errno TryStart(int items, out TransHandle handle, bool useGlobalReserve = false, bool flush = true)
    {
        handle = null!;
        if (ReadOnly) return Errno.EROFS;
        if (FailedReason != null) return Errno.EIO;
        if (!useGlobalReserve && StartFault?.Invoke() is { } fault and not Errno.OK) return fault;
        ulong bytes = MetaReserveFor(items);
        if (Space.Reserve(false, bytes, useGlobalReserve) != Errno.OK)
        {
            if (!flush) return Errno.ENOSPC;
            // Dirty data holds metadata reservations for its future ordered extents: write it
            // back and let them finish (the layer above registers how), then commit.
            FlushDelalloc?.Invoke();
            Commit();
            if (Space.Reserve(false, bytes, useGlobalReserve) != Errno.OK) return Errno.ENOSPC;
        }
        _commitLock.EnterRead();
        if (FailedReason != null)
        {
            _commitLock.ExitRead();
            Space.Release(false, bytes);
            return Errno.EIO;
        }
        handle = new TransHandle(this, Running, bytes, holdsCommitLock: true);
        return Errno.OK;
    }

    /// <summary>
    /// Joins the running transaction with metadata already reserved (an ordered extent's share):
    /// it cannot fail for space, as finishing data that reached the disk must not.
    /// </summary>
    public TransHandle StartReserved(ulong reservedMeta)
    {
        if (FailedReason != null) throw new FsException(Errno.EIO, "filesystem failed: " + FailedReason);
        _commitLock.EnterRead();
        return new TransHandle(this, Running, reservedMeta, holdsCommitLock: true);
    }

    /// <summary>
    /// Joins the running transaction for a step of a deletion that has already changed the
    /// file (a truncate or punch dropping extents in batches): such a step must not fail half
    /// way, or the file would be left with a size that disagrees with its extents. It reserves
    /// like <see cref="TryStart"/> with the global reserve; if even that is exhausted it joins
    /// unreserved and its nodes overrun (counted in <c>EngineStats.ReservationOverruns</c>),
    /// as btrfs lets deletions proceed on a full filesystem. Fails only on a read-only or
    /// failed filesystem.
    /// </summary>
    public Errno StartDeletion(int items, out TransHandle handle)
    {
        var e = TryStart(items, out handle, useGlobalReserve: true);
        if (e != Errno.ENOSPC) return e;
        if (ReadOnly) return Errno.EROFS;
        _commitLock.EnterRead();
        if (FailedReason != null)
        {
            _commitLock.ExitRead();
            return Errno.EIO;
        }
        handle = new TransHandle(this, Running, 0, holdsCommitLock: true);
        return Errno.OK;
    }

    public TransHandle Start(int items, bool useGlobalReserve = false)
    {
        var e = TryStart(items, out var h, useGlobalReserve);
        if (e != Errno.OK) throw new FsException(e, "cannot start a transaction");
        return h;
    }

    internal void EndHandle(TransHandle h)
    {
        _commitLock.ExitRead();
        long dirty = (long)h.Transaction.DirtyCount * NodeSize;
        if (dirty > Options.DirtyCommitBytes * 4) Commit();
        else if (dirty > Options.DirtyCommitBytes) KickCommitter();
    }

    // ------------------------------------------------------------------ committer thread

    public void StartCommitter()
    {
        if (ReadOnly || Options.CommitIntervalMs <= 0) return;
        _committer = new KickedWorker(Sched, "committer", Options.CommitIntervalMs, () =>
        {
            try { CommitAfterEarlyAccounting(); }
            catch (FsException ex) { Warn($"periodic commit failed: {ex.Message}"); }
        });
    }

    private void KickCommitter() => _committer?.Kick();

    private void StopCommitter()
    {
        _committer?.Stop();
        _committer = null;
    }

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        StopCommitter();
        StopDiscarder();
        StopEarlyAccounting(); // the last commit works out whatever is still queued
        if (!ReadOnly && FailedReason == null)
        {
            Commit();
            WriteCleanSuperblock();
            DiscardQueued(); // discard=async: what is left, the last commit's frees included
        }
    }

    internal void MarkFailed(string reason)
    {
        FailedReason ??= reason;
        Warn("filesystem failed, no further writes: " + reason);
    }
}

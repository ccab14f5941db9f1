using System.Text;
using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>
/// The engine's POSIX-shaped interface, by inode number, as the FUSE low-level API and the
/// embedded .NET API use it. Every method returns an <see cref="Errno"/>; corruption and device
/// failures surface as <see cref="Errno.EIO"/> or <see cref="Errno.EUCLEAN"/> after being
/// recorded in <see cref="Warnings"/>. Thread-safe: operations on different inodes run in
/// parallel; see FsInfo for the lock order.
/// </summary>
public sealed partial class Filesystem : IDisposable
{
    public const ulong RootIno = FormatConstants.RootDirObjectId;
    internal FsInfo Fs { get; }
    /// <summary>The top-level subvolume (tree 5), which always exists.</summary>
    internal Subvolume Top { get; }
    internal Data.DataEngine Data { get; }
    private readonly FsMutex _subvolsLock; // guards _subvols and _deadSubvols
    /// <summary>Subvolumes in use, by tree id; loaded on first use.</summary>
    private readonly Dictionary<ulong, Subvolume> _subvols = new();
    /// <summary>Deleted subvolumes whose trees are still there, being dropped (by tree id; the
    /// dead in-memory side, or null for one a crash left half deleted): never loaded again.
    /// Their trees stay among the fs trees until the drop ends, and a node id the kernel still
    /// had (a shell's working directory inside, say) would otherwise load one afresh, not
    /// dead, and write into a tree the cleaner is emptying.</summary>
    private readonly Dictionary<ulong, Subvolume?> _deadSubvols = new();

    private Filesystem(FsInfo fs, Data.DataOptions dataOptions)
    {
        Fs = fs;
        _subvolsLock = fs.Sched.CreateMutex("subvolumes");
        Top = LoadSubvolume(fs.FsTree(TreeIds.FsTree)!);
        _subvols[Top.Id] = Top;
        Data = new Data.DataEngine(fs, LoadedSubvolumes, dataOptions);
    }

    /// <summary>The subvolumes loaded so far (a copy: callers iterate without the lock).</summary>
    internal List<Subvolume> LoadedSubvolumes()
    {
        using var _ = _subvolsLock.Lock();
        return _subvols.Values.ToList();
    }

    /// <summary>The subvolume with this tree id, loaded on first use; null if there is none.</summary>
    internal Subvolume? SubvolumeOf(ulong treeId)
    {
        using var _ = _subvolsLock.Lock();
        if (_subvols.TryGetValue(treeId, out var sv)) return sv;
        if (_deadSubvols.ContainsKey(treeId)) return null;
        var tree = Fs.FsTree(treeId);
        if (tree == null) return null;
        return _subvols[treeId] = LoadSubvolume(tree);
    }

    /// <summary>A subvolume's in-memory side, with the read-only flag of its ROOT_ITEM.</summary>
    private Subvolume LoadSubvolume(Tree.BTree tree) =>
        new(Fs, tree) { ReadOnly = Fs.RootItemOf(tree.Id) is { } ri && (ri.Flags & RootItem.FlagReadOnly) != 0 };

    /// <summary>Writes a new empty filesystem on the device (mkfs).</summary>
    public static void Format(IBlockDevice dev, MkfsOptions? options = null, IScheduler? sched = null)
    {
        options ??= new MkfsOptions();
        FsInfo.Mkfs(dev, options, (fs, h) =>
        {
            var now = Timespec.Now();
            var root = new InodeItem
            {
                Generation = h.Transid, Transid = h.Transid, Nlink = 2, Mode = Inodes.Mode.IFDIR | 0x1ED /* 0755 */,
                Uid = options.RootUid, Gid = options.RootGid,
                Atime = now, Ctime = now, Mtime = now, Otime = now,
            };
            var t = fs.FsTree(TreeIds.FsTree)!;
            DirItems.PutInode(h, t, RootIno, root);
            DirItems.AddInodeRef(h, t, RootIno, RootIno, 0, ".."u8);
            Span<byte> ri = stackalloc byte[RootItem.Size];
            foreach (var id in new[] { TreeIds.ExtentTree, TreeIds.CsumTree, TreeIds.FsTree })
            {
                new RootItem { Refs = 1, Otransid = h.Transid, Otime = now, Uuid = Guid.NewGuid(), RootDirId = id == TreeIds.FsTree ? RootIno : 0 }.Write(ri);
                fs.RootTree.Put(h, new Key(id, KeyTypes.RootItem, 0), ri);
            }
        }, sched ?? RealScheduler.Instance);
    }

    /// <summary>Mounts the filesystem on the device: reads the newest valid superblock,
    /// loads the trees and free space, finishes deleting orphaned inodes and starts the
    /// periodic committer.</summary>
    public static Filesystem Mount(IBlockDevice dev, MountOptions? options = null, Data.DataOptions? dataOptions = null)
    {
        options ??= new MountOptions();
        var fs = FsInfo.Mount(dev, options);
        // Read before any commit of this mount rewrites it: the last commit's superblock says
        // whether ORIGIN_DROPs were waiting in memory (the unmount writes them; a crash lost them).
        bool originDropsLost = fs.Super.OriginDropsMissingSince != 0;
        // Before anything else reads or changes the trees: what fsync made durable since the
        // commit (SPEC.md §9).
        InodeLog.Replay(fs);
        var f = new Filesystem(fs, dataOptions ?? new Data.DataOptions());
        if (!fs.ReadOnly)
        {
            fs.UpgradeQuotaIfNeeded();
            if (originDropsLost) fs.RederivePendingOriginDrops();
            foreach (var t in fs.AllFsTrees()) f.CleanupOrphans(f.SubvolumeOf(t.Id)!);
            f.CleanupDeletedSubvolumes();
        }
        fs.StartCommitter();
        fs.StartDiscarder();
        f.Data.StartFlusher();
        return f;
    }

    /// <summary>The newest valid superblock of a device, with a note for each damaged copy;
    /// throws FsException when the device holds no Reservoir filesystem.</summary>
    public static (Superblock Super, IReadOnlyList<string> Notes) ReadSuperblock(IBlockDevice dev) => FsInfo.ReadSuperblock(dev);

    public bool ReadOnly => Fs.ReadOnly;
    public int BlockSize => Fs.BlockSize;
    public int NodeSize => Fs.NodeSize;
    public ulong Generation => Fs.Super.Generation;
    public string Label => Fs.Super.Label;
    public Guid Fsid => Fs.Fsid;
    public EngineStats Stats => Fs.Stats;
    public IReadOnlyList<string> Warnings { get { lock (Fs.Warnings) return Fs.Warnings.ToList(); } }

    /// <summary>sync(2): writes back every dirty page, waits for every ordered extent, commits.</summary>
    public Errno Sync() => Guard(0, () =>
    {
        if (Fs.ReadOnly) return Errno.OK;
        foreach (var m in Data.AllMappings()) Data.Writeback(m, 0, ulong.MaxValue, wait: true);
        foreach (var m in Data.AllMappings()) Data.WaitOrdered(m, 0, ulong.MaxValue);
        Fs.CommitAfterEarlyAccounting();
        Fs.DiscardQueuedWithoutWorker();
        // A failed filesystem commits nothing: sync must not answer as if it had.
        return Fs.FailedReason != null ? Errno.EIO : Errno.OK;
    });

    /// <summary>Reservation leaks found (bytes) and their reports; tests require none.</summary>
    public long LeakedBytes => Interlocked.Read(ref Data.LeakedBytes);
    public IReadOnlyList<string> LeakReports { get { lock (Data.LeakReports) return Data.LeakReports.ToList(); } }

    /// <summary>Checks, at a point where no operation runs, that every reservation counter
    /// equals what the ledgers say is owned; returns the violations. Waits for the cleaner
    /// first: a deleted subvolume's drop is an operation too, and each of its batches holds a
    /// handle's metadata reservation that no mapping or ordered extent accounts for (a stress
    /// run that deleted a big subvolume just before its end once saw 640 KiB of may_use that
    /// way, on a loaded host).</summary>
    public IReadOnlyList<string> VerifyReservations()
    {
        // A deleted subvolume whose files are open keeps its tree (and those files their
        // reservations, which the ledgers account for) until they are closed.
        _ = SyncSubvolumeDeletions();
        return Data.VerifyQuiescent();
    }

    /// <summary>Forgets idle files' page caches and inodes (the flusher does this periodically).</summary>
    public int DropIdleMappings() => Data.DropIdleMappings();

    /// <summary>Inodes and mappings held in memory (for tests and `inspect`).</summary>
    public (int Inodes, int Mappings) InMemory => (Top.LoadedInodes, Data.AllMappings().Count);

    /// <summary>Drops clean cached pages (what memory pressure does); for tests and tools.</summary>
    public void ReleaseCleanPages() { foreach (var m in Data.AllMappings()) Data.ReleaseCleanPages(m); }

    /// <summary>Starts writeback of a file's dirty pages without waiting for completion (what the
    /// flusher does); for tests and tools.</summary>
    public Errno StartWriteback(ulong ino)
    {
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try { return Guard(ino, () => { Data.Writeback(Data.MappingOf(inode), 0, ulong.MaxValue, wait: false); return Errno.OK; }); }
        finally { Put(inode); }
    }

    /// <summary>Fault injection, for tests and `reservoir explore --enospc`:
    /// <paramref name="fault"/> is asked at every transaction start that may fail for space
    /// and answers ENOSPC (or any errno) to refuse it, as a full metadata space would; null
    /// turns it off. It runs on the thread starting the transaction.</summary>
    public void InjectTransactionStartFaults(Func<Errno>? fault) => Fs.StartFault = fault;

    /// <summary>Quota groups: id, referenced, exclusive, limits, reserved data bytes.</summary>
    public IReadOnlyList<(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive, ulong RsvData)> Qgroups() => Fs.Quota.Snapshot();
    public bool QuotaEnabled => Fs.Quota.Enabled;

    /// <summary>Turns quotas on: every subvolume gets its EXTENT_OWNER_REFs and every group a
    /// full count (snapshots and clones included, docs/SNAPSHOTS.md §3), then commits. Waits for
    /// deleted subvolumes to be dropped first: EBUSY while one waits for files of it to be
    /// closed.</summary>
    public Errno EnableQuota() => Guard(0, () =>
    {
        var busy = SyncSubvolumeDeletions();
        if (busy != Errno.OK) return busy;
        using var ops = SubvolumeOps.Lock(); // no subvolume appears or goes meanwhile
        Sync();
        Fs.EnableQuota();
        return Errno.OK;
    });

    /// <summary>Turns quotas off: limits stop holding and every group, relation and limit is
    /// deleted (as btrfs's quota disable; enabling again counts everything afresh). Writes in
    /// flight keep their reservations, counted per subvolume. ENOTCONN if quotas are off; EBUSY
    /// while a deleted subvolume waits for files of it to be closed (its drop will account
    /// what it frees to its groups).</summary>
    public Errno DisableQuota() => Guard(0, () =>
    {
        if (!Fs.Quota.Enabled) return Errno.ENOTCONN; // already off: no wait (and asked again below)
        var busy = SyncSubvolumeDeletions();
        if (busy != Errno.OK) return busy;
        using var ops = SubvolumeOps.Lock(); // no subvolume appears or goes meanwhile
        return Fs.DisableQuota() ? Errno.OK : Errno.ENOTCONN;
    });

    /// <summary>Limits the referenced bytes of the top-level subvolume's qgroup (0/5).</summary>
    public Errno SetQuotaLimit(ulong maxReferenced, ulong maxExclusive = ulong.MaxValue) =>
        Guard(0, () => { Fs.SetQgroupLimit(Top.Id, maxReferenced, maxExclusive); return Errno.OK; });

    /// <summary>Creates qgroup <paramref name="qgroupId"/> (level 1 or above: level-0 groups come
    /// and go with their subvolumes); ENOTCONN with quotas off, EEXIST, EINVAL for level 0.</summary>
    public Errno CreateQgroup(ulong qgroupId) => Guard(0, () => Fs.ChangeQgroups(() => Fs.Quota.Create(qgroupId)));

    /// <summary>Destroys a qgroup of level 1 or above; EBUSY while it has members.</summary>
    public Errno DestroyQgroup(ulong qgroupId) => Guard(0, () => Fs.ChangeQgroups(() => Fs.Quota.Destroy(qgroupId)));

    /// <summary>Makes <paramref name="child"/> a member of <paramref name="parent"/> (a higher
    /// level): writes into the child's subvolumes then reserve against the parent's limits too,
    /// all or nothing, and the parent counts their bytes.</summary>
    public Errno AssignQgroup(ulong child, ulong parent) => Guard(0, () => Fs.ChangeQgroupRelation(child, parent, add: true));

    /// <summary>Ends <paramref name="child"/>'s membership of <paramref name="parent"/>.</summary>
    public Errno RemoveQgroupRelation(ulong child, ulong parent) => Guard(0, () => Fs.ChangeQgroupRelation(child, parent, add: false));

    /// <summary>Recounts every qgroup from the trees at once (btrfs's `quota rescan`, which here
    /// never turns limits off); <paramref name="corrected"/> is how many groups' numbers the
    /// recount changed, 0 unless the accounting was wrong. ENOTCONN with quotas off.</summary>
    public Errno RescanQuota(out int corrected)
    {
        int moved = 0;
        var e = Guard(0, () =>
        {
            var (r, c) = Fs.RescanQuota();
            moved = c;
            return r;
        });
        corrected = moved;
        return e;
    }

    /// <summary>Every qgroup relation as (member, parent).</summary>
    public IReadOnlyList<(ulong Child, ulong Parent)> QgroupRelations() => Fs.Quota.Relations();

    /// <summary>Limits any existing qgroup by id (level/id); ENOENT if there is none, ENOTCONN
    /// with quotas off.</summary>
    public Errno SetQgroupLimit(ulong qgroupId, ulong maxReferenced, ulong maxExclusive) =>
        Guard(0, () =>
        {
            if (!Fs.Quota.Enabled) return Errno.ENOTCONN;
            if (!Fs.Quota.Exists(qgroupId)) return Errno.ENOENT;
            Fs.SetQgroupLimitById(qgroupId, maxReferenced, maxExclusive);
            return Errno.OK;
        });

    /// <summary>Sets one limit of any existing qgroup (its referenced bytes, or with
    /// <paramref name="exclusive"/> its exclusive bytes; <see cref="ulong.MaxValue"/> for none)
    /// and keeps the other, as btrfs's `qgroup limit [-e]` does; ENOENT if there is no such
    /// group, ENOTCONN with quotas off.</summary>
    public Errno LimitQgroup(ulong qgroupId, ulong max, bool exclusive = false) =>
        Guard(0, () =>
        {
            if (!Fs.Quota.Enabled) return Errno.ENOTCONN;
            if (!Fs.Quota.Exists(qgroupId)) return Errno.ENOENT;
            Fs.SetQgroupLimitById(qgroupId, exclusive ? null : max, exclusive ? max : null);
            return Errno.OK;
        });

    /// <summary>Limits the qgroup of subvolume <paramref name="subvolumeId"/> (0/id); ENOENT if
    /// there is no such subvolume, EINVAL if quotas are off.</summary>
    public Errno SetQuotaLimit(ulong subvolumeId, ulong maxReferenced, ulong maxExclusive) =>
        Guard(0, () =>
        {
            if (Fs.FsTree(subvolumeId) == null) return Errno.ENOENT;
            Fs.SetQgroupLimit(subvolumeId, maxReferenced, maxExclusive);
            return Errno.OK;
        });

    /// <summary>
    /// statfs as seen from <paramref name="node"/>: the filesystem's figures, or, when a limit
    /// holds for writes there (on the subvolume's group or any group above it, referenced or
    /// exclusive), the one that leaves the least room: its limit as the size and what is left
    /// under it as free and available (never more than the filesystem has), as XFS project
    /// quotas and CephFS quotas show in df. Reserved bytes (writes not yet accounted) count as
    /// used, as they do when a write reserves.
    /// </summary>
    public Errno StatFs(ulong node, out StatFsInfo st)
    {
        StatFs(out st);
        if (!Fs.Quota.Enabled) return Errno.OK;
        var (tree, _) = NodeIds.Decode(node);
        ulong bs = st.BlockSize, bestRoom = ulong.MaxValue, bestMax = 0;
        foreach (var g in Fs.Quota.ChainOf(tree))
            foreach (var (max, usage) in new[] { (g.MaxReferenced, g.Referenced), (g.MaxExclusive, g.Exclusive) })
            {
                if (max == ulong.MaxValue) continue;
                ulong room = max - Math.Min(max, usage + g.RsvData);
                if (room < bestRoom) (bestRoom, bestMax) = (room, max);
            }
        if (bestRoom == ulong.MaxValue) return Errno.OK;
        ulong total = bestMax / bs, free = Math.Min(Math.Min(total, bestRoom / bs), st.BlocksAvail);
        st = st with { Blocks = total, BlocksFree = free, BlocksAvail = free };
        return Errno.OK;
    }

    public SpaceReport Space()
    {
        var s = Fs.Space;
        return new SpaceReport(s.DeviceSize, s.Data.Total, s.Data.Used + s.Data.Reserved, s.Data.Pinned, s.Data.MayUse,
            s.Meta.Total, s.Meta.Used, s.Meta.Pinned, s.Meta.MayUse, s.UnallocatedBytes, s.GlobalReserve,
            s.Data.Underflows + s.Meta.Underflows, DeviceSlack: Fs.Device.ProbeSize() is var dev && dev > s.DeviceSize ? dev - s.DeviceSize : 0);
    }

    public IReadOnlyList<BlockGroupInfo> BlockGroups() =>
        Fs.Space.Groups.Select(g => new BlockGroupInfo(g.Start, g.Length, g.Flags.ToString().ToLowerInvariant(), g.Used, g.Capacity)).ToList();

    public Errno StatFs(out StatFsInfo st)
    {
        var s = Fs.Space;
        ulong bs = (ulong)Fs.BlockSize;
        ulong total = s.UsableBytes / bs;
        ulong used = Math.Min(total, (s.Data.Used + s.Data.Reserved + s.Meta.Used + s.Data.Pinned + s.Meta.Pinned) / bs);
        ulong avail = Math.Min(total - used, s.DataAvailable / bs);
        // No inode table: inodes are made as space allows, so there is no count to give (btrfs
        // answers 0 and 0 too, and df -i shows "-"; the free blocks given as free inodes made an
        // empty filesystem look 7% full of inodes).
        st = new StatFsInfo((uint)bs, total, total - used, avail, 0, 0, FormatConstants.MaxNameLength, Fs.Fsid);
        return Errno.OK;
    }

    private bool _disposed;

    /// <summary>Unmount: write back and finish everything, stop the flusher and completion
    /// workers, commit, then check that no reservation is left (a leak is reported in
    /// <see cref="LeakReports"/>).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        StopCleaner(); // between two batches; the next mount resumes what is left
        if (!Fs.ReadOnly && Fs.FailedReason == null)
        {
            // The ORIGIN_DROPs still pending go to disk with the last commit, for the next mount.
            Fs.WriteAllOriginDropsAtNextCommit = true;
            try { Sync(); } catch (FsException) { }
        }
        Data.Dispose();
        Fs.Dispose();
        if (!Fs.ReadOnly && Fs.FailedReason == null) Data.CheckUnmount();
    }

    // ------------------------------------------------------------------ helpers

    internal static InodeAttr ToAttr(ulong ino, in InodeItem i, int blockSize) => new(
        ino, i.Mode, i.Nlink, i.Uid, i.Gid, i.Rdev, i.FileSize, (i.Nbytes + 511) / 512, (uint)blockSize,
        i.Atime, i.Mtime, i.Ctime, i.Otime, i.Generation, (ulong)i.Flags);

    /// <summary>The attributes of an inode; its byte count (st_blocks) includes what its dirty
    /// and in-flight data will add (<see cref="Data.DataEngine.NewDelallocBytes"/>), as on ext4
    /// and btrfs. Caller holds the inode lock and no tree lock.</summary>
    internal InodeAttr Attr(Inode inode)
    {
        var item = inode.Item;
        ulong pending = Data.NewDelallocBytes(inode, out ulong nbytes);
        item.Nbytes = nbytes + pending;
        return ToAttr(inode.NodeId, item, Fs.BlockSize);
    }

    internal static Errno CheckName(ReadOnlySpan<byte> name)
    {
        if (name.Length == 0) return Errno.ENOENT;
        if (name.Length > FormatConstants.MaxNameLength) return Errno.ENAMETOOLONG;
        if (name.IndexOf((byte)'/') >= 0 || name.IndexOf((byte)0) >= 0) return Errno.EINVAL;
        if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) return Errno.EINVAL;
        return Errno.OK;
    }

    internal static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>
    /// Runs an operation and turns engine exceptions into errno values: corruption and device
    /// errors are logged with their inode and block and answered EIO (EUCLEAN stays EUCLEAN),
    /// so that no exception crosses the public API. An exception raised while a transaction
    /// handle that has begun changing trees is open means the operation stopped halfway: the
    /// transaction is aborted (the filesystem takes no more writes and the image keeps its last
    /// commit), as btrfs does. The filter runs before the handle's Dispose, which is what lets
    /// it see the handle.
    /// </summary>
    internal Errno Guard(ulong ino, Func<Errno> op)
    {
        try { return op(); }
        catch (Exception ex) when (Guards(ino, ex)) { return Answer(ino, ex); }
    }

    /// <summary><see cref="Guard"/>'s exception filter, for a hot path that cannot afford
    /// Guard's closure (one per call: <c>bench --alloc</c> shows it) and writes the try itself:
    /// <c>catch (Exception ex) when (Guards(ino, ex)) { return Answer(ino, ex); }</c>.</summary>
    private bool Guards(ulong ino, Exception ex) =>
        ex is not Common.Concurrency.SchedulerAbortedException && AbortIfMidTransaction(ino, ex);

    /// <summary>The errno <see cref="Guard"/> answers for an exception its filter took.</summary>
    private Errno Answer(ulong ino, Exception ex)
    {
        if (ex is FsException fe)
        {
            if (fe.Errno is Errno.ENOSPC or Errno.EDQUOT or Errno.EROFS or Errno.EMLINK or Errno.EBUSY) return fe.Errno;
            Fs.Warn($"inode {(fe.Inode != 0 ? fe.Inode : ino)}: {fe.Message}");
            return fe.Errno == Errno.EUCLEAN ? Errno.EUCLEAN : Errno.EIO;
        }
        Fs.Warn($"inode {ino}: internal error: {ex}");
        return Errno.EIO;
    }

    private bool AbortIfMidTransaction(ulong ino, Exception ex)
    {
        if (Tx.TransHandle.ChangingOnThisThread > 0)
            Fs.MarkFailed($"operation on inode {ino} failed with a transaction open ({ex.GetType().Name}: {ex.Message}); transaction aborted");
        return true;
    }

    /// <summary>Acquires a reference on each inode (by number), or returns the first error.</summary>
    internal Errno Get(ulong ino, out Inode inode)
    {
        // Guarded by hand: every operation starts here, and Guard's closure would be an
        // allocation per read and per write.
        try
        {
            var (treeId, inTree) = NodeIds.Decode(ino);
            var sv = SubvolumeOf(treeId);
            if (sv != null) return sv.Acquire(inTree, out inode);
            inode = null!;
            // A deleted subvolume: only what its files open at the deletion still reach.
            return DeadSubvolumeOf(treeId) is { } dead ? dead.Acquire(inTree, out inode) : Errno.ENOENT;
        }
        catch (Exception ex) when (Guards(ino, ex))
        {
            inode = null!;
            return Answer(ino, ex);
        }
    }

    /// <summary><see cref="Get"/> for an operation that changes the inode (or, for a
    /// directory, its entries): EROFS when its subvolume is read-only.</summary>
    internal Errno GetWritable(ulong ino, out Inode inode)
    {
        var e = Get(ino, out inode);
        if (e != Errno.OK) return e;
        if (!inode.Subvol.ReadOnly) return Errno.OK;
        Put(inode);
        inode = null!;
        return Errno.EROFS;
    }

    internal void Put(Inode? inode)
    {
        if (inode != null) inode.Subvol.Release(inode);
    }

    internal static void Touch(ref InodeItem i, ulong transid, bool mtime = true)
    {
        var now = Timespec.Now();
        i.Ctime = now;
        if (mtime) i.Mtime = now;
        i.Sequence++;
        i.Transid = transid;
    }
}

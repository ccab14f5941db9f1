using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Tx;

public sealed class MountOptions
{
    public bool ReadOnly { get; set; }
    /// <summary>Commit the running transaction at least this often (btrfs commit=N, default 30 s).
    /// 0 disables the periodic committer.</summary>
    public int CommitIntervalMs { get; set; } = 30_000;
    /// <summary>Clean tree nodes kept in memory.</summary>
    public long NodeCacheBytes { get; set; } = 256L << 20;
    /// <summary>Dirty metadata that triggers a background commit; four times this forces the
    /// operation that crossed it to commit before returning (back-pressure).</summary>
    public long DirtyCommitBytes { get; set; } = 64L << 20;
    /// <summary>fsync of a file whose only changes are to its data, size, times and mode
    /// writes one fsync log block and flushes, instead of committing (SPEC.md §9). Off: every
    /// fsync commits (btrfs's notreelog).</summary>
    public bool FsyncLog { get; set; } = true;
    /// <summary>Quota accounting gives an extent an entry in memory (a cursor over subvolume
    /// ids and the referrers known) once a search for its referrers passes over this many
    /// snapshots that no longer reference it (docs/SNAPSHOTS.md §3, "Cost"). Tuning and tests;
    /// 0 gives every extent searched an entry.</summary>
    public int ReferrerEntryAfter { get; set; } = 32;
    /// <summary>Quota accounting works out the common extents (written alone, let go of) while
    /// the transaction runs, in a worker, and the commit takes those answers that still hold
    /// (docs/SNAPSHOTS.md §3, "Early accounting"). Off: the commit works out every extent.</summary>
    public bool EarlyAccounting { get; set; } = true;
    /// <summary>When reading a file's data or listing a directory updates its atime (Linux's
    /// relatime by default; FUSE leaves atime to the filesystem).</summary>
    public AtimeMode Atime { get; set; } = AtimeMode.Relatime;
    /// <summary>Whether what commits free is discarded (an image file gets holes punched, so
    /// it shrinks on the host as files go): <see cref="DiscardMode.Sync"/> in the commit,
    /// <see cref="DiscardMode.Async"/> by a worker after it. Off: run fstrim
    /// (<see cref="Filesystem.Trim"/>) now and then.</summary>
    public DiscardMode Discard { get; set; }
    /// <summary>Listing a directory leaves its atime alone (nodiratime).</summary>
    public bool NoDirAtime { get; set; }
    public IScheduler Scheduler { get; set; } = RealScheduler.Instance;
    /// <summary>Where engine warnings go (leaks, repaired counters, fallbacks).</summary>
    public Action<string>? Log { get; set; }
}

/// <summary>btrfs's discard mount options.</summary>
public enum DiscardMode
{
    /// <summary>nodiscard: fstrim discards free space when it runs.</summary>
    Off,
    /// <summary>discard=sync (and plain discard): each commit discards what it freed once it is
    /// durable, before the space can be allocated again; the commit waits for the device.</summary>
    Sync,
    /// <summary>discard=async: what a commit freed is free at once and queued; a worker
    /// discards each range that is still free when its turn comes (one allocated again
    /// meanwhile is left), so no commit waits for the device.</summary>
    Async,
}

/// <summary>The mount's atime policy, as the kernel's mount options name them.</summary>
public enum AtimeMode
{
    /// <summary>Updated when it is not later than the mtime or ctime, or a day old (the default).</summary>
    Relatime,
    /// <summary>Never updated by reading.</summary>
    NoAtime,
    /// <summary>Updated by every read (strictatime).</summary>
    StrictAtime,
}

public sealed class MkfsOptions
{
    public int BlockSize { get; set; } = Format.FormatConstants.DefaultBlockSize;
    public int NodeSize { get; set; } = Format.FormatConstants.DefaultNodeSize;
    public string Label { get; set; } = "";
    public Guid? Uuid { get; set; }
    /// <summary>Owner of the root directory (mke2fs's root_owner): the user who makes the
    /// filesystem, so that an ordinary user can use what they mount.</summary>
    public uint RootUid { get; set; }
    public uint RootGid { get; set; }
}

/// <summary>Counters for tests and `inspect`; incremented without locks (Interlocked).</summary>
public sealed class EngineStats
{
    public long Commits;
    /// <summary>Data extents and tree blocks moved by shrinks (FsInfo.Relocate.cs).</summary>
    public long RelocatedDataExtents, RelocatedTreeBlocks;
    public long ReservationOverruns;
    public long NodesWritten;
    public long DataBytesWritten;
    public long CommitMicrosTotal;
    public long CommitMicrosMax;
    /// <summary>The commit's phases (their sum is a little under <see cref="CommitMicrosTotal"/>):
    /// quota accounting of the transaction's EXTENT_OWNER_REF transitions (and recounts), folding
    /// delayed refs, block group, qgroup and root items into their trees, writing the dirty
    /// nodes, and the superblock with the device flush.</summary>
    public long CommitAccountingMicros, CommitFoldMicros, CommitWriteMicros, CommitFlushMicros;
    /// <summary>fsyncs made durable by a log block instead of a commit, and log records a
    /// mount replayed.</summary>
    public long FsyncLogWrites, LogRecordsReplayed;
    /// <summary>The commit's lookups of a subvolume's EXTENT_OWNER_REF while accounting, and the
    /// referrer entries it started keeping (docs/SNAPSHOTS.md §3, "Cost").</summary>
    public long OwnerRefProbes, ReferrerEntriesKept;
    /// <summary>Referrer entries read from their REFERRER_ENTRY items (after a mount, or after
    /// memory had to let them go) and items written by commits.</summary>
    public long ReferrerEntriesLoaded, ReferrerEntriesWritten;
    /// <summary>Candidates a group question ("does any other member, or anyone outside,
    /// reference it?") walked for want of a smaller side to walk, and ids a group side's cursor
    /// passed; and the group sides made (or started again after a membership changed by hand).</summary>
    public long GroupCandidatesWalked, GroupSidesStarted;
    /// <summary>Subvolume ids the referrer entries' cursors passed (docs/SNAPSHOTS.md §3, "Cost").</summary>
    public long EntryIdsWalked;
    /// <summary>Memberships made or ended with their numbers worked out from the subvolume's own
    /// extents, and recounts of every tree (a rescan, a group of level 1 or above joining one).</summary>
    public long RelationsWorkedOut, QuotaRecounts;
    /// <summary>ORIGIN_DROPs noted again from the trees (after a crash lost the pending ones,
    /// at the upgrade from quota version 3, when quotas are turned on).</summary>
    public long OriginDropsRederived;
    /// <summary>The early accounting: extents it worked out that the commit took as accounted,
    /// and those the commit worked out itself after all (changed since, or another case);
    /// its EXTENT_OWNER_REF lookups, and its worker's time; how many of its answers were for
    /// an extent let go of while groups of level 1 and above exist (taken or not), and how many
    /// questions about who else on one side of such a group has an extent it asked; and how
    /// many answers were for an extent taken by a clone or with SHARED_ROOT_REFs or
    /// ORIGIN_DROPs (clones' origins, origins that let go), and how many for an extent taken
    /// by a clone while groups of level 1 and above exist.</summary>
    public long EarlyTaken, EarlyLeftToCommit, EarlyProbes, EarlyMicros, EarlyGroupAnswers, EarlyGroupSearches, EarlySharedAnswers, EarlyGroupCloneAnswers;
}

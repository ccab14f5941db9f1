using Reservoir.Common.Collections;
using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Inodes;

/// <summary>One cached block of a file (the kernel's struct page of an address_space). Fields
/// guarded by the mapping's state lock; the frame's bytes by the page lock, or by State for
/// copies made under it. The frame goes back to the arena only when the page leaves the cache
/// unlocked and not under writeback (<see cref="PageArena"/>).</summary>
internal sealed class Page(long index, PageFrame frame)
{
    public readonly long Index = index;
    public readonly PageFrame Frame = frame;
    public Span<byte> Data => Frame.Span;
    public bool Uptodate;
    public bool Dirty;
    public bool Writeback;
    /// <summary>The page lock (held by writeback while it snapshots the page, by page-fault
    /// writes while they dirty it, by invalidation).</summary>
    public bool Locked;
    public long DirtiedMs;
    public long LastUsed;
}

/// <summary>
/// A regular file's page cache and data-path state (Linux's address_space): cached pages, the
/// reservation ledger, the extent status cache and the ordered extents.
///
/// Locks:
/// - <see cref="State"/> (leaf lock) guards every field below and every Page's fields; it is
///   held only for short critical sections and never across IO or another lock, and its
///   Monitor-style wait is how page locks and ordered extents are waited for;
/// - <see cref="DataSem"/> is ext4's i_data_sem: exclusive to change what backs a range
///   (delalloc reservation plus Delayed status, fallocate's unwritten extents), shared to look.
///   Order: inode lock → page locks (ascending) → DataSem → transaction handle → tree locks →
///   State. Writers and page-fault writes reserve with their pages locked, so writeback (which
///   needs the page locks) never turns a reservation into an ordered extent in between.
/// </summary>
internal sealed class Mapping
{
    public readonly Inode Inode;
    /// <summary>The subvolume of the inode: its tree holds the file's extents, its qgroup is
    /// charged for the file's data.</summary>
    public Subvolume Subvol => Inode.Subvol;
    public readonly FsMutex State;
    public readonly FsRwLock DataSem;
    public readonly Dictionary<long, Page> Pages = new();
    public readonly SparseBitSet DirtyPages = new();
    public readonly ExtentIoTree Ledger = new();
    public readonly ExtentStatusTree Es = new();
    public readonly SortedDictionary<ulong, OrderedExtent> Ordered = new();
    /// <summary>Metadata reserved for the ordered extents the dirty ranges will become.</summary>
    public ulong MetaRsv;
    /// <summary>Pages with Writeback set (guarded by State): lets a waiting writeback skip the
    /// look for other threads' pages in flight when there are none.</summary>
    public int PagesInWriteback;
    /// <summary>How many ordered extents the dirty ranges may become (btrfs's outstanding_extents).</summary>
    public int OutstandingExtents;
    /// <summary>Size as written to the inode item: only data that reached its extents.</summary>
    public ulong DiskSize;
    /// <summary>A writeback or completion failed since the last fsync (reported once, as EIO).</summary>
    public bool WriteError;
    /// <summary>Sequential read detection.</summary>
    public long NextReadahead = -1;
    /// <summary>Pages currently in the global page cache budget.</summary>
    public int CachedPages => Pages.Count;

    public Mapping(Inode inode, IScheduler sched)
    {
        Inode = inode;
        State = sched.CreateMutex($"mapping-{inode.Ino}");
        DataSem = sched.CreateRwLock($"i_data_sem-{inode.Ino}");
        DiskSize = inode.Item.FileSize;
    }

    public bool HasState => Pages.Count > 0 || Ordered.Count > 0 || !Ledger.IsEmpty || MetaRsv > 0;

    /// <summary>Whether an ordered extent overlaps [start, end). Caller holds State.</summary>
    public bool AnyOrderedIn(ulong start, ulong end)
    {
        if (Ordered.Count == 0) return false; // the common case, without an enumerator
        foreach (var o in Ordered.Values)
        {
            if (o.FileOffset >= end) break; // keyed by file offset, ascending
            if (o.End > start) return true;
        }
        return false;
    }
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Format;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// Owns the device's space: block groups, their free ranges, the data and metadata
/// <see cref="SpaceInfo"/> counters, reservations and pinned extents.
///
/// The device after its first MiB is cut into slots of <see cref="GroupSize"/> bytes; a slot is
/// either unallocated or one block group. Reservations may promise unallocated slots (a group
/// is created when an allocation needs it), checked slot by slot so that a promise can always
/// be kept: once <see cref="Reserve"/> succeeds, the matching allocations cannot fail.
///
/// Metadata keeps <see cref="GlobalReserve"/> bytes out of ordinary reservations: commits draw
/// on it for extent-tree updates, and deletions may use it so that a full filesystem can
/// always be emptied.
/// </summary>
internal sealed partial class SpaceManager
{
    private readonly FsMutex _lock; // guards every field below and every BlockGroup's mutable state
    private readonly List<BlockGroup> _groups = new();
    private readonly List<(ulong Start, ulong Len, BlockGroup Group)> _pinned = new();
    private ulong[] _superblocks; // the copies inside the filesystem (changes with a resize)
    /// <summary>The filesystem's size (total_bytes); changes only in a commit that resizes
    /// (SpaceManager.Resize.cs), under the lock.</summary>
    public ulong DeviceSize { get; private set; }
    public int BlockSize { get; }
    public int NodeSize { get; }
    public ulong GroupSize { get; }
    public ulong GlobalReserve { get; private set; }
    public ulong MaxDataExtent { get; }
    public SpaceInfo Data { get; } = new("data");
    public SpaceInfo Meta { get; } = new("metadata");

    public SpaceManager(IScheduler sched, ulong deviceSize, int blockSize, int nodeSize, ulong groupSize)
    {
        _lock = sched.CreateMutex("space");
        DeviceSize = deviceSize;
        BlockSize = blockSize;
        NodeSize = nodeSize;
        GroupSize = groupSize;
        _superblocks = SuperblocksWithin(deviceSize);
        GlobalReserve = GlobalReserveFor(deviceSize, nodeSize);
        // One checksum item per data extent must fit a quarter of a leaf (SPEC.md §5.5).
        MaxDataExtent = Math.Min(8UL << 20, (ulong)(nodeSize / 16) * (ulong)blockSize);
    }

    private static ulong[] SuperblocksWithin(ulong size) =>
        FormatConstants.SuperblockOffsets.Where(o => o + FormatConstants.SuperblockSize <= size).ToArray();

    /// <summary>Metadata kept back for commits and deletions: 1/32 of the space, from 8 nodes
    /// to 512 MiB.</summary>
    private static ulong GlobalReserveFor(ulong size, int nodeSize) =>
        Math.Clamp((size - FormatConstants.ReservedPrefix) / 32, 8UL * (ulong)nodeSize, 512UL << 20) / (ulong)nodeSize * (ulong)nodeSize;

    private IEnumerable<(ulong Start, ulong Len)> Slots()
    {
        for (ulong s = FormatConstants.ReservedPrefix; s < DeviceSize; s += GroupSize)
        {
            ulong len = Math.Min(GroupSize, DeviceSize - s);
            if (Geometry.UsableSlot(len, NodeSize)) yield return (s, len);
        }
    }

    /// <summary>Capacity a slot would have as a group of this kind.</summary>
    private ulong SlotCapacity(ulong start, ulong len, BlockGroupFlags flags)
    {
        ulong cap = len;
        foreach (var (s, l) in Excluded(start, len, flags)) cap -= l;
        if (flags == BlockGroupFlags.Metadata) cap = cap / (ulong)NodeSize * (ulong)NodeSize;
        else cap = cap / (ulong)BlockSize * (ulong)BlockSize;
        return cap;
    }

    /// <summary>Superblock copies inside a group: never allocated. Metadata groups lose the
    /// whole node-aligned span around a copy, data groups the block-aligned span.</summary>
    private IEnumerable<(ulong Start, ulong Len)> Excluded(ulong start, ulong len, BlockGroupFlags flags)
    {
        ulong unit = flags == BlockGroupFlags.Metadata ? (ulong)NodeSize : (ulong)BlockSize;
        foreach (var sb in _superblocks)
        {
            ulong a = Units.AlignDown(sb, unit), b = Units.AlignUp(sb + FormatConstants.SuperblockSize, unit);
            a = Math.Max(a, start); b = Math.Min(b, start + len);
            if (a < b) yield return (a, b - a);
        }
    }

    // ------------------------------------------------------------------ groups

    /// <summary>Registers a group (from its item at mount, or when creating one). All of its
    /// space starts free; mount then marks extents allocated.</summary>
    public BlockGroup AddGroup(ulong start, ulong len, BlockGroupFlags flags, bool onDisk)
    {
        using var _ = _lock.Lock();
        return AddGroupUnsynchronized(start, len, flags, onDisk);
    }

    private BlockGroup AddGroupUnsynchronized(ulong start, ulong len, BlockGroupFlags flags, bool onDisk)
    {
        if (start < FormatConstants.ReservedPrefix || start + len > DeviceSize || len > GroupSize || (start - FormatConstants.ReservedPrefix) % GroupSize != 0)
            throw new CorruptionException($"block group [{start}, +{len}) is not a slot of this device");
        if (_groups.Any(g => g.Start == start)) throw new CorruptionException($"duplicate block group at {start}");
        var g = new BlockGroup(start, len, flags) { OnDisk = onDisk, Dirty = !onDisk };
        g.Free.Add(start, len);
        foreach (var (s, l) in Excluded(start, len, flags)) g.Free.Remove(s, l);
        // Trim the unaligned tail so the free map only holds whole allocation units.
        ulong unit = flags == BlockGroupFlags.Metadata ? (ulong)NodeSize : (ulong)BlockSize;
        g.Capacity = SlotCapacity(start, len, flags);
        if (g.Free.FreeBytes != g.Capacity)
        {
            var ranges = g.Free.Ranges.ToList();
            foreach (var (s, l) in ranges)
            {
                ulong a = Units.AlignUp(s, unit), b = Units.AlignDown(s + l, unit);
                if (a > s) g.Free.Remove(s, Math.Min(a - s, l));
                if (b < s + l && b >= a) g.Free.Remove(b, s + l - b);
            }
            g.Capacity = g.Free.FreeBytes;
        }
        _groups.Add(g);
        _groups.Sort((x, y) => x.Start.CompareTo(y.Start));
        Kind(flags).Total += g.Capacity;
        return g;
    }

    private SpaceInfo Kind(BlockGroupFlags f) => f == BlockGroupFlags.Data ? Data : Meta;

    public IReadOnlyList<BlockGroup> Groups
    {
        get { using var _ = _lock.Lock(); return _groups.ToList(); }
    }

    public BlockGroup? GroupOf(ulong bytenr)
    {
        using var _ = _lock.Lock();
        return GroupOfUnsynchronized(bytenr);
    }

    private BlockGroup? GroupOfUnsynchronized(ulong bytenr)
    {
        int lo = 0, hi = _groups.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            var g = _groups[mid];
            if (bytenr < g.Start) hi = mid - 1;
            else if (bytenr >= g.End) lo = mid + 1;
            else return g;
        }
        return null;
    }

    /// <summary>At mount: an extent found in the extent tree is in use.</summary>
    public void MarkAllocated(ulong start, ulong len, bool isData)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start);
        if (g == null || start + len > g.End) throw new CorruptionException($"extent [{start}, +{len}) lies outside every block group", start);
        if (g.IsData != isData) throw new CorruptionException($"{(isData ? "data" : "tree block")} extent [{start}, +{len}) in a {g.Flags} block group", start);
        if (!g.Free.Remove(start, len)) throw new CorruptionException($"extent [{start}, +{len}) overlaps another extent or a superblock", start);
        g.Used += len;
        Kind(g.Flags).Used += len;
    }

    public ulong UnallocatedBytes
    {
        get { using var _ = _lock.Lock(); return FreeSlots().Aggregate(0UL, (a, s) => a + s.Len); }
    }

    private IEnumerable<(ulong Start, ulong Len)> FreeSlots(ulong end = ulong.MaxValue) =>
        Slots().Where(s => GroupOfUnsynchronized(s.Start) == null && s.Start + s.Len <= end);

    // ------------------------------------------------------------------ reservations

    /// <summary>
    /// Promises bytes of one kind (may_use). Fails with ENOSPC unless the promise can be kept
    /// from free space in existing groups plus unallocated slots, leaving the global reserve
    /// free unless <paramref name="useGlobalReserve"/>.
    /// </summary>
    public Errno Reserve(bool data, ulong bytes, bool useGlobalReserve = false)
    {
        using var _ = _lock.Lock();
        ulong mExtra = data ? 0 : bytes, dExtra = data ? bytes : 0;
        // Space a commit freed may still be on its way back through discard (-o discard): wait
        // for it before answering ENOSPC.
        while (!CanKeepUnsynchronized(mExtra, dExtra, useGlobalReserve, out bool dataShort))
        {
            // Space the host has not given its room yet (a sparse image): ask for one more
            // group's or slot's, and look again (SpaceManager.HostRoom.cs).
            if (MakeRoomUnsynchronized(dataShort)) continue;
            if (_discarding == 0) return Errno.ENOSPC;
            _lock.Wait();
        }
        (data ? Data : Meta).MayUse += bytes;
        return Errno.OK;
    }

    private bool CanKeepUnsynchronized(ulong mExtra, ulong dExtra, bool useGlobal) => CanKeepUnsynchronized(mExtra, dExtra, useGlobal, out _);

    /// <summary>Whether the promises so far and these extra bytes can all be kept from space
    /// that has its room on the host; if not, <paramref name="dataShort"/> says which kind
    /// falls short (metadata is counted first).</summary>
    private bool CanKeepUnsynchronized(ulong mExtra, ulong dExtra, bool useGlobal, out bool dataShort)
    {
        long mDef = -(Meta.Free - RoomlessFree(data: false) - (long)mExtra - (useGlobal ? 0 : (long)GlobalReserve));
        long dDef = -(Data.Free - RoomlessFree(data: true) - (long)dExtra);
        dataShort = false;
        if (mDef <= 0 && dDef <= 0) return true;
        // Cover each deficit with whole unallocated slots, largest first. Every slot is one
        // group long except perhaps a shorter last one, so "largest first" is the full slots,
        // then the short one; counted without building a list (every reservation gets here
        // once the allocated groups are promised away).
        int full = 0;
        ulong shortLen = 0;
        for (ulong s = FormatConstants.ReservedPrefix; s < DeviceSize; s += GroupSize)
        {
            ulong len = Math.Min(GroupSize, DeviceSize - s);
            if (!Geometry.UsableSlot(len, NodeSize) || GroupOfUnsynchronized(s) != null || !SlotHasRoom(s)) continue; // as Slots()
            if (len == GroupSize) full++; else shortLen = len;
        }
        int taken = 0, total = full + (shortLen > 0 ? 1 : 0);
        ulong SlotLen(int i) => i < full ? GroupSize : shortLen;
        while (mDef > 0 && taken < total) mDef -= (long)(SlotLen(taken++) - 2UL * (ulong)NodeSize);
        while (dDef > 0 && taken < total) dDef -= (long)(SlotLen(taken++) - 2UL * (ulong)BlockSize);
        dataShort = mDef <= 0;
        return mDef <= 0 && dDef <= 0;
    }

    public void Release(bool data, ulong bytes)
    {
        if (bytes == 0) return;
        using var _ = _lock.Lock();
        var k = data ? Data : Meta;
        SpaceInfo.Sub(ref k.MayUse, bytes, k);
    }

    // ------------------------------------------------------------------ allocation

    /// <summary>Allocates one tree node. With <paramref name="fromReservation"/> the bytes move
    /// from may_use to used; otherwise (commit, overruns) they come straight from free space.
    /// With <paramref name="belowFence"/> (a relocation's copies) only space below a shrink's
    /// fence will do; otherwise the fence is a preference (SpaceManager.Fence.cs).</summary>
    public ulong AllocNode(bool fromReservation, bool belowFence = false)
    {
        using var _ = _lock.Lock();
        if (_fence != 0)
        {
            ulong at = AllocNodeUnsynchronized(fromReservation, _fence);
            if (at != 0) return at;
            if (belowFence) throw new FsException(Errno.ENOSPC, $"metadata space below {Units.Human(_fence)} exhausted");
        }
        return AllocNodeUnsynchronized(fromReservation, ulong.MaxValue) is var a and not 0 ? a
            : throw new FsException(Errno.ENOSPC, "metadata space exhausted: no free node and no unallocated space");
    }

    /// <summary>A node below <paramref name="end"/>, or 0 (never an address: the first MiB
    /// holds no group).</summary>
    private ulong AllocNodeUnsynchronized(bool fromReservation, ulong end)
    {
        // Space with its room on the host first (what reservations count). A trim or discard
        // since a reservation was made may have taken the room of what it counted: then the
        // room is asked for again, and only if the host has none is the rest taken, where the
        // host decides at the write as before (SpaceManager.HostRoom.cs).
        ulong at = AllocNodeFrom(fromReservation, end, roomyOnly: TracksRoom);
        while (at == 0 && TracksRoom && MakeRoomUnsynchronized(data: false)) at = AllocNodeFrom(fromReservation, end, roomyOnly: true);
        return at != 0 || !TracksRoom ? at : AllocNodeFrom(fromReservation, end, roomyOnly: false);
    }

    private ulong AllocNodeFrom(bool fromReservation, ulong end, bool roomyOnly)
    {
        ulong ns = (ulong)NodeSize;
        while (true)
        {
            foreach (var g in _groups)
            {
                if (g.IsData || (roomyOnly && !g.HasRoom) || g.Free.FreeBytes < ns || g.Start >= end) continue;
                var (s, l) = g.Free.Take(ns, ns, ns, g.Cursor, end);
                if (l == 0) continue;
                g.Cursor = s + l;
                Account(g, l, fromReservation);
                return s;
            }
            if (CreateGroupUnsynchronized(BlockGroupFlags.Metadata, end, roomyOnly) == null) return 0;
        }
    }

    /// <summary>Allocates up to <paramref name="want"/> bytes of data (block-aligned, at least
    /// one block), contiguous, near <paramref name="hint"/>. May return less than asked.</summary>
    public (ulong Start, ulong Length) AllocData(ulong want, bool fromReservation, ulong hint = 0, bool belowFence = false)
    {
        using var _ = _lock.Lock();
        if (_fence != 0)
        {
            var r = AllocDataUnsynchronized(want, fromReservation, hint, _fence);
            if (r.Length > 0) return r;
            if (belowFence) throw new FsException(Errno.ENOSPC, $"data space below {Units.Human(_fence)} exhausted");
        }
        var a = AllocDataUnsynchronized(want, fromReservation, hint, ulong.MaxValue);
        return a.Length > 0 ? a : throw new FsException(Errno.ENOSPC, "data space exhausted");
    }

    /// <summary>Data below <paramref name="end"/>, or length 0.</summary>
    private (ulong Start, ulong Length) AllocDataUnsynchronized(ulong want, bool fromReservation, ulong hint, ulong end)
    {
        // As AllocNodeUnsynchronized: space with its room first, then room asked for, then the rest.
        var a = AllocDataFrom(want, fromReservation, hint, end, roomyOnly: TracksRoom);
        while (a.Length == 0 && TracksRoom && MakeRoomUnsynchronized(data: true)) a = AllocDataFrom(want, fromReservation, hint, end, roomyOnly: true);
        return a.Length > 0 || !TracksRoom ? a : AllocDataFrom(want, fromReservation, hint, end, roomyOnly: false);
    }

    private (ulong Start, ulong Length) AllocDataFrom(ulong want, bool fromReservation, ulong hint, ulong end, bool roomyOnly)
    {
        ulong bs = (ulong)BlockSize;
        want = Math.Min(Units.AlignUp(want, bs), MaxDataExtent);
        while (true)
        {
            (ulong, ulong) best = (0, 0);
            BlockGroup? bestG = null;
            foreach (var g in _groups)
            {
                if (!g.IsData || (roomyOnly && !g.HasRoom) || g.Free.FreeBytes < bs || g.Start >= end) continue;
                var (s, l) = g.Free.Take(want, bs, bs, hint != 0 && g.Contains(hint) ? hint : g.Cursor, end);
                if (l == 0) continue;
                if (l == want)
                {
                    if (bestG != null) bestG.Free.Add(best.Item1, best.Item2);
                    g.Cursor = s + l;
                    ReserveAllocatedData(g, l, fromReservation);
                    return (s, l);
                }
                if (l > best.Item2)
                {
                    if (bestG != null) bestG.Free.Add(best.Item1, best.Item2);
                    best = (s, l);
                    bestG = g;
                }
                else g.Free.Add(s, l);
            }
            // A whole new group beats a fragment when the slot exists.
            if (best.Item2 < want && FreeSlots(end).Any(x => !roomyOnly || SlotHasRoom(x.Start)))
            {
                if (bestG != null) bestG.Free.Add(best.Item1, best.Item2);
                CreateGroupUnsynchronized(BlockGroupFlags.Data, end, roomyOnly);
                continue;
            }
            if (bestG != null)
            {
                bestG.Cursor = best.Item1 + best.Item2;
                ReserveAllocatedData(bestG, best.Item2, fromReservation);
                return best;
            }
            return (0, 0);
        }
    }

    /// <summary>A data extent just allocated counts as reserved, not used, until the commit
    /// inserts its EXTENT_ITEM (<see cref="CommitReserved"/>), as btrfs's block-group reserved
    /// bytes: data is allocated outside any transaction handle (writeback, direct IO),
    /// concurrently with a commit, which must write each BLOCK_GROUP_ITEM's used as its own
    /// extent tree has it. Counted as used, a power cut after that commit left an image whose
    /// block group items disagreed with its extents, and a commit racing a busy writeback
    /// found its groups dirtied again round after round. The group is not marked dirty here
    /// for the same reason.</summary>
    private void ReserveAllocatedData(BlockGroup g, ulong len, bool fromReservation)
    {
        ReserveTakenUnsynchronized(g, len);
        if (fromReservation) SpaceInfo.Sub(ref Data.MayUse, len, Data);
    }

    private void Account(BlockGroup g, ulong len, bool fromReservation)
    {
        var k = Kind(g.Flags);
        g.Used += len;
        g.Dirty = true;
        k.Used += len;
        if (fromReservation) SpaceInfo.Sub(ref k.MayUse, len, k);
    }

    /// <summary>A new group in the first unallocated slot (that ends by <paramref name="end"/>;
    /// with <paramref name="roomyOnly"/>, whose room the host has given).</summary>
    private BlockGroup? CreateGroupUnsynchronized(BlockGroupFlags flags, ulong end = ulong.MaxValue, bool roomyOnly = false)
    {
        foreach (var (s, l) in FreeSlots(end))
        {
            if (roomyOnly && !SlotHasRoom(s)) continue;
            var g = AddGroupUnsynchronized(s, l, flags, onDisk: false);
            NoteGroupMadeUnsynchronized(g);
            return g;
        }
        return null;
    }

    /// <summary>The commit inserted the EXTENT_ITEM of a data extent allocated by
    /// <see cref="AllocData"/>: its bytes move from reserved to used.</summary>
    public void CommitReserved(ulong start, ulong len)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start) ?? throw new CorruptionException($"extent [{start}, +{len}) outside every block group", start);
        UnreserveUnsynchronized(g, len);
        g.Used += len;
        Data.Used += len;
        g.Dirty = true;
    }

    /// <summary>A data extent allocated by <see cref="AllocData"/> that never got an
    /// EXTENT_ITEM (its write failed, or it was dropped in the transaction that made it) is
    /// free again at once: no commit ever referenced it.</summary>
    public void FreeReserved(ulong start, ulong len)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start) ?? throw new CorruptionException($"freeing [{start}, +{len}) outside every block group", start);
        UnreserveUnsynchronized(g, len);
        g.Free.Add(start, len);
    }

    private void UnreserveUnsynchronized(BlockGroup g, ulong len)
    {
        if (len > g.Reserved) { Data.Underflows++; g.Reserved = 0; } else g.Reserved -= len;
        SpaceInfo.Sub(ref Data.Reserved, len, Data);
    }

    /// <summary>An extent stops being used. <paramref name="pin"/>: the last committed state may
    /// still reference it, so it becomes free only after the running transaction commits.</summary>
    public void Free(ulong start, ulong len, bool pin)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start) ?? throw new CorruptionException($"freeing [{start}, +{len}) outside every block group", start);
        var k = Kind(g.Flags);
        if (len > g.Used) { k.Underflows++; g.Used = 0; } else g.Used -= len;
        SpaceInfo.Sub(ref k.Used, len, k);
        g.Dirty = true;
        if (pin)
        {
            g.Pinned += len;
            k.Pinned += len;
            _pinned.Add((start, len, g));
        }
        else g.Free.Add(start, len);
    }

    // ------------------------------------------------------------ fsync log blocks (§9)

    /// <summary>Metadata room, in nodes beyond the global reserve, below which the log is left
    /// out: near the edge, the few nodes it holds are better left to the operations.</summary>
    private const ulong LogMarginNodes = 64;

    /// <summary>Claims a node-sized slot for a block of the fsync log, if metadata space has
    /// room for it as for an ordinary reservation (the log is a shortcut: on a filesystem short
    /// of metadata space fsync commits instead). The log lives outside the extent tree, so its
    /// blocks count as reserved (as data awaiting its EXTENT_ITEM), never as used: a commit's
    /// block group items and its extents keep agreeing. Only in a group the last commit has
    /// (OnDisk): the replay finds the block in the committed free space, and a group made since
    /// is unknown to it.</summary>
    public bool TryClaimLogBlock(out ulong block)
    {
        using var _ = _lock.Lock();
        ulong ns = (ulong)NodeSize;
        block = 0;
        if (!CanKeepUnsynchronized(ns * LogMarginNodes, 0, useGlobal: false)) return false;
        // Below a shrink's fence if it can (the slot stays in use until a later commit).
        for (int pass = _fence != 0 ? 0 : 1; pass < 2; pass++)
            foreach (var g in _groups)
            {
                if (g.IsData || !g.OnDisk || !g.HasRoom || g.Free.FreeBytes < ns) continue;
                var (s, l) = g.Free.Take(ns, ns, ns, g.Cursor, pass == 0 ? _fence : ulong.MaxValue);
                if (l == 0) continue;
                ReserveTakenUnsynchronized(g, l);
                block = s;
                return true;
            }
        return false;
    }

    /// <summary>Whether the extent lies in a block group the last commit has (a log record may
    /// reference it: replay finds it in the committed free space).</summary>
    public bool InCommittedGroup(ulong start, ulong len)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start);
        return g != null && g.OnDisk && start + len <= g.End;
    }

    /// <summary>Log replay: keeps the blocks of the log being replayed from reuse until the
    /// replay's commit is durable (a power cut during it replays the same log again). False
    /// when the block is not free metadata space in the mounted commit.</summary>
    public bool ClaimLogBlockAt(ulong block) => ClaimFree(block, (ulong)NodeSize, data: false);

    /// <summary>The commit superseded the log these blocks held: they become free once that
    /// commit is durable (<see cref="Unpin"/>), like any block the commit stopped needing.
    /// <paramref name="pin"/> false: nothing needs them any more (a clean unmount).</summary>
    public void ReleaseLogBlocks(IEnumerable<ulong> blocks, bool pin)
    {
        using var _ = _lock.Lock();
        ulong ns = (ulong)NodeSize;
        foreach (var b in blocks)
        {
            var g = GroupOfUnsynchronized(b) ?? throw new CorruptionException($"log block {b} outside every block group", b);
            if (ns > g.Reserved) { Meta.Underflows++; g.Reserved = 0; } else g.Reserved -= ns;
            SpaceInfo.Sub(ref Meta.Reserved, ns, Meta);
            if (pin)
            {
                g.Pinned += ns;
                Meta.Pinned += ns;
                _pinned.Add((b, ns, g));
            }
            else g.Free.Add(b, ns);
        }
    }

    /// <summary>Log replay: a data extent a log record references, written after the commit
    /// and so free in it, is taken back as allocated-but-not-yet-inserted (as
    /// <see cref="AllocData"/> leaves it); the replay's commit inserts its EXTENT_ITEM.
    /// False when the range is not free data space (the record cannot be trusted).</summary>
    public bool ClaimData(ulong start, ulong len) => ClaimFree(start, len, data: true);

    /// <summary>Takes [start, start+len) out of a free range of a group of the given kind, as
    /// reserved. False when it is not all free there.</summary>
    private bool ClaimFree(ulong start, ulong len, bool data)
    {
        using var _ = _lock.Lock();
        var g = GroupOfUnsynchronized(start);
        if (g == null || g.IsData != data || start + len > g.End || !g.Free.Remove(start, len)) return false;
        ReserveTakenUnsynchronized(g, len);
        return true;
    }

    /// <summary>Space just taken from a group's free ranges counts as reserved in the group and
    /// its kind. Caller holds the lock.</summary>
    private void ReserveTakenUnsynchronized(BlockGroup g, ulong len)
    {
        g.Reserved += len;
        Kind(g.Flags).Reserved += len;
    }

    /// <summary>After a commit reached the disk: pinned extents become free.</summary>
    public void Unpin()
    {
        using var _ = _lock.Lock();
        ReturnPinnedUnsynchronized(_pinned);
        QueueForDiscardUnsynchronized(_pinned);
        _pinned.Clear();
    }

    /// <summary>Pinned ranges become free space. Caller holds the lock.</summary>
    private void ReturnPinnedUnsynchronized(IEnumerable<(ulong Start, ulong Len, BlockGroup Group)> ranges)
    {
        foreach (var (s, l, g) in ranges)
        {
            g.Free.Add(s, l);
            g.Pinned -= l;
            var k = Kind(g.Flags);
            SpaceInfo.Sub(ref k.Pinned, l, k);
        }
    }

    public ulong PinnedBytes { get { using var _ = _lock.Lock(); return Data.Pinned + Meta.Pinned; } }

    /// <summary>
    /// Removes data block groups that hold nothing (no used, no pinned bytes), keeping one,
    /// so that their slots return to unallocated space that metadata can use. Called by the
    /// commit while no handle is active, so nothing can allocate from a group being removed.
    /// </summary>
    public List<BlockGroup> ReclaimEmptyDataGroups()
    {
        using var _ = _lock.Lock();
        var data = _groups.Where(g => g.IsData).ToList();
        var victims = data.Where(g => g.Used == 0 && g.Reserved == 0 && g.Pinned == 0 && g.Free.FreeBytes == g.Capacity).ToList();
        if (victims.Count == data.Count && victims.Count > 0) victims.RemoveAt(0);
        foreach (var g in victims)
        {
            _groups.Remove(g);
            NoteGroupGoneUnsynchronized(g);
            SpaceInfo.Sub(ref Data.Total, g.Capacity, Data);
        }
        return victims;
    }

    /// <summary>Groups whose item must be written in this commit; clears their dirty mark.</summary>
    public List<BlockGroup> TakeDirtyGroups()
    {
        using var _ = _lock.Lock();
        var d = _groups.Where(g => g.Dirty).ToList();
        foreach (var g in d) g.Dirty = false;
        return d;
    }

    public (ulong Used, ulong Pinned, ulong DataMayUse, ulong MetaMayUse) Snapshot()
    {
        using var _ = _lock.Lock();
        return (Data.Used + Meta.Used, Data.Pinned + Meta.Pinned, Data.MayUse, Meta.MayUse);
    }

    /// <summary>Bytes a data reservation could get now (statfs f_bavail).</summary>
    public ulong DataAvailable
    {
        get
        {
            using var _ = _lock.Lock();
            long free = Math.Max(0, Data.Free);
            long metaShort = Math.Max(0, -(Meta.Free - (long)GlobalReserve));
            long unalloc = (long)FreeSlots().Aggregate(0UL, (a, s) => a + s.Len) - metaShort;
            return (ulong)(free + Math.Max(0, unalloc)) / (ulong)BlockSize * (ulong)BlockSize;
        }
    }

    public ulong UsableBytes => DeviceSize - FormatConstants.ReservedPrefix;
}

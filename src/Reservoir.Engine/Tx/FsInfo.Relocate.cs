using System.Buffers;
using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>What a relocation moved: data extents (and their bytes) and tree blocks.</summary>
public readonly record struct RelocationResult(int DataExtents, ulong DataBytes, int TreeBlocks);

/// <summary>
/// Relocation: a shrink moves every extent at or past the new end below it (btrfs's balance
/// and relocation, for one device), so that it is refused only when what is in use does not
/// fit. Nothing about the moved extents changes but their address:
/// - a data extent keeps its length, its EXTENT_ITEM (refs, birth generation, owner), its
///   back-references, SHARED_ROOT_REFs, ORIGIN_DROPs, REFERRER_ENTRY, checksums and every
///   subvolume's EXTENT_OWNER_REF, all keyed anew by the new address; the file extent items
///   naming it are rewritten in place of their leaves;
/// - a tree block keeps its contents, owner, generation and reference count, at its new
///   address; so does every block above a moved one (its pointer changes) and every leaf whose
///   file extent items name a moved extent.
/// Blocks shared by snapshots are rewritten once, and every parent points at the one copy, so
/// sharing, quota numbers and the generations that send, find-new and copy-on-write decide by
/// all stay as they were. (EXTENT_OWNER_REF items are the one exception: they are keyed by the
/// address, so their new keys go in by ordinary copy-on-write, and the leaves that hold them
/// are copied for each subvolume that changes them.)
///
/// Crash safety: the moved data and blocks are written to space free in the last commit, and
/// flushed, before anything points at them; a commit (one of its own) then points at them.
/// They keep their old generations, which the mount's check of an unverified commit does not
/// look at (SPEC.md §1): hence the flush of their own, before the commit's.
///
/// Ordering: <see cref="Relocate"/> runs under the commit mutex and the commit lock held for
/// writing, so no handle runs: first a commit folds everything pending (delayed refs, referrer
/// entries to write, every pending ORIGIN_DROP, all keyed by address) into the trees; then the
/// relocation changes the trees with nothing else in its transaction, and a second commit makes
/// it durable. The caller (a shrink) has put up the allocation fence first
/// (<see cref="Alloc.SpaceManager.Fence"/>) and synced, so no new extent lands past the limit,
/// no write is in flight into an extent past it (an in-place write there is copied on write
/// instead: <see cref="DataExtentMayBeShared"/>), and what this moves stays moved.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>A data extent to move: its old address, its length and its new address.</summary>
    private readonly record struct DataMove(ulong Old, ulong Len, ulong New);

    /// <summary>How much data one round moves: writers wait while a round runs (it holds the
    /// commit lock), and go on between rounds. Tests make it small.</summary>
    internal ulong RelocationBatchBytes { get; set; } = 256UL << 20;

    /// <summary>
    /// Moves every extent (data and tree blocks) that reaches <paramref name="limit"/> or past
    /// it below it, in rounds of at most <see cref="RelocationBatchBytes"/> of data, each two
    /// commits of its own. Throws <see cref="FsException"/> ENOSPC when there is no room below
    /// the limit: before anything moved when the data past it is more than the space free below
    /// it, else (free space too scattered for an extent) after the rounds done, which moved data
    /// and lost nothing. A failure after a round began to change the trees marks the filesystem
    /// failed, as a failed commit does (the last commit stays).
    /// </summary>
    public RelocationResult Relocate(ulong limit)
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "the filesystem is mounted read-only");
        if (FailedReason != null) throw new FsException(Errno.EIO, FailedReason);
        if (Space.FenceLimit != limit) throw new InvalidOperationException("a relocation runs behind its shrink's allocation fence");
        ulong past = DataBytesPast(limit), free = Space.FreeBelow(limit, data: true);
        if (past > free)
            throw new FsException(Errno.ENOSPC, $"the {Units.Human(past)} of data past {Units.Human(limit)} do not fit below it ({Units.Human(free)} of data space free there)");
        var total = new RelocationResult(0, 0, 0);
        while (true)
        {
            if (_cancelShrink) return total; // the shrink answers ECANCELED
            RelocationResult r;
            bool more;
            try { r = RelocateRound(limit, out more); }
            catch (FsException ex) when (ex.Errno == Errno.ENOSPC && total.DataExtents > 0)
            {
                throw new FsException(Errno.ENOSPC, $"{ex.Reason} (the rounds before moved {Units.Human(total.DataBytes)} below it; nothing is lost)");
            }
            total = new(total.DataExtents + r.DataExtents, total.DataBytes + r.DataBytes, total.TreeBlocks + r.TreeBlocks);
            if (!more || r.DataExtents == 0) return total;
        }
    }

    /// <summary>One round: a commit folds what is pending, the move, a commit makes it durable.
    /// <paramref name="more"/>: data past the limit is left for another round.</summary>
    private RelocationResult RelocateRound(ulong limit, out bool more)
    {
        using var serial = _commitMutex.Lock();
        List<(ulong Start, ulong Len, Alloc.BlockGroup Group)>? first = null, second = null;
        RelocationResult result;
        _commitLock.EnterWrite();
        try
        {
            WriteAllOriginDropsAtNextCommit = true;
            ForceCommit = true;
            first = CommitUnderLock();
            if (FailedReason != null) throw new FsException(Errno.EIO, FailedReason);
            if (Running.DirtyCount != 0 || Running.Refs.Count != 0 || _pendingOriginDrops.Count != 0 || ReferrerEntries.HasWrites)
                ThrowHelper.Invariant("relocation: the commit before it left changes pending");
            result = RelocateUnderLock(limit, out more);
            if (result.DataExtents + result.TreeBlocks > 0)
            {
                ForceCommit = true;
                second = CommitUnderLock();
            }
        }
        finally { _commitLock.ExitWrite(); }
        if (first != null) DiscardFreed(first);
        if (second != null) DiscardFreed(second);
        KickDiscarder();
        return result;
    }

    /// <summary>Bytes of the data extents reaching <paramref name="limit"/> or past it.</summary>
    private ulong DataBytesPast(ulong limit)
    {
        using var lk = ExtentTree.Lock.Read();
        ulong sum = 0;
        foreach (var (_, len) in DataExtentsPast(limit, ulong.MaxValue, out _)) sum += len;
        return sum;
    }

    /// <summary>The data extents reaching the limit or past it, in address order, up to about
    /// <paramref name="budget"/> bytes (<paramref name="more"/>: some were left out). Caller
    /// holds the extent tree's lock.</summary>
    private List<(ulong Old, ulong Len)> DataExtentsPast(ulong limit, ulong budget, out bool more)
    {
        var found = new List<(ulong Old, ulong Len)>();
        ulong sum = 0;
        more = false;
        var path = new TreePath();
        ulong from = limit > Space.MaxDataExtent ? limit - Space.MaxDataExtent : 0;
        if (ExtentTree.SeekGE(new Key(from, 0, 0), path))
            do
            {
                var k = path.Key;
                if (k.Type != KeyTypes.ExtentItem || k.ObjectId + k.Offset <= limit) continue;
                if (sum >= budget) { more = true; break; }
                found.Add((k.ObjectId, k.Offset));
                sum += k.Offset;
            } while (ExtentTree.Next(path));
        return found;
    }

    private RelocationResult RelocateUnderLock(ulong limit, out bool more)
    {
        var h = new TransHandle(this, Running, 0, holdsCommitLock: false);
        var trees = new List<BTree> { RootTree, ExtentTree, CsumTree };
        if (QuotaTree != null) trees.Add(QuotaTree);
        var fsTrees = AllFsTrees().OrderBy(t => t.Id).ToList();
        // Readers take a subvolume's tree before the checksum tree (a read looks up its
        // checksums): so do we, every subvolume first, then the global trees as the commit does.
        var held = new List<IDisposable>();
        try
        {
            foreach (var t in fsTrees) held.Add(t.Lock.Write());
            foreach (var t in trees) held.Add(t.Lock.Write());
            var data = PlanDataMoves(limit, out more);
            var walk = new RelocationWalk(this, limit, data.ToDictionary(m => m.Old, m => m.New));
            ulong margin = 0;
            try
            {
                CopyData(data);
                int globalBlocks = 0;
                foreach (var t in trees) globalBlocks += walk.Visit(t);
                foreach (var t in fsTrees) walk.Visit(t);
                // Room for installing it: the re-keyed items may copy every block of the global
                // trees and split as many again, and with quotas each subvolume holding owner
                // items of moved extents copies the leaves they are in and the path to them,
                // and may split as many. Checked now, while it can still be given back.
                long nodes = 2L * globalBlocks;
                if (Quota.Enabled && data.Count > 0) nodes += OwnerRefNodesToCopy(limit, data, fsTrees);
                margin = (ulong)nodes * (ulong)NodeSize;
                if (Space.Reserve(data: false, margin, useGlobalReserve: true) != Errno.OK)
                {
                    margin = 0;
                    throw new FsException(Errno.ENOSPC, $"{Units.Human((ulong)nodes * (ulong)NodeSize)} of metadata to rewrite the trees");
                }
            }
            catch (FsException ex) when (ex.Errno == Errno.ENOSPC)
            {
                // Nothing points at anything written so far: give the space back, as it was.
                walk.Undo();
                foreach (var m in data) Space.FreeReserved(m.New, m.Len);
                throw new FsException(Errno.ENOSPC, $"the extents past {Units.Human(limit)} do not fit below it ({ex.Reason})");
            }
            if (data.Count == 0 && walk.Moved.Count == 0)
            {
                Space.Release(data: false, margin);
                return new(0, 0, 0);
            }
            // Everything moved is on the device before anything points at it.
            Device.Flush();
            try
            {
                // The margin stays promised while the trees change (buffered writers reserve
                // beside us, without the commit lock); the changes allocate from free space, as
                // the commit's do, and the promise goes at the end.
                using var promise = new MetaPromise(Space, margin);
                Install(h, data, walk, trees.Concat(fsTrees));
                // Copy-on-write in the subvolumes looks up shared blocks' references in the
                // extent tree (under its read lock): the global trees are let go first, the
                // subvolumes stay held.
                for (int i = held.Count - 1; i >= fsTrees.Count; i--) held[i].Dispose();
                held.RemoveRange(fsTrees.Count, held.Count - fsTrees.Count);
                if (data.Count > 0 && Quota.Enabled) MoveOwnerRefs(h, limit, data, fsTrees);
            }
            catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException)
            {
                MarkFailed($"relocation in transaction {Running.Transid} failed: {ex.Message}");
                throw ex as FsException ?? new FsException(Errno.EIO, "relocation failed: " + ex.Message, ex);
            }
            Stats.RelocatedDataExtents += data.Count;
            Stats.RelocatedTreeBlocks += walk.Moved.Count;
            return new(data.Count, data.Aggregate(0UL, (a, m) => a + m.Len), walk.Moved.Count);
        }
        finally
        {
            for (int i = held.Count - 1; i >= 0; i--) held[i].Dispose();
        }
    }

    /// <summary>At most how many blocks re-keying the moved extents' EXTENT_OWNER_REFs copies
    /// and adds: per subvolume that has any, twice the leaves they fill and the path to them.
    /// (Subvolumes that have none, however many, cost nothing.) Caller holds the trees' locks.</summary>
    private long OwnerRefNodesToCopy(ulong limit, List<DataMove> data, List<BTree> fsTrees)
    {
        var moved = data.Select(m => m.Old).ToHashSet();
        ulong from = limit > Space.MaxDataExtent ? limit - Space.MaxDataExtent : 0;
        int perLeaf = Math.Max(1, (NodeSize - NodeLayout.HeaderSize) / (NodeLayout.ItemSize + ExtentOwnerRefItem.Size));
        long nodes = 0;
        foreach (var t in fsTrees)
        {
            int items = OwnerRefs.Scan(t, from).Count(r => moved.Contains(r.Bytenr));
            if (items > 0) nodes += 2L * (items / perLeaf + 1 + t.Root.Level + 1);
        }
        return nodes;
    }

    /// <summary>Metadata promised (may_use) for as long as it is held.</summary>
    private readonly struct MetaPromise(Alloc.SpaceManager space, ulong bytes) : IDisposable
    {
        public void Dispose() => space.Release(data: false, bytes);
    }

    /// <summary>Every data extent reaching the limit or past it, with a new place below it (the
    /// fence keeps every allocation there) of the same length: an extent is never split, since
    /// the file extent items name offsets inside it. Throws ENOSPC (after giving back what it
    /// took) when one finds no room.</summary>
    private List<DataMove> PlanDataMoves(ulong limit, out bool more)
    {
        var found = DataExtentsPast(limit, RelocationBatchBytes, out more);
        var moves = new List<DataMove>(found.Count);
        try
        {
            foreach (var (old, len) in found)
            {
                var (at, got) = Space.AllocData(len, fromReservation: false, belowFence: true);
                if (got < len)
                {
                    Space.FreeReserved(at, got);
                    throw new FsException(Errno.ENOSPC, $"no free run of {Units.Human(len)} for the data extent at {old}");
                }
                moves.Add(new(old, len, at));
            }
        }
        catch (FsException ex) when (ex.Errno == Errno.ENOSPC)
        {
            foreach (var m in moves) Space.FreeReserved(m.New, m.Len);
            ulong bytes = found.Aggregate(0UL, (a, f) => a + f.Len);
            throw new FsException(Errno.ENOSPC, $"the {Units.Human(bytes)} of data past {Units.Human(limit)} do not fit below it ({ex.Reason})");
        }
        return moves;
    }

    /// <summary>Copies each moved data extent's bytes to its new place (a pooled buffer, a
    /// piece at a time).</summary>
    private void CopyData(List<DataMove> moves)
    {
        const int Piece = 1 << 20;
        var buf = ArrayPool<byte>.Shared.Rent(Piece);
        try
        {
            foreach (var m in moves)
                for (ulong done = 0; done < m.Len; done += Piece)
                {
                    int n = (int)Math.Min((ulong)Piece, m.Len - done);
                    Device.Read(m.Old + done, buf.AsSpan(0, n));
                    Device.Write(m.New + done, buf.AsSpan(0, n));
                }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>Points the trees at what moved: the new roots, the ROOT_ITEMs, the extent tree's
    /// items and the checksums under the new addresses, the subvolumes' EXTENT_OWNER_REFs; the
    /// old places are freed (pinned until the commit is durable).</summary>
    private void Install(TransHandle h, List<DataMove> data, RelocationWalk walk, IEnumerable<BTree> all)
    {
        ulong ns = (ulong)NodeSize;
        foreach (var (old, _) in walk.Moved) Store.Remove(old);
        foreach (var t in all)
        {
            if (walk.CopyOf(t.Root.Bytenr) is not { } c) continue;
            t.RootRelocated(Store.Read(c.Bytenr, c.Generation, c.Level));
            if (t != RootTree) PointRootItem(h, t); // the superblock names the root tree's root
        }
        foreach (var (old, copy) in walk.Moved)
        {
            if (!MoveItems(h, ExtentTree, new Key(old, KeyTypes.MetadataItem, (ulong)copy.Level), copy.Bytenr))
                ThrowHelper.Corrupt($"tree block {old} (level {copy.Level}) has no METADATA_ITEM", old);
            Space.Free(old, ns, pin: true);
        }
        foreach (var m in data)
        {
            // EXTENT_ITEM, EXTENT_DATA_REFs, SHARED_ROOT_REFs, ORIGIN_DROPs, REFERRER_ENTRY: all
            // of the extent's items, whose keys start with its address (a block group item
            // starting at the same address is the group's, not the extent's).
            var items = new List<(Key Key, byte[] Data)>();
            var path = new TreePath();
            if (ExtentTree.SeekGE(new Key(m.Old, 0, 0), path))
                do
                {
                    var k = path.Key;
                    if (k.ObjectId != m.Old) break;
                    if (k.Type != KeyTypes.BlockGroupItem) items.Add((k, path.Data.ToArray()));
                } while (ExtentTree.Next(path));
            if (!items.Exists(i => i.Key.Type == KeyTypes.ExtentItem)) ThrowHelper.Corrupt($"data extent {m.Old} lost its EXTENT_ITEM during relocation", m.Old);
            foreach (var (k, _) in items) ExtentTree.Delete(h, k);
            foreach (var (k, d) in items) ExtentTree.Put(h, new Key(m.New, k.Type, k.Offset), d);
            MoveItems(h, CsumTree, new Key(TreeIds.CsumObjectId, KeyTypes.ExtentCsum, m.Old), m.New, keyIsOffset: true);
            Space.CommitReserved(m.New, m.Len);
            Space.Free(m.Old, m.Len, pin: true);
            ReferrerEntries.DropFromMemory(m.Old);
        }
    }

    /// <summary>Re-keys one item (false if there is none) under a new address: its objectid, or
    /// with <paramref name="keyIsOffset"/> its offset.</summary>
    private static bool MoveItems(TransHandle h, BTree tree, Key key, ulong to, bool keyIsOffset = false)
    {
        var d = tree.Get(key);
        if (d == null) return false;
        tree.Delete(h, key);
        tree.Put(h, keyIsOffset ? new Key(key.ObjectId, key.Type, to) : new Key(to, key.Type, key.Offset), d);
        return true;
    }

    /// <summary>The subvolumes' EXTENT_OWNER_REFs of moved extents, under their new addresses
    /// (they sort at the end of each tree, by address, so the candidates are the items from the
    /// lowest address a moved extent can have). Each tree whose root moved gets its ROOT_ITEM
    /// rewritten here, with the ctransid it had: the subvolume's contents did not change.
    /// Caller holds the subvolumes' write locks, not the global trees'.</summary>
    private void MoveOwnerRefs(TransHandle h, ulong limit, List<DataMove> data, List<BTree> fsTrees)
    {
        var moved = data.ToDictionary(m => m.Old, m => m.New);
        ulong from = limit > Space.MaxDataExtent ? limit - Space.MaxDataExtent : 0;
        var changed = new List<BTree>();
        foreach (var t in fsTrees)
        {
            var items = new List<(ulong Old, byte[] Data)>();
            foreach (var (bytenr, count, numBytes) in OwnerRefs.Scan(t, from))
                if (moved.ContainsKey(bytenr))
                {
                    var d = new byte[ExtentOwnerRefItem.Size];
                    new ExtentOwnerRefItem { Count = count, NumBytes = numBytes }.Write(d);
                    items.Add((bytenr, d));
                }
            if (items.Count == 0) continue;
            foreach (var (old, _) in items) t.Delete(h, OwnerRefs.KeyOf(old));
            foreach (var (old, d) in items) t.Put(h, OwnerRefs.KeyOf(moved[old]), d);
            if (t.RootChanged) changed.Add(t);
        }
        if (changed.Count == 0) return;
        using var lk = RootTree.Lock.Write();
        foreach (var t in changed)
        {
            PointRootItem(h, t);
            t.RootChanged = false; // written here, with the ctransid it had
        }
    }

    /// <summary>Points a tree's ROOT_ITEM at its root as it is now (address, generation,
    /// level), nothing else: a relocation does not change the tree's contents, so its ctransid
    /// (what send and receive compare) stays. Caller holds the root tree's write lock.</summary>
    private void PointRootItem(TransHandle h, BTree t)
    {
        var key = new Key(t.Id, KeyTypes.RootItem, 0);
        var ri = RootItem.Read(RootTree.Get(key) ?? throw new CorruptionException($"tree {t.Id} has no ROOT_ITEM"));
        ri.Bytenr = t.Root.Bytenr;
        ri.Generation = t.Root.Generation;
        ri.Level = (byte)t.Root.Level;
        Span<byte> buf = stackalloc byte[RootItem.Size];
        ri.Write(buf);
        RootTree.Put(h, key, buf);
    }
}

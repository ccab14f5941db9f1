using System.Diagnostics;
using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

internal sealed partial class FsInfo
{
    /// <summary>
    /// Commits the running transaction (SPEC.md §1, "Commit"):
    /// 1. wait for every handle to end (exclusive commit lock);
    /// 2. fold delayed refs, block group usage and moved tree roots into the extent and root
    ///    trees, repeating until a round dirties nothing new (each node is copied at most once
    ///    per transaction, so this ends);
    /// 3. write every dirty node to its new location;
    /// 4. write the superblock, marked unverified, to the primary slot that does not hold the
    ///    previous commit and to the backup copies (never to the previous commit's slot), then
    ///    flush once;
    /// 5. only now release pinned extents: the previous commit no longer needs them.
    /// One flush, not two (nodes, then superblock): a power cut during it may leave the new
    /// superblock without some of its nodes or data, which the mount finds by checking
    /// everything of the new generation (<see cref="CommitVerifier"/>), falling back to the
    /// previous commit in the other slot. fsync costs one device flush, as on a journal with
    /// checksummed commit blocks.
    /// </summary>
    public void Commit()
    {
        if (ReadOnly || FailedReason != null) return;
        using var serial = _commitMutex.Lock();
        List<(ulong Start, ulong Len, Alloc.BlockGroup Group)>? toDiscard;
        _commitLock.EnterWrite();
        try { toDiscard = CommitUnderLock(); }
        finally { _commitLock.ExitWrite(); }
        if (toDiscard != null) DiscardFreed(toDiscard);
        KickDiscarder();
    }

    /// <summary>The commit itself (<see cref="Commit"/>), for a caller holding the commit mutex
    /// and the commit lock for writing; a relocation commits twice under one hold. Returns the
    /// ranges to discard after the lock is let go (-o discard), if any.</summary>
    private List<(ulong Start, ulong Len, Alloc.BlockGroup Group)>? CommitUnderLock()
    {
        List<(ulong Start, ulong Len, Alloc.BlockGroup Group)>? toDiscard = null;
        try
        {
            var tx = Running;
            if (!ForceCommit && tx.DirtyCount == 0 && tx.Refs.Count == 0 && Space.PinnedBytes == 0 && !AnyGroupDirty()
                && !(WriteAllOriginDropsAtNextCommit && _pendingOriginDrops.Count > 0) && !HasPendingRelationChanges() && _resizeTo == 0) return null;
            ForceCommit = false;
            var sw = Stopwatch.StartNew();
            long lap = 0;
            var h = new TransHandle(this, tx, 0, holdsCommitLock: false);
            // No handle is active, but readers may be walking these trees (checksum lookups).
            using (RootTree.Lock.Write())
            using (ExtentTree.Lock.Write())
            using (CsumTree.Lock.Write())
            {
                // Before the delayed refs: an extent freed now still has its EXTENT_ITEM.
                AccountOwnerTransitions(h);
                ApplyRelationChanges(h);
                lap = Lap(sw, ref Stats.CommitAccountingMicros, lap);
                ApplyResize(h);
                foreach (var g in Space.ReclaimEmptyDataGroups())
                    if (g.OnDisk) ExtentTree.Delete(h, new Key(g.Start, KeyTypes.BlockGroupItem, g.Length));
                // Every commit rewrites the root tree's root, so that a superblock of this
                // generation always points at a block of this generation: an address reused
                // from an older root, left there by a write that never landed, cannot then
                // pass for an unchanged root tree (CommitVerifier).
                if (RootTree.Root.Generation != tx.Transid) RootTree.Search(h, Key.Min, new TreePath());
                var rounds = new List<string>();
                for (int round = 0; ; round++)
                {
                    if (round > 64) ThrowHelper.Invariant("commit did not converge; last rounds (delayed ref heads, referrer entry items, block groups, qgroup items, root items): " + string.Join("; ", rounds.TakeLast(4)));
                    int refs = RunDelayedRefs(h), entries = WriteReferrerEntries(h), groups = UpdateBlockGroupItems(h), qgroups = UpdateQgroupItems(h) + UpdateQuotaStatusIds(h), roots = UpdateRootItems(h);
                    if (refs + entries + groups + qgroups + roots == 0) break;
                    rounds.Add($"{refs} {entries} {groups} {qgroups} {roots}");
                }
                lap = Lap(sw, ref Stats.CommitFoldMicros, lap);
            }
            // The extents these reservations were for are accounted now: free them.
            foreach (var (tree, bytes) in tx.TakeQgroupRecords()) Quota.Free(tree, bytes);
            Sched.Yield("commit:write-nodes");
            var dirty = tx.TakeDirty();
            foreach (var n in dirty)
            {
                Store.Write(n);
                n.Dirty = false;
            }
            Stats.NodesWritten += dirty.Count;
            lap = Lap(sw, ref Stats.CommitWriteMicros, lap);
            Sched.Yield("commit:write-super");
            var sb = Super.Clone();
            sb.Generation = tx.Transid;
            sb.RootTreeBytenr = RootTree.Root.Bytenr;
            sb.RootTreeLevel = (byte)RootTree.Root.Level;
            sb.BytesUsed = Space.Data.Used + Space.Meta.Used;
            SetSizeFields(sb);
            sb.Incompat |= Features.IncompatUnverifiedCommit;
            // Since when ORIGIN_DROPs wait in memory: a mount after a crash notes them again.
            sb.OriginDropsMissingSince = PendingOriginDropsSince();
            StartNextLog(sb);
            PublishSuperblock(sb, backups: !_durableOnlyInBackups);
            Lap(sw, ref Stats.CommitFlushMicros, lap);
            if (Options.Discard == DiscardMode.Sync && !Device.ReadOnly) toDiscard = Space.TakePinnedForDiscard();
            else Space.Unpin(); // with discard=async, queued for the discard worker too
            Running = NewTransaction(tx.Transid + 1, tx.WithoutSharedRootRefs);
            long us = sw.ElapsedTicks * 1_000_000 / Stopwatch.Frequency;
            Stats.Commits++;
            Stats.CommitMicrosTotal += us;
            Stats.CommitMicrosMax = Math.Max(Stats.CommitMicrosMax, us);
        }
        catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException)
        {
            MarkFailed($"commit of transaction {Running.Transid} failed: {ex.Message}");
            throw ex as FsException ?? new FsException(Errno.EIO, "commit failed: " + ex.Message, ex);
        }
        return toDiscard;
    }

    /// <summary>-o discard, after the commit lock is let go (operations go on meanwhile): the
    /// ranges the commit freed are discarded, then become free space. They were pinned through
    /// the commit's flush, so no durable state needs them. A device error is noted and the
    /// ranges are freed anyway (a discard is advice).</summary>
    private void DiscardFreed(List<(ulong Start, ulong Len, Alloc.BlockGroup Group)> ranges)
    {
        bool discarded = false;
        try
        {
            foreach (var (s, l) in Merge(ranges))
                try
                {
                    // Device IO, which other threads run beside (and the deterministic
                    // scheduler interleaves with them).
                    Sched.Yield("commit:discard");
                    discarded |= Device.Discard(s, l) > 0;
                }
                catch (DeviceIOException ex) { Warn($"discard of [{s}, +{l}) failed: {ex.Message}"); break; }
        }
        finally { Space.UnpinDiscarded(ranges, discarded); }

        static IEnumerable<(ulong, ulong)> Merge(List<(ulong Start, ulong Len, Alloc.BlockGroup Group)> r)
        {
            ulong at = 0, len = 0;
            foreach (var (s, l, _) in r.OrderBy(x => x.Start))
            {
                if (len > 0 && s == at + len) { len += l; continue; }
                if (len > 0) yield return (at, len);
                (at, len) = (s, l);
            }
            if (len > 0) yield return (at, len);
        }
    }

    /// <summary>Adds the time since <paramref name="from"/> (ticks of <paramref name="sw"/>) to a
    /// commit phase's counter; returns now.</summary>
    private static long Lap(Stopwatch sw, ref long micros, long from)
    {
        long now = sw.ElapsedTicks;
        micros += (now - from) * 1_000_000 / Stopwatch.Frequency;
        return now;
    }

    /// <summary>Commit even when nothing is dirty (fsck rewriting the superblock counters).</summary>
    public bool ForceCommit { get; set; }

    private bool AnyGroupDirty() => Space.Groups.Any(g => g.Dirty);

    /// <summary>
    /// Writes superblock copies: primary slot <paramref name="slot"/> (0: 64 KiB, 1: 256 KiB)
    /// and, with <paramref name="backups"/>, the backup copies. A commit never writes the slot
    /// that holds the commit before it (durable: its flush has returned), so the mount can
    /// always fall back on that one.
    /// </summary>
    private void WriteSuperblocks(Superblock sb, int slot, bool backups)
    {
        var buf = new byte[FormatConstants.SuperblockSize];
        var offs = FormatConstants.SuperblockOffsets;
        for (int i = 0; i < offs.Length; i++)
        {
            ulong off = offs[i];
            if (off + FormatConstants.SuperblockSize > Device.Size) continue;
            if (i < 2 ? i != slot : !backups) continue;
            sb.Bytenr = off;
            sb.Write(buf);
            Device.Write(off, buf);
        }
        sb.Bytenr = offs[0];
    }

    /// <summary>At unmount, after the last commit: a copy of its superblock that needs no check
    /// at the next mount (its commit's flush has returned, so all of it is on the device).</summary>
    internal void WriteCleanSuperblock()
    {
        if (ReadOnly || FailedReason != null || (Super.Incompat & Features.IncompatUnverifiedCommit) == 0) return;
        using var serial = _commitMutex.Lock();
        // Into the other slot (the previous commit is no longer needed): the copy marked
        // unverified stays where it is in case this write is torn.
        var sb = Super.Clone();
        sb.Incompat &= ~Features.IncompatUnverifiedCommit;
        // Nothing was logged after the last commit (the unmount made it after the last fsync).
        DropLog(sb, pin: false);
        PublishSuperblock(sb, backups: false);
    }

    /// <summary>Writes <paramref name="sb"/> to the primary slot that does not hold the
    /// durable commit (and the backups if asked), flushes once, and makes it the durable one.
    /// Caller holds the commit mutex.</summary>
    private void PublishSuperblock(Superblock sb, bool backups)
    {
        WriteSuperblocks(sb, 1 - _superSlot, backups);
        Device.Flush();
        Super = sb;
        _superSlot = 1 - _superSlot;
        _durableOnlyInBackups = false; // the durable commit is in a primary slot now
    }

    private int UpdateBlockGroupItems(TransHandle h)
    {
        var groups = Space.TakeDirtyGroups();
        if (groups.Count == 0) return 0;
        Span<byte> item = stackalloc byte[BlockGroupItem.Size];
        foreach (var g in groups)
        {
            new BlockGroupItem { Used = g.Used, Flags = g.Flags }.Write(item);
            ExtentTree.Put(h, new Key(g.Start, KeyTypes.BlockGroupItem, g.Length), item);
            g.OnDisk = true;
        }
        return groups.Count;
    }

    private int UpdateRootItems(TransHandle h)
    {
        int changed = 0;
        Span<byte> buf = stackalloc byte[RootItem.Size];
        foreach (var t in Store.MovedRoots.Take())
        {
            // A tree dropped in this transaction (a deleted subvolume) keeps no ROOT_ITEM, nor
            // does the root tree (the superblock points at its root).
            if (!t.RootChanged || t.Id == TreeIds.RootTree || (t != ExtentTree && t != CsumTree && t != QuotaTree && FsTree(t.Id) != t)) continue;
            t.RootChanged = false;
            changed++;
            var key = new Key(t.Id, KeyTypes.RootItem, 0);
            var old = RootTree.Get(key);
            var ri = old != null ? RootItem.Read(old) : new RootItem { Refs = 1, Otransid = h.Transid, Otime = Timespec.Now(), Uuid = Guid.NewGuid() };
            ri.Bytenr = t.Root.Bytenr;
            ri.Generation = t.Root.Generation;
            ri.Level = (byte)t.Root.Level;
            ri.Ctransid = h.Transid;
            ri.LastSnapshot = t.LastSnapshot;
            if (t.Id == TreeIds.FsTree || t.Id >= TreeIds.FirstSubvolume) ri.RootDirId = FormatConstants.RootDirObjectId;
            ri.Write(buf);
            RootTree.Put(h, key, buf);
        }
        RootTree.RootChanged = false;
        return changed;
    }

    /// <summary>Applies delayed reference changes to the extent tree. Returns how many heads
    /// were pending.</summary>
    private int RunDelayedRefs(TransHandle h)
    {
        var heads = h.Transaction.Refs.Drain();
        if (heads.Count == 0) return 0;
        foreach (var head in heads)
        {
            if (head.IsData) RunDataRef(h, head);
            else RunTreeRef(h, head);
        }
        return heads.Count;
    }

    /// <summary>A tree block's reference count is the number of parents (roots or internal
    /// nodes) pointing at it; the block's space was freed by whoever dropped the last one.
    /// The item is looked up rather than trusted to the head's "new" flag (a block allocated in
    /// one round of a commit has its item inserted in the next, while its head of later rounds
    /// may still be marked new).</summary>
    private void RunTreeRef(TransHandle h, Alloc.DelayedRefs.Head head)
    {
        if (head.TreeDelta == 0) return;
        var key = new Key(head.Bytenr, KeyTypes.MetadataItem, (ulong)head.Level);
        var path = new TreePath();
        if (!ExtentTree.Search(h, key, path))
        {
            if (head.TreeDelta < 0) ThrowHelper.Corrupt($"tree block {head.Bytenr} (level {head.Level}) has no METADATA_ITEM", head.Bytenr);
            if (!head.New) ThrowHelper.Corrupt($"tree block {head.Bytenr} (level {head.Level}) gains a reference but has no METADATA_ITEM", head.Bytenr);
            var d = ExtentTree.Insert(h, key, ExtentItem.Size);
            new ExtentItem { Refs = (ulong)head.TreeDelta, Generation = head.Generation, Flags = ExtentFlags.TreeBlock, Owner = head.Owner }.Write(d);
            return;
        }
        if (!ExtentItem.TryRead(path.Data, out var ei)) ThrowHelper.Corrupt($"malformed METADATA_ITEM of tree block {head.Bytenr}", head.Bytenr);
        long refs = (long)ei.Refs + head.TreeDelta;
        if (refs < 0) ThrowHelper.Corrupt($"tree block {head.Bytenr} reference count would go negative", head.Bytenr);
        if (refs == 0) { ExtentTree.DeleteAt(h, path); return; }
        if (head.New) { ei.Owner = head.Owner; ei.Generation = head.Generation; } // the address's new incarnation
        ei.Refs = (ulong)refs;
        ei.Write(path.MutableData);
    }

    private void RunDataRef(TransHandle h, Alloc.DelayedRefs.Head head)
    {
        long total = head.DataDeltas.Values.Sum();
        var ekey = new Key(head.Bytenr, KeyTypes.ExtentItem, head.NumBytes);
        var path = new TreePath();
        ExtentItem ei = default;
        if (head.New)
        {
            if (total == 0)
            {
                // Allocated and dropped within this transaction: never committed, free at once.
                DeleteCsums(h, head.Bytenr);
                Space.FreeReserved(head.Bytenr, head.NumBytes);
                return;
            }
            ei = new ExtentItem { Refs = 0, Generation = head.Generation, Flags = ExtentFlags.Data, Owner = head.Owner };
            ExtentTree.Insert(h, ekey, ExtentItem.Size);
            Space.CommitReserved(head.Bytenr, head.NumBytes);
        }
        else
        {
            if (!ExtentTree.Search(h, ekey, path) || !ExtentItem.TryRead(path.Data, out ei))
                ThrowHelper.Corrupt($"data extent [{head.Bytenr}, +{head.NumBytes}) has no EXTENT_ITEM", head.Bytenr);
        }
        long refs = (long)ei.Refs + total;
        if (refs < 0) ThrowHelper.Corrupt($"data extent {head.Bytenr} reference count would go negative", head.Bytenr);
        foreach (var ((root, ino, off), delta) in head.DataDeltas)
            if (delta != 0) UpdateDataRef(h, head.Bytenr, root, ino, off, delta);
        if (refs == 0)
        {
            ExtentTree.Delete(h, ekey);
            DeleteSharedRootRefs(h, head.Bytenr);
            DeleteCsums(h, head.Bytenr);
            Space.Free(head.Bytenr, head.NumBytes, pin: true);
            return;
        }
        ei.Refs = (ulong)refs;
        if (!ExtentTree.Search(h, ekey, path)) ThrowHelper.Invariant("extent item vanished");
        ei.Write(path.MutableData);
    }

    private void UpdateDataRef(TransHandle h, ulong bytenr, ulong root, ulong ino, ulong off, int delta)
    {
        ulong hash = ExtentDataRef.Hash(root, ino, off);
        var path = new TreePath();
        // Open addressing: our ref is at the hash or at a later offset; scan upward.
        ExtentTree.Search(null, new Key(bytenr, KeyTypes.ExtentDataRef, hash), path);
        ulong freeSlot = hash;
        bool found = false;
        ulong at = 0;
        ExtentDataRef r = default;
        if (ExtentTree.NormalizeForward(path))
        {
            do
            {
                var k = path.Key;
                if (k.ObjectId != bytenr || k.Type != KeyTypes.ExtentDataRef) break;
                if (!ExtentDataRef.TryRead(path.Data, out r)) ThrowHelper.Corrupt("malformed EXTENT_DATA_REF", bytenr);
                if (r.Root == root && r.Inode == ino && r.Offset == off) { found = true; at = k.Offset; break; }
                if (k.Offset == freeSlot) freeSlot++;
            } while (ExtentTree.Next(path));
        }
        Span<byte> buf = stackalloc byte[ExtentDataRef.Size];
        if (!found)
        {
            if (delta < 0) ThrowHelper.Corrupt($"dropping a missing data ref ({root},{ino},{off}) of extent {bytenr}", bytenr);
            new ExtentDataRef { Root = root, Inode = ino, Offset = off, Count = (uint)delta }.Write(buf);
            ExtentTree.Put(h, new Key(bytenr, KeyTypes.ExtentDataRef, freeSlot), buf);
            return;
        }
        long count = r.Count + (long)delta;
        var key = new Key(bytenr, KeyTypes.ExtentDataRef, at);
        if (count < 0) ThrowHelper.Corrupt($"data ref count of extent {bytenr} would go negative", bytenr);
        if (count == 0) { ExtentTree.Delete(h, key); return; }
        r.Count = (uint)count;
        r.Write(buf);
        ExtentTree.Put(h, key, buf);
    }

    private void DeleteCsums(TransHandle h, ulong bytenr) =>
        CsumTree.Delete(h, new Key(TreeIds.CsumObjectId, KeyTypes.ExtentCsum, bytenr));
}

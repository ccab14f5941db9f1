using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>Quotas turned on (the owner refs built, every group counted) and off.</summary>
internal sealed partial class FsInfo
{
    /// <summary>
    /// Turns quotas on: creates the quota tree, gives every subvolume tree its
    /// EXTENT_OWNER_REF items (one scan of its file extent items; leaves shared with snapshots
    /// stay shared, only the owner-ref leaves are written per tree), leaves a SHARED_ROOT_REF
    /// for every referrer its extent's writer and the lineage do not explain (clones), counts
    /// every group, sets the QUOTA ro-compat bit and commits. From then on the commit accounts
    /// changes incrementally.
    /// </summary>
    public void EnableQuota() => BuildQuota(upgrade: false);

    private void BuildQuota(bool upgrade)
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "read-only filesystem");
        Commit();
        using (_commitMutex.Lock())
        {
        _commitLock.EnterWrite();
        try
        {
            if (Quota.Enabled != upgrade) return;
            QuotaSwitched();
            ReferrerEntries.Clear();
            var h = new TransHandle(this, Running, 0, holdsCommitLock: false);
            var referrers = BuildOwnerRefs(h);
            using (RootTree.Lock.Write())
            {
                if (QuotaTree == null)
                {
                    var root = BTree.NewEmptyRoot(h, TreeIds.QuotaTree);
                    QuotaTree = new BTree(TreeIds.QuotaTree, Store, root, Sched) { RootChanged = true };
                }
                using (QuotaTree.Lock.Write())
                {
                    // An image of version 1 kept level-0 usage in the quota tree.
                    if (upgrade) DeleteQuotaTreeLevel0Usage(h);
                    PutQuotaStatus(h, on: true);
                }
            }
            var numbers = Engine.Quota.QgroupRecount.Compute(referrers.Values, Quota.MemberSets());
            foreach (var t in AllFsTrees()) numbers.TryAdd(Engine.Quota.Qgroups.ForSubvolume(t.Id), (0, 0));
            Quota.Enable(numbers);
            // An upgrade recounts groups that exist: only those whose numbers changed would be
            // written, and their level-0 usage has just left the quota tree.
            if (upgrade) Quota.MarkLevel0Dirty();
            // The origins that let go of extents others keep, before quotas counted (or before
            // quota version 4): their ORIGIN_DROPs, written once they have a snapshot since.
            RederivePendingOriginDrops();
            var sb = Super.Clone();
            sb.CompatRo |= Features.CompatRoQuota;
            Super = sb;
        }
        finally { _commitLock.ExitWrite(); }
        }
        ForceCommit = true;
        Commit();
    }

    /// <summary>
    /// Turns quotas off (btrfs's quota disable): every group, relation and limit is deleted,
    /// and so is every subvolume's EXTENT_OWNER_REFs and every SHARED_ROOT_REF (nothing keeps
    /// them right while quotas are off; enabling builds them again). The quota tree stays with
    /// only its QGROUP_STATUS, flag ON clear (the QUOTA ro-compat bit stays with the tree).
    /// Runs with no handle open; reservations of writes in flight stay counted per subvolume.
    /// False if quotas were already off.
    /// </summary>
    public bool DisableQuota()
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "read-only filesystem");
        Commit();
        using (_commitMutex.Lock())
        {
            _commitLock.EnterWrite();
            try
            {
                if (!Quota.Enabled || QuotaTree == null) return false;
                var h = new TransHandle(this, Running, 0, holdsCommitLock: false);
                // Limits stop holding from here; the commit below makes it durable.
                QuotaSwitched();
                Quota.Disable();
                ReferrerEntries.Clear();
                ForgetPendingOriginDrops();
                foreach (var t in AllFsTrees())
                    using (t.Lock.Write())
                        foreach (var (bytenr, _, _) in OwnerRefs.Scan(t).ToList()) t.Delete(h, OwnerRefs.KeyOf(bytenr));
                using (ExtentTree.Lock.Write())
                    DeleteExtentItems(h, t => t is KeyTypes.SharedRootRef or KeyTypes.OriginDrop or KeyTypes.ReferrerEntry);
                using (QuotaTree.Lock.Write())
                {
                    var items = new List<Key>();
                    var path = new TreePath();
                    if (QuotaTree.SeekGE(Key.Min, path))
                        do items.Add(path.Key); while (QuotaTree.Next(path));
                    foreach (var k in items) QuotaTree.Delete(h, k);
                    PutQuotaStatus(h, on: false);
                }
                using (RootTree.Lock.Write())
                    foreach (var (subvolume, _) in Level0UsageItems()) RootTree.Delete(h, Level0UsageKey(subvolume));
            }
            finally { _commitLock.ExitWrite(); }
        }
        ForceCommit = true;
        Commit();
        return true;
    }

    /// <summary>
    /// Rewrites every subvolume tree's EXTENT_OWNER_REFs from its file extent items and the
    /// extent tree's SHARED_ROOT_REFs to match; returns each extent's length and referrers.
    /// Caller holds the commit lock exclusively (no handle open).
    /// </summary>
    private Dictionary<ulong, (ulong Len, List<ulong> Roots)> BuildOwnerRefs(TransHandle h)
    {
        ForgetPendingOriginDrops(); // the ORIGIN_DROPs go with the SHARED_ROOT_REFs below
        var referrers = new Dictionary<ulong, (ulong Len, List<ulong> Roots)>();
        Span<byte> buf = stackalloc byte[ExtentOwnerRefItem.Size];
        foreach (var t in AllFsTrees().OrderBy(t => t.Id))
            using (t.Lock.Write())
            {
                var counts = new SortedDictionary<ulong, (ulong Count, ulong Len)>();
                var path = new TreePath();
                if (t.SeekGE(Key.Min, path))
                    do
                    {
                        var k = path.Key;
                        if (k.ObjectId >= TreeIds.OrphanObjectId) break;
                        if (k.Type != KeyTypes.ExtentData) continue;
                        if (!FileExtentItem.TryRead(path.Data, out var fe)) ThrowHelper.Corrupt($"subvolume {t.Id}: malformed EXTENT_DATA {k}");
                        if (fe.Type == FileExtentType.Inline || fe.DiskBytenr == 0) continue;
                        var (c, _) = counts.GetValueOrDefault(fe.DiskBytenr);
                        counts[fe.DiskBytenr] = (c + 1, fe.DiskNumBytes);
                    } while (t.Next(path));
                foreach (var (stale, _, _) in OwnerRefs.Scan(t).ToList()) t.Delete(h, OwnerRefs.KeyOf(stale));
                foreach (var (bytenr, (count, len)) in counts)
                {
                    new ExtentOwnerRefItem { Count = count, NumBytes = len }.Write(buf);
                    t.Put(h, OwnerRefs.KeyOf(bytenr), buf);
                    Engine.Quota.QgroupRecount.AddReferrer(referrers, bytenr, len, t.Id);
                }
            }
        Span<byte> since = stackalloc byte[U64Item.Size];
        U64Item.Write(since, 0); // when it was taken is unknown: every later snapshot is a candidate
        using (ExtentTree.Lock.Write())
            foreach (var (bytenr, (len, roots)) in referrers)
            {
                DeleteSharedRootRefs(h, bytenr);
                var (owner, gen) = h.Transaction.Refs.NewDataExtent(bytenr) ?? ExtentOrigin(bytenr, len);
                var explained = Lineage.Descendants(owner, gen).Prepend(owner).ToHashSet();
                foreach (var r in roots)
                    if (!explained.Contains(r)) ExtentTree.Put(h, new Key(bytenr, KeyTypes.SharedRootRef, r), since);
            }
        return referrers;
    }
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

internal sealed partial class FsInfo
{
    private static readonly Key QgroupStatusKey = new(0, KeyTypes.QgroupStatus, 0);

    private bool _quotaNeedsOwnerRefs;
    /// <summary>Quotas of version 1 or 2: level-0 usage is still in the quota tree, moved
    /// beside the ROOT_ITEMs at the first read-write mount.</summary>
    private bool _quotaLevel0InQuotaTree;
    /// <summary>The QGROUP_STATUS says an older version (3): it says 4 once this mount may write
    /// ORIGIN_DROP items.</summary>
    private bool _quotaStatusOlder;
    private ulong _quotaStatusVersion; // as the mount found it
    /// <summary>Subvolume ids handed out while quotas were on, as QGROUP_STATUS records them
    /// (version 5): none of them is handed out again, so a REFERRER_ENTRY's cursor keeps its
    /// meaning across mounts (a subvolume deleted and cleaned away leaves no ROOT_ITEM to say its
    /// id was used). Touched by the mount and the commit.</summary>
    private ulong _quotaIdsUpTo;
    /// <summary>The membership epoch QGROUP_STATUS holds (<see cref="Engine.Quota.Qgroups.Epoch"/>
    /// as the last commit that wrote it saw it; version 5).</summary>
    private long _quotaEpochWritten;
    /// <summary>Memberships asked for and not yet made: the next commit makes them together
    /// with a recount of every group (<see cref="ApplyRelationChanges"/>). Guarded by
    /// <see cref="_relationChangesLock"/>.</summary>
    private readonly List<Engine.Quota.RelationChange> _pendingRelationChanges = new();
    private readonly FsMutex _relationChangesLock; // guards _pendingRelationChanges

    /// <summary>At mount: quota tree, status, per-group usage and limits.</summary>
    private void LoadQuota()
    {
        QuotaTree = LoadTree(TreeIds.QuotaTree);
        if (QuotaTree == null) return;
        var groups = new Dictionary<ulong, Engine.Quota.Qgroup>();
        var relations = new List<(ulong, ulong)>();
        bool on = false;
        var path = new TreePath();
        if (QuotaTree.SeekGE(Key.Min, path))
        {
            do
            {
                var k = path.Key;
                switch (k.Type)
                {
                    case KeyTypes.QgroupStatus:
                        if (!QgroupStatusItem.TryRead(path.Data, out var st)) ThrowHelper.Corrupt("malformed QGROUP_STATUS");
                        on = (st.Flags & QgroupStatusItem.FlagOn) != 0;
                        _quotaNeedsOwnerRefs = on && st.Version < QgroupStatusItem.OwnerRefsVersion;
                        _quotaLevel0InQuotaTree = on && st.Version < QgroupStatusItem.Level0BesideRootVersion;
                        _quotaStatusOlder = on && st.Version < QgroupStatusItem.CurrentVersion;
                        _quotaStatusVersion = st.Version;
                        if (on && st.Version >= QgroupStatusItem.ReferrerEntryVersion)
                            (_quotaIdsUpTo, _quotaEpochWritten) = (st.SubvolumeIdsUpTo, (long)st.MembershipEpoch);
                        break;
                    case KeyTypes.QgroupInfo:
                        if (!QgroupInfoItem.TryRead(path.Data, out var info)) ThrowHelper.Corrupt($"malformed QGROUP_INFO {QgroupId.Show(k.Offset)}");
                        var g = groups.TryGetValue(k.Offset, out var gi) ? gi : groups[k.Offset] = new Engine.Quota.Qgroup(k.Offset);
                        g.Referenced = info.Referenced;
                        g.Exclusive = info.Exclusive;
                        break;
                    case KeyTypes.QgroupLimit:
                        if (!QgroupLimitItem.TryRead(path.Data, out var lim)) ThrowHelper.Corrupt($"malformed QGROUP_LIMIT {QgroupId.Show(k.Offset)}");
                        var g2 = groups.TryGetValue(k.Offset, out var gl) ? gl : groups[k.Offset] = new Engine.Quota.Qgroup(k.Offset);
                        if ((lim.Flags & QgroupLimitItem.FlagMaxRfer) != 0) g2.MaxReferenced = lim.MaxReferenced;
                        if ((lim.Flags & QgroupLimitItem.FlagMaxExcl) != 0) g2.MaxExclusive = lim.MaxExclusive;
                        break;
                    case KeyTypes.QgroupRelation:
                        // Stored both ways, as in btrfs; the lower level is the member.
                        if (QgroupId.Level(k.ObjectId) < QgroupId.Level(k.Offset)) relations.Add((k.ObjectId, k.Offset));
                        break;
                }
            } while (QuotaTree.Next(path));
        }
        foreach (var (subvolume, info) in Level0UsageItems())
        {
            ulong id = Engine.Quota.Qgroups.ForSubvolume(subvolume);
            var g = groups.TryGetValue(id, out var gi) ? gi : groups[id] = new Engine.Quota.Qgroup(id);
            g.Referenced = info.Referenced;
            g.Exclusive = info.Exclusive;
        }
        Quota.Load(on, groups.Values, relations);
        // Group sides written with REFERRER_ENTRYs are valid for the epoch they name.
        Quota.StartEpochAt(_quotaEpochWritten);
    }

    private static Key Level0UsageKey(ulong subvolume) => new(subvolume, KeyTypes.SubvolQgroupInfo, 0);

    /// <summary>Every SUBVOL_QGROUP_INFO in the root tree: (subvolume, its level-0 usage).
    /// Caller holds the root tree's lock, or runs where nothing else can change it (mount).</summary>
    private List<(ulong Subvolume, QgroupInfoItem Info)> Level0UsageItems()
    {
        var list = new List<(ulong, QgroupInfoItem)>();
        var path = new TreePath();
        if (!RootTree.SeekGE(new Key(TreeIds.FsTree, KeyTypes.SubvolQgroupInfo, 0), path)) return list;
        do
        {
            var k = path.Key;
            if (k.ObjectId >= TreeIds.OrphanObjectId) break;
            if (k.Type != KeyTypes.SubvolQgroupInfo) continue;
            if (!QgroupInfoItem.TryRead(path.Data, out var info)) throw new CorruptionException($"malformed SUBVOL_QGROUP_INFO {k}");
            list.Add((k.ObjectId, info));
        } while (RootTree.Next(path));
        return list;
    }

    /// <summary>Deletes a subvolume's SUBVOL_QGROUP_INFO if it has one (its tree is gone, or its
    /// group is). Caller holds a handle and the root tree's write lock.</summary>
    private void DeleteLevel0Usage(TransHandle h, ulong subvolume) => DeleteIfPresent(h, RootTree, Level0UsageKey(subvolume));

    /// <summary>Deletes an item that may be missing. Caller holds a handle and the tree's write lock.</summary>
    private static void DeleteIfPresent(TransHandle h, BTree tree, Key key)
    {
        // A copy-on-write search would copy the path even when the item is not there.
        if (tree.Get(key) != null) tree.Delete(h, key);
    }

    /// <summary>Deletes the QGROUP_INFO items of level-0 groups from the quota tree (an image
    /// of quota version 1 or 2 kept them there). Caller holds a handle and the quota tree's
    /// write lock.</summary>
    private void DeleteQuotaTreeLevel0Usage(TransHandle h)
    {
        var keys = new List<Key>();
        var path = new TreePath();
        if (QuotaTree!.SeekGE(new Key(0, KeyTypes.QgroupInfo, 0), path))
            do
            {
                var k = path.Key;
                if (k.ObjectId != 0 || k.Type != KeyTypes.QgroupInfo) break;
                if (QgroupId.Level(k.Offset) == 0) keys.Add(k);
            } while (QuotaTree.Next(path));
        foreach (var k in keys) QuotaTree.Delete(h, k);
    }

    /// <summary>In the commit: QGROUP_STATUS says so once a subvolume id above the ones it
    /// records was handed out (in the commit that makes its ROOT_ITEM durable, or an earlier one),
    /// or memberships changed (a new epoch: group sides written before it start again).</summary>
    private int UpdateQuotaStatusIds(TransHandle h)
    {
        if (QuotaTree == null || !Quota.Enabled || (HighestSubvolumeId <= _quotaIdsUpTo && Quota.Epoch == _quotaEpochWritten)) return 0;
        using (QuotaTree.Lock.Write()) PutQuotaStatus(h, on: true);
        return 1;
    }

    /// <summary>Writes QGROUP_INFO (level 0: SUBVOL_QGROUP_INFO) and QGROUP_LIMIT items of
    /// groups whose numbers changed; returns how many groups and relations it wrote or
    /// deleted. Called by the commit, which holds the root tree's write lock.</summary>
    private int UpdateQgroupItems(TransHandle h)
    {
        if (QuotaTree == null) return 0;
        var dirty = Quota.TakeDirty();
        var removed = Quota.TakeRemoved();
        var relations = Quota.TakeRelationChanges();
        if (dirty.Count == 0 && removed.Count == 0 && relations.Count == 0) return 0;
        using var lk = QuotaTree.Lock.Write();
        foreach (var (child, parent, added) in relations)
        {
            // QGROUP_RELATION (child, 246, parent) and (parent, 246, child), empty, as btrfs keeps them.
            if (added)
            {
                QuotaTree.Put(h, new Key(child, KeyTypes.QgroupRelation, parent), ReadOnlySpan<byte>.Empty);
                QuotaTree.Put(h, new Key(parent, KeyTypes.QgroupRelation, child), ReadOnlySpan<byte>.Empty);
            }
            else
            {
                QuotaTree.Delete(h, new Key(child, KeyTypes.QgroupRelation, parent));
                QuotaTree.Delete(h, new Key(parent, KeyTypes.QgroupRelation, child));
            }
        }
        foreach (var id in removed)
        {
            if (QgroupId.Level(id) == 0) DeleteLevel0Usage(h, QgroupId.Id(id));
            else QuotaTree.Delete(h, new Key(0, KeyTypes.QgroupInfo, id));
            DeleteIfPresent(h, QuotaTree, new Key(0, KeyTypes.QgroupLimit, id));
        }
        Span<byte> buf = stackalloc byte[QgroupInfoItem.Size];
        foreach (var (id, referenced, exclusive, limits) in dirty)
        {
            new QgroupInfoItem { Generation = h.Transid, Referenced = referenced, Exclusive = exclusive }.Write(buf);
            // A level-0 group's usage sits beside its subvolume's ROOT_ITEM, in a leaf this
            // commit writes anyway when the subvolume changed (SPEC.md §7, version 3).
            if (QgroupId.Level(id) == 0) RootTree.Put(h, Level0UsageKey(QgroupId.Id(id)), buf[..QgroupInfoItem.Size]);
            else QuotaTree.Put(h, new Key(0, KeyTypes.QgroupInfo, id), buf[..QgroupInfoItem.Size]);
            if (limits is not var (maxReferenced, maxExclusive)) continue; // unchanged: its item stays as it is
            var limitKey = new Key(0, KeyTypes.QgroupLimit, id);
            if (maxReferenced == ulong.MaxValue && maxExclusive == ulong.MaxValue)
            {
                // No limit, no item (SPEC.md §7): 10,000 snapshots do not add 10,000 items.
                DeleteIfPresent(h, QuotaTree, limitKey);
                continue;
            }
            var lim = new QgroupLimitItem
            {
                Flags = (maxReferenced != ulong.MaxValue ? QgroupLimitItem.FlagMaxRfer : 0) | (maxExclusive != ulong.MaxValue ? QgroupLimitItem.FlagMaxExcl : 0),
                MaxReferenced = maxReferenced == ulong.MaxValue ? 0 : maxReferenced,
                MaxExclusive = maxExclusive == ulong.MaxValue ? 0 : maxExclusive,
            };
            lim.Write(buf);
            QuotaTree.Put(h, limitKey, buf[..QgroupLimitItem.Size]);
        }
        return dirty.Count + removed.Count + relations.Count;
    }

    /// <summary>
    /// Turns quotas on: creates the quota tree, gives every subvolume tree its
    /// EXTENT_OWNER_REF items (one scan of its file extent items; leaves shared with snapshots
    /// stay shared, only the owner-ref leaves are written per tree), leaves a SHARED_ROOT_REF
    /// for every referrer its extent's writer and the lineage do not explain (clones), counts
    /// every group, sets the QUOTA ro-compat bit and commits. From then on the commit accounts
    /// changes incrementally.
    /// </summary>
    public void EnableQuota() => BuildQuota(upgrade: false);

    /// <summary>At a read-write mount of an image of an older quota version: version 1 (before
    /// EXTENT_OWNER_REF items) gets them and a recount, keeping the limits; versions 1 and 2
    /// have their level-0 usage moved beside the ROOT_ITEMs (version 3).</summary>
    public void UpgradeQuotaIfNeeded()
    {
        if (!ReadOnly)
        {
            if (_quotaNeedsOwnerRefs) BuildQuota(upgrade: true); // also moves level-0 usage, and notes the ORIGIN_DROPs
            else if (_quotaLevel0InQuotaTree || _quotaStatusOlder)
            {
                MoveLevel0Usage(moveUsage: _quotaLevel0InQuotaTree); // version 2 moves level-0 usage; 3 → 4 rewrites the status only
                // Versions before 4 wrote no ORIGIN_DROPs: the origins that let go before get one
                // now. (Version 4 → 5 only rewrites the status: version 4 has no REFERRER_ENTRY.)
                if (_quotaStatusVersion < QgroupStatusItem.OriginDropVersion) RederivePendingOriginDrops();
            }
        }
        _quotaNeedsOwnerRefs = _quotaLevel0InQuotaTree = _quotaStatusOlder = false;
    }

    /// <summary>Quota version 2 → 4: every level-0 group's usage moves from the quota tree to
    /// its subvolume's SUBVOL_QGROUP_INFO, in one commit (a crash before it leaves version 2
    /// as it was); from version 3, <paramref name="moveUsage"/> false, only the status is
    /// rewritten.</summary>
    private void MoveLevel0Usage(bool moveUsage = true)
    {
        Commit();
        using (_commitMutex.Lock())
        {
            _commitLock.EnterWrite();
            try
            {
                var h = new TransHandle(this, Running, 0, holdsCommitLock: false);
                using (QuotaTree!.Lock.Write())
                {
                    if (moveUsage) DeleteQuotaTreeLevel0Usage(h);
                    PutQuotaStatus(h, on: true);
                }
                if (moveUsage) Quota.MarkLevel0Dirty(); // written by the commit, in the root tree
            }
            finally { _commitLock.ExitWrite(); }
        }
        ForceCommit = true;
        Commit();
    }

    private void PutQuotaStatus(TransHandle h, bool on)
    {
        Span<byte> st = stackalloc byte[QgroupStatusItem.Size];
        _quotaIdsUpTo = on ? HighestSubvolumeId : 0;
        _quotaEpochWritten = Quota.Epoch;
        new QgroupStatusItem
        {
            Version = QgroupStatusItem.CurrentVersion, Generation = h.Transid, Flags = on ? QgroupStatusItem.FlagOn : 0,
            SubvolumeIdsUpTo = _quotaIdsUpTo, MembershipEpoch = (ulong)_quotaEpochWritten,
        }.Write(st);
        QuotaTree!.Put(h, QgroupStatusKey, st);
    }

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

    public void SetQgroupLimit(ulong subvolume, ulong maxReferenced, ulong maxExclusive = ulong.MaxValue) =>
        SetQgroupLimitById(Engine.Quota.Qgroups.ForSubvolume(subvolume), maxReferenced, maxExclusive);

    /// <summary>Sets a group's limits (null keeps that one) and commits them.</summary>
    public void SetQgroupLimitById(ulong qgroup, ulong? maxReferenced, ulong? maxExclusive)
    {
        if (!Quota.Enabled) throw new FsException(Errno.EINVAL, "quotas are not enabled");
        Quota.SetLimit(qgroup, maxReferenced, maxExclusive);
        ForceCommit = true;
        Commit();
    }

    /// <summary>Runs a change of the qgroup hierarchy that leaves every group's numbers as they
    /// are (creating or destroying a group without members) and commits it (its items are
    /// written by the commit, like usage).</summary>
    public Errno ChangeQgroups(Func<Errno> change)
    {
        if (ReadOnly) return Errno.EROFS;
        var e = change();
        if (e != Errno.OK) return e;
        ForceCommit = true;
        Commit();
        return Errno.OK;
    }

    /// <summary>
    /// Makes <paramref name="child"/> a member of <paramref name="parent"/> or ends it
    /// (<paramref name="add"/>). A parent's numbers depend on who else references its members'
    /// extents, so they come from a recount of every subvolume's EXTENT_OWNER_REFs (btrfs rescans
    /// after such a change), and the relation takes effect together with them: the commit makes
    /// it, once its transaction's transitions are accounted, under the qgroup lock that every
    /// reservation takes (<see cref="Engine.Quota.Qgroups.ChangeRelations"/>). Until then the
    /// old relation holds with its exact numbers, so no write ever passes a limit it should meet.
    /// </summary>
    public Errno ChangeQgroupRelation(ulong child, ulong parent, bool add)
    {
        if (ReadOnly) return Errno.EROFS;
        var e = Quota.CheckRelation(child, parent, add); // a clear answer without a commit
        if (e != Errno.OK) return e;
        var change = new Engine.Quota.RelationChange(child, parent, add);
        using (_relationChangesLock.Lock()) _pendingRelationChanges.Add(change);
        // Set after the change is queued: a commit that clears it before taking the queue runs
        // after this line, so this commit or an earlier one makes the change.
        ForceCommit = true;
        Commit();
        return change.Result ?? Errno.EIO; // no answer: the commit did not run (a failed filesystem)
    }

    /// <summary>
    /// btrfs's `quota rescan`: every group's numbers recounted from every subvolume's
    /// EXTENT_OWNER_REFs by the next commit, set in one hold of the qgroup lock (limits hold
    /// throughout; btrfs's rescan starts from zero and limits stop holding until it ends). The
    /// numbers are exact after every commit, so the recount changes none unless the accounting
    /// is wrong: returns how many groups it changed (logged, since that is a bug), -1 when a
    /// relation changed in the same commit. Writers wait while the trees are read.
    /// </summary>
    public (Errno Result, int Corrected) RescanQuota()
    {
        if (ReadOnly) return (Errno.EROFS, 0);
        if (!Quota.Enabled) return (Errno.ENOTCONN, 0);
        var rescan = Engine.Quota.RelationChange.Rescan();
        using (_relationChangesLock.Lock()) _pendingRelationChanges.Add(rescan);
        ForceCommit = true; // after the queueing, as in ChangeQgroupRelation
        Commit();
        if (rescan.Corrected > 0) Warn($"quota rescan: the recount changed the numbers of {rescan.Corrected} qgroup(s): the accounting had drifted");
        return (rescan.Result ?? Errno.EIO, rescan.Corrected);
    }

    private bool HasPendingRelationChanges()
    {
        using var _ = _relationChangesLock.Lock();
        return _pendingRelationChanges.Count > 0;
    }

    /// <summary>In the commit, after its transitions are accounted (the numbers are then the
    /// trees'), with no handle open: the relation changes and rescans asked for. A subvolume's
    /// group joining or leaving a group moves numbers only for that subvolume's extents, worked
    /// out from them (<see cref="ApplyRelationChange"/>); a rescan, or a change of a group of
    /// level 1 or above, gets the recount read from every tree (a full scan, done only when some
    /// change can be made or a rescan was asked for).</summary>
    private void ApplyRelationChanges(TransHandle h)
    {
        List<Engine.Quota.RelationChange> changes;
        using (_relationChangesLock.Lock())
        {
            if (_pendingRelationChanges.Count == 0) return;
            changes = [.. _pendingRelationChanges];
            _pendingRelationChanges.Clear();
        }
        if (!Quota.Enabled)
        {
            foreach (var c in changes) c.Result = Errno.ENOTCONN;
            return;
        }
        bool any = false;
        foreach (var c in changes)
        {
            if (c.IsRescan) { any = true; continue; }
            var e = Quota.CheckRelation(c.Child, c.Parent, c.Add);
            if (e != Errno.OK) c.Result = e; else any = true;
        }
        if (!any) return;
        var pending = changes.Where(c => c.Result == null).ToList();
        if (pending.TrueForAll(c => !c.IsRescan && QgroupId.Level(c.Child) == 0))
        {
            // One at a time, in the order asked: each is worked out under the memberships the
            // ones before it left.
            pending = pending.Where(c => !ApplyRelationChange(h, c)).ToList();
            if (pending.Count == 0) return;
        }
        Stats.QuotaRecounts++;
        // A rescan is asked when numbers may have drifted: the entries the accounting trusted go
        // too (they only save walks; the searches make them again).
        if (pending.Exists(c => c.IsRescan)) DropAllReferrerEntries(h);
        var referrers = OwnerRefReferrers();
        // Checked again under the lock: a group may have been destroyed since.
        Quota.ChangeRelations(changes.Where(c => c.Result == null).ToList(),
            members => Engine.Quota.QgroupRecount.Compute(referrers.Values, members));
    }

    /// <summary>
    /// One membership of a subvolume's group made or ended, with the numbers it moves worked
    /// out from that subvolume's extents (its EXTENT_OWNER_REFs) instead of a recount of every
    /// tree: for each group it joins (the parent, and the ancestors it was not below already),
    /// an extent adds to referenced unless another member has it, and to exclusive unless
    /// someone outside other than the subvolume has it; leaving, the same amounts go (docs/
    /// SNAPSHOTS.md §3, "Relations"). Each question is the commit's referrer search
    /// (<see cref="ReferrerSearch.AnyOther"/>), which stops at the first referrer found on the
    /// side asked about, so a clone joining its tenant's group costs about two lookups per
    /// extent it has, not a scan of 10,000 subvolumes. Returns false when it could not (the
    /// groups moved changed under it): the caller recounts.
    /// </summary>
    private bool ApplyRelationChange(TransHandle h, Engine.Quota.RelationChange c)
    {
        var moved = Quota.MovedByRelation(c.Child, c.Parent, c.Add);
        if (moved == null) return false;
        ulong subvolume = QgroupId.Id(c.Child);
        var deltas = new Dictionary<ulong, (long Referenced, long Exclusive)>();
        if (FsTree(subvolume) is { } tree && moved.Count > 0)
        {
            // Reset by the accounting before (and by the last change): no leaf or path of a tree
            // that has moved since.
            var scratch = _accounting ??= new AccountingScratch(this);
            try
            {
                var (search, path, none) = (scratch.Search, scratch.Path, scratch.NoSharing);
                long sign = c.Add ? 1 : -1;
                // Read first: the searches look the subvolume's own tree up too.
                List<(ulong Bytenr, ulong Len)> extents;
                using (tree.Lock.Read()) extents = OwnerRefs.Scan(tree).Select(x => (x.Bytenr, x.NumBytes)).ToList();
                foreach (var (bytenr, len) in extents)
                {
                    none.Clear();
                    var (writer, shared, entryItem) = ExtentOriginAndSharing(h, bytenr, len, path, none);
                    search.Begin(bytenr, writer, shared, [], [], entryItem);
                    foreach (var (id, members) in moved)
                    {
                        bool otherMember = search.AnyOther(id, members, inside: true, subvolume, subvolume);
                        bool otherOutside = search.AnyOther(id, members, inside: false, subvolume, subvolume);
                        if (otherMember && otherOutside) continue;
                        var (r, e) = deltas.GetValueOrDefault(id);
                        deltas[id] = (r + (otherMember ? 0 : sign * (long)len), e + (otherOutside ? 0 : sign * (long)len));
                    }
                }
            }
            finally { scratch.Reset(); }
        }
        if (!Quota.ChangeRelation(c, moved.Select(g => g.Id).ToList(), deltas)) return false;
        Stats.RelationsWorkedOut++;
        return true;
    }
}

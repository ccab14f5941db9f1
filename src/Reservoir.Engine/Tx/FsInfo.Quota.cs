using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>Quota state on disk: QGROUP_STATUS, each group's usage and limit items, loaded at mount,
/// written by the commit, and older quota versions upgraded (SPEC.md §5.9).</summary>
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
}

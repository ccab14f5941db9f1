using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

internal sealed partial class FsInfo
{
    private static readonly Key QgroupStatusKey = new(0, KeyTypes.QgroupStatus, 0);

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
        Quota.Load(on, groups.Values, relations);
    }

    /// <summary>Writes QGROUP_INFO and QGROUP_LIMIT items of groups whose numbers changed.</summary>
    private bool UpdateQgroupItems(TransHandle h)
    {
        if (QuotaTree == null) return false;
        var dirty = Quota.TakeDirty();
        var removed = Quota.TakeRemoved();
        var relations = Quota.TakeRelationChanges();
        if (dirty.Count == 0 && removed.Count == 0 && relations.Count == 0) return false;
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
            QuotaTree.Delete(h, new Key(0, KeyTypes.QgroupInfo, id));
            QuotaTree.Delete(h, new Key(0, KeyTypes.QgroupLimit, id));
        }
        Span<byte> buf = stackalloc byte[QgroupInfoItem.Size];
        foreach (var g in dirty)
        {
            new QgroupInfoItem { Generation = h.Transid, Referenced = g.Referenced, Exclusive = g.Exclusive }.Write(buf);
            QuotaTree.Put(h, new Key(0, KeyTypes.QgroupInfo, g.Id), buf[..QgroupInfoItem.Size]);
            var lim = new QgroupLimitItem
            {
                Flags = (g.MaxReferenced != ulong.MaxValue ? QgroupLimitItem.FlagMaxRfer : 0) | (g.MaxExclusive != ulong.MaxValue ? QgroupLimitItem.FlagMaxExcl : 0),
                MaxReferenced = g.MaxReferenced == ulong.MaxValue ? 0 : g.MaxReferenced,
                MaxExclusive = g.MaxExclusive == ulong.MaxValue ? 0 : g.MaxExclusive,
            };
            lim.Write(buf);
            QuotaTree.Put(h, new Key(0, KeyTypes.QgroupLimit, g.Id), buf[..QgroupLimitItem.Size]);
        }
        return true;
    }

    /// <summary>
    /// Turns quotas on: creates the quota tree, counts every data extent towards the group of
    /// the subvolume that owns it (a full scan, done once), sets the QUOTA ro-compat bit, and
    /// commits. Later changes are accounted incrementally at each commit.
    /// </summary>
    public void EnableQuota()
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "read-only filesystem");
        Commit();
        using (_commitMutex.Lock())
        {
        _commitLock.EnterWrite();
        try
        {
            if (Quota.Enabled) return;
            var usage = new Dictionary<ulong, ulong>();
            using (ExtentTree.Lock.Read())
            {
                var path = new TreePath();
                if (ExtentTree.SeekGE(Key.Min, path))
                    do
                    {
                        if (path.Key.Type != KeyTypes.ExtentItem) continue;
                        if (!ExtentItem.TryRead(path.Data, out var ei)) ThrowHelper.Corrupt("malformed EXTENT_ITEM");
                        usage[ei.Owner] = usage.GetValueOrDefault(ei.Owner) + path.Key.Offset;
                    } while (ExtentTree.Next(path));
            }
            foreach (var t in AllFsTrees()) usage.TryAdd(t.Id, 0);
            var h = new TransHandle(this, Running, 0, holdsCommitLock: false);
            using (RootTree.Lock.Write())
            {
                var root = BTree.NewEmptyRoot(h, TreeIds.QuotaTree);
                QuotaTree = new BTree(TreeIds.QuotaTree, Store, root, Sched) { RootChanged = true };
                Span<byte> st = stackalloc byte[QgroupStatusItem.Size];
                new QgroupStatusItem { Version = 1, Generation = h.Transid, Flags = QgroupStatusItem.FlagOn }.Write(st);
                QuotaTree.Put(h, QgroupStatusKey, st);
            }
            Quota.Enable(usage.Select(kv => (Engine.Quota.Qgroups.ForSubvolume(kv.Key), kv.Value)));
            var sb = Super.Clone();
            sb.CompatRo |= Features.CompatRoQuota;
            Super = sb;
        }
        finally { _commitLock.ExitWrite(); }
        }
        ForceCommit = true;
        Commit();
    }

    public void SetQgroupLimit(ulong subvolume, ulong maxReferenced, ulong maxExclusive = ulong.MaxValue) =>
        SetQgroupLimitById(Engine.Quota.Qgroups.ForSubvolume(subvolume), maxReferenced, maxExclusive);

    public void SetQgroupLimitById(ulong qgroup, ulong maxReferenced, ulong maxExclusive)
    {
        if (!Quota.Enabled) throw new FsException(Errno.EINVAL, "quotas are not enabled");
        Quota.SetLimit(qgroup, maxReferenced, maxExclusive);
        ForceCommit = true;
        Commit();
    }

    /// <summary>Runs a change of the qgroup hierarchy and commits it (its items are written by
    /// the commit, like usage).</summary>
    public Errno ChangeQgroups(Func<Errno> change)
    {
        if (ReadOnly) return Errno.EROFS;
        var e = change();
        if (e != Errno.OK) return e;
        ForceCommit = true;
        Commit();
        return Errno.OK;
    }
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>Changes asked of the qgroup hierarchy (limits, memberships, rescans) and made by the
/// commit together with their numbers.</summary>
internal sealed partial class FsInfo
{
    /// <summary>Memberships asked for and not yet made: the next commit makes them together
    /// with a recount of every group (<see cref="ApplyRelationChanges"/>). Guarded by
    /// <see cref="_relationChangesLock"/>.</summary>
    private readonly List<Engine.Quota.RelationChange> _pendingRelationChanges = new();
    private readonly FsMutex _relationChangesLock; // guards _pendingRelationChanges

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

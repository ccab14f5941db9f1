using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// ORIGIN_DROP items (SPEC.md §5.9, docs/SNAPSHOTS.md §3): when an origin of an extent (its
/// writer, or a subvolume with a SHARED_ROOT_REF) let go of it while others keep it. Noted by
/// the commit's accounting, held in memory until the origin has a snapshot taken since (or the
/// unmount), written then. Each commit's superblock says since when some are pending
/// (<see cref="Superblock.OriginDropsMissingSince"/>), so a mount after a crash that lost them
/// derives them again from the trees (<see cref="RederivePendingOriginDrops"/>).
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>
    /// ORIGIN_DROPs not written yet, per origin: extent → the transaction it let go of it in.
    /// An item matters only to a search that meets a snapshot of the origin taken after that
    /// transaction, so it is written by the first commit after such a snapshot exists
    /// (<see cref="WritePendingOriginDrops"/>), and by the unmount's. Writing every one at once
    /// cost a quotas-on commit that rewrites 100 files under snapshots 80 µs more accounting.
    /// Lost in a crash, they are noted again at the next read-write mount
    /// (<see cref="RederivePendingOriginDrops"/>); an item missing would only leave the origin's
    /// window open (every later snapshot of it asked, as before ORIGIN_DROP existed), never
    /// count anything wrong. Touched by the commit (serialized by the commit mutex, inside the
    /// commit lock held for writing), by quota enable and disable, which hold the commit lock
    /// for writing too, and by the mount before any other thread starts; read besides by the
    /// early accounting's worker (a clone's IsLineageCandidate), which holds the commit lock
    /// for reading, so that none of those can change it meanwhile.
    /// </summary>
    private readonly Dictionary<ulong, PendingDrops> _pendingOriginDrops = new();

    /// <summary>One origin's pending ORIGIN_DROPs: extent → transaction, and the earliest of
    /// those transactions (each commit asks, per origin, whether a snapshot came after it).</summary>
    private sealed class PendingDrops
    {
        public Dictionary<ulong, ulong> Extents = new();
        public ulong Earliest = ulong.MaxValue;
    }

    /// <summary>Forgets the pending ORIGIN_DROPs (quotas turned off, or every item built again).</summary>
    internal void ForgetPendingOriginDrops() => _pendingOriginDrops.Clear();

    /// <summary>What the last commit that found no origin due saw: the lineage's and the set of
    /// trees' versions. While both stay so and no origin or earlier transaction joined the
    /// pending ones (<see cref="_pendingOriginDropsChanged"/>), no origin can have become due,
    /// and the commit need not ask the lineage about each (cold memory inside the commit).</summary>
    private (long Lineage, long Trees) _originDropsQuietAt = (-1, -1);
    private bool _pendingOriginDropsChanged;

    /// <summary>Writes every pending ORIGIN_DROP at the next commit, not only those of origins
    /// snapshotted since (the unmount's commit, so that the next mount has them).</summary>
    internal bool WriteAllOriginDropsAtNextCommit;

    /// <summary>The early accounting's ORIGIN_DROPs, all of transaction <paramref name="transid"/>
    /// (origin → extent → transaction): an origin with none pending takes the extents whole.</summary>
    private void NoteOriginDrops(Dictionary<ulong, Dictionary<ulong, ulong>> drops, ulong transid)
    {
        foreach (var (root, extents) in drops)
        {
            if (extents.Count == 0) continue;
            if (!_pendingOriginDrops.TryGetValue(root, out var p))
            {
                _pendingOriginDrops[root] = new PendingDrops { Extents = extents, Earliest = transid };
                _pendingOriginDropsChanged = true;
                continue;
            }
            foreach (var (bytenr, t) in extents) p.Extents[bytenr] = t;
            if (transid < p.Earliest) (p.Earliest, _pendingOriginDropsChanged) = (transid, true);
        }
    }

    private void NoteOriginDrop(ulong root, ulong bytenr, ulong transid)
    {
        if (!_pendingOriginDrops.TryGetValue(root, out var p)) _pendingOriginDrops[root] = p = new();
        p.Extents[bytenr] = transid;
        if (transid < p.Earliest) (p.Earliest, _pendingOriginDropsChanged) = (transid, true);
    }

    /// <summary>Writes the pending ORIGIN_DROPs of each origin that has a snapshot taken after
    /// the earliest of them (or all, <see cref="WriteAllOriginDropsAtNextCommit"/>), each only if
    /// its extent is still the one let go of (its EXTENT_ITEM is no younger than the drop: a
    /// freed address may hold a newer extent by now). Caller holds the extent tree's lock.</summary>
    private void WritePendingOriginDrops(TransHandle h)
    {
        if (_pendingOriginDrops.Count == 0) return;
        bool all = WriteAllOriginDropsAtNextCommit;
        WriteAllOriginDropsAtNextCommit = false;
        var now = (Lineage.Version, Interlocked.Read(ref _treesVersion));
        if (!all && !_pendingOriginDropsChanged && now == _originDropsQuietAt) return;
        _pendingOriginDropsChanged = false;
        Span<byte> buf = stackalloc byte[U64Item.Size];
        List<ulong>? done = null;
        foreach (var (root, pending) in _pendingOriginDrops)
        {
            // A subvolume whose tree is gone gets no more snapshots: its items would never be asked.
            if (FsTree(root) == null) { (done ??= new()).Add(root); continue; }
            if (!all && !Lineage.HasSnapshotsSince(root, pending.Earliest + 1)) continue;
            var path = new TreePath();
            foreach (var (bytenr, transid) in pending.Extents.OrderBy(e => e.Key))
            {
                if (!ExtentTree.SeekGE(new Key(bytenr, KeyTypes.ExtentItem, 0), path)) continue;
                var k = path.Key;
                if (k.ObjectId != bytenr || k.Type != KeyTypes.ExtentItem || !ExtentItem.TryRead(path.Data, out var ei) || ei.Generation > transid) continue;
                U64Item.Write(buf, transid);
                ExtentTree.Put(h, new Key(bytenr, KeyTypes.OriginDrop, root), buf);
                h.Transaction.WithoutSharedRootRefs.Remove(bytenr); // it has an item now
            }
            (done ??= new()).Add(root);
        }
        if (done != null) foreach (var r in done) _pendingOriginDrops.Remove(r);
        // Nothing was due (or what was is written): quiet until the lineage or the trees move.
        _originDropsQuietAt = now;
    }

    /// <summary>The earliest transaction of an ORIGIN_DROP noted and not written yet, 0 for
    /// none: each commit puts it in its superblock (origins whose pending set emptied are
    /// forgotten here). Called by the commit.</summary>
    private ulong PendingOriginDropsSince()
    {
        ulong since = 0;
        List<ulong>? empty = null;
        foreach (var (root, pending) in _pendingOriginDrops)
        {
            if (pending.Extents.Count == 0) { (empty ??= new()).Add(root); continue; }
            if (since == 0 || pending.Earliest < since) since = pending.Earliest;
        }
        if (empty != null) foreach (var r in empty) _pendingOriginDrops.Remove(r);
        return since;
    }

    /// <summary>
    /// Notes again every ORIGIN_DROP that should be pending: for each data extent, each origin
    /// (its writer, each SHARED_ROOT_REF subvolume) whose tree exists, has no ORIGIN_DROP for it
    /// and no EXTENT_OWNER_REF (it let go of the extent, which someone else still holds, since
    /// the extent is there). The transaction noted is the last committed one, at or after the
    /// real one: the window it closes still holds every snapshot that can have the extent from
    /// that origin (the ones taken later were taken after it let go), so it is never wrong,
    /// only looser. Run at a read-write mount whose last commit had some pending (a crash lost
    /// them; the unmount writes them all), at the upgrade from quota version 3 and when quotas
    /// are turned on (neither had any). A full scan of the extent tree, like the mount's own
    /// (LoadSpace), and one EXTENT_OWNER_REF lookup per origin that has none, in address order.
    /// Runs with no handle open. Returns how many it noted.
    /// </summary>
    internal int RederivePendingOriginDrops()
    {
        if (!Quota.Enabled || ReadOnly) return 0;
        ulong transid = Running.Transid - 1;
        var probe = new OwnerRefProbe();
        var path = new TreePath();
        var origins = new List<ulong>();
        var closed = new List<ulong>();
        ulong extent = 0;
        bool isData = false;
        int noted = 0;
        void Settle()
        {
            if (!isData) return;
            foreach (var o in origins)
                if (!closed.Contains(o) && FsTree(o) is { } t && !probe.Holds(t, extent))
                {
                    NoteOriginDrop(o, extent, transid);
                    noted++;
                }
        }
        using (ExtentTree.Lock.Read())
        {
            if (ExtentTree.SeekGE(Key.Min, path))
                do
                {
                    var k = path.Key;
                    if (k.ObjectId != extent)
                    {
                        Settle();
                        (extent, isData) = (k.ObjectId, false);
                        origins.Clear();
                        closed.Clear();
                    }
                    switch (k.Type)
                    {
                        case KeyTypes.ExtentItem when ExtentItem.TryRead(path.Data, out var ei):
                            isData = true;
                            origins.Add(ei.Owner);
                            break;
                        case KeyTypes.SharedRootRef: origins.Add(k.Offset); break;
                        case KeyTypes.OriginDrop: closed.Add(k.Offset); break;
                    }
                } while (ExtentTree.Next(path));
            Settle();
        }
        Stats.OriginDropsRederived += noted;
        return noted;
    }
}

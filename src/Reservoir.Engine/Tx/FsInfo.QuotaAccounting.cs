using Reservoir.Common;
using Reservoir.Engine.Quota;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Snapshot-aware quota accounting at commit (docs/SNAPSHOTS.md §3, SPEC.md §5.9). For each
/// extent some subvolume started or stopped referencing in the transaction, the commit finds
/// who references it now, looking only where a reference can be: the subvolume that wrote
/// the extent, subvolumes with a SHARED_ROOT_REF (they took it by a clone), and snapshots of
/// those taken since they had it; for each candidate one lookup of its EXTENT_OWNER_REF. At
/// level 0 the search stops as soon as the answer cannot change anyone's exclusive (two
/// referrers beyond the new ones), so the work per changed extent does not grow with the
/// number of snapshots sharing it.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>Turns the transaction's EXTENT_OWNER_REF transitions into qgroup numbers.
    /// Called by the commit, which holds the extent tree's write lock and no handle is open.</summary>
    private void AccountOwnerTransitions(TransHandle h)
    {
        var changes = h.Transaction.OwnerTransitions.Take();
        if (changes.Count == 0 || !Quota.Enabled) return;
        bool everyone = Quota.HasHigherGroups;
        Span<byte> buf = stackalloc byte[U64Item.Size];
        foreach (var (bytenr, len, acquired, dropped) in changes)
        {
            var (owner, gen) = ExtentOrigin(h, bytenr, len);
            var shared = SharedRootRefs(bytenr);
            foreach (var r in acquired)
            {
                if (r == owner || shared.Any(s => s.Root == r)) continue;
                // Taken by a clone: snapshots of it taken from now on may have it too.
                U64Item.Write(buf, h.Transid);
                ExtentTree.Put(h, new Key(bytenr, KeyTypes.SharedRootRef, r), buf);
                shared.Add((r, h.Transid));
            }
            int enough = everyone ? int.MaxValue : acquired.Count + 2;
            var after = Referrers(bytenr, owner, gen, shared, enough);
            Quota.AccountExtent(len, acquired, dropped, after, complete: after.Count < enough);
        }
    }

    /// <summary>The subvolume that wrote a data extent and the transaction it was written in:
    /// from its EXTENT_ITEM, or from the pending reference head of one allocated now.</summary>
    private (ulong Owner, ulong Generation) ExtentOrigin(TransHandle h, ulong bytenr, ulong len)
    {
        if (h.Transaction.Refs.NewDataExtent(bytenr) is { } n) return n;
        var path = new TreePath();
        if (!ExtentTree.Search(null, new Key(bytenr, KeyTypes.ExtentItem, len), path) || !ExtentItem.TryRead(path.Data, out var ei))
            throw new CorruptionException($"data extent [{bytenr}, +{len}) is referenced but has no EXTENT_ITEM", bytenr);
        return (ei.Owner, ei.Generation);
    }

    /// <summary>The SHARED_ROOT_REFs of an extent: (subvolume, transaction it took the extent
    /// in). Caller holds the extent tree's lock.</summary>
    private List<(ulong Root, ulong Since)> SharedRootRefs(ulong bytenr)
    {
        var list = new List<(ulong, ulong)>();
        var path = new TreePath();
        if (!ExtentTree.SeekGE(new Key(bytenr, KeyTypes.SharedRootRef, 0), path)) return list;
        do
        {
            var k = path.Key;
            if (k.ObjectId != bytenr || k.Type != KeyTypes.SharedRootRef) break;
            if (!U64Item.TryRead(path.Data, out var since)) throw new CorruptionException($"malformed SHARED_ROOT_REF {k}", bytenr);
            list.Add((k.Offset, since));
        } while (ExtentTree.Next(path));
        return list;
    }

    /// <summary>With its extent. Only images that have had quotas can hold any (enabling quotas
    /// creates the quota tree), so the others skip the seek.</summary>
    private void DeleteSharedRootRefs(TransHandle h, ulong bytenr)
    {
        if (QuotaTree == null) return;
        foreach (var (root, _) in SharedRootRefs(bytenr)) ExtentTree.Delete(h, new Key(bytenr, KeyTypes.SharedRootRef, root));
    }

    /// <summary>
    /// Subvolumes that reference the extent now, in a fixed order (the writer, then its
    /// snapshots in the order taken, then each SHARED_ROOT_REF likewise), stopping after
    /// <paramref name="enough"/>. A subvolume can reference an extent only by writing it, by a
    /// clone (which leaves a SHARED_ROOT_REF) or by inheriting it from its snapshot source,
    /// so nothing outside these candidates can.
    /// </summary>
    private List<ulong> Referrers(ulong bytenr, ulong owner, ulong gen, List<(ulong Root, ulong Since)> shared, int enough)
    {
        var found = new List<ulong>();
        var seen = new HashSet<ulong>();
        foreach (var (root, since) in shared.Prepend((owner, gen)))
            foreach (var c in Lineage.Descendants(root, since).Prepend(root))
            {
                if (!seen.Add(c) || FsTree(c) is not { } t || !OwnerRefs.Holds(t, bytenr)) continue;
                found.Add(c);
                if (found.Count >= enough) return found;
            }
        return found;
    }

    /// <summary>
    /// Every group's referenced and exclusive from the EXTENT_OWNER_REFs of every subvolume
    /// (a full scan: quota enable and changed relations; fsck recounts from the file extent
    /// items themselves). Call while no handle is open.
    /// </summary>
    private Dictionary<ulong, (ulong Referenced, ulong Exclusive)> RecountQgroups()
    {
        var referrers = new Dictionary<ulong, (ulong Len, List<ulong> Roots)>();
        foreach (var t in AllFsTrees())
            using (t.Lock.Read())
                foreach (var (bytenr, _, len) in OwnerRefs.Scan(t)) QgroupRecount.AddReferrer(referrers, bytenr, len, t.Id);
        return QgroupRecount.Compute(referrers.Values, Quota.MemberSets());
    }
}

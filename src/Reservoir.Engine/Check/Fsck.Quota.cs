using Reservoir.Engine.Quota;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Check;

/// <summary>
/// Quota groups against a recount from the trees themselves (SPEC.md §5.9, §7): who
/// references each data extent is read from every subvolume's file extent items (a deleted
/// subvolume still being dropped: from its remaining EXTENT_OWNER_REFs, which is what it
/// still holds), every group's referenced and exclusive follow from that, and each
/// subvolume's EXTENT_OWNER_REFs must count its file extent items exactly. Every referrer
/// must be one the commit's search would find: the extent's writer, a SHARED_ROOT_REF, or a
/// snapshot taken of one of those since it had the extent.
/// </summary>
public sealed partial class Fsck
{
    private readonly Dictionary<(ulong Root, ulong Bytenr), (ulong Count, ulong Len)> _fileExtentCounts = new();
    private readonly Dictionary<(ulong Root, ulong Bytenr), (ulong Count, ulong Len)> _ownerRefs = new();
    private readonly Dictionary<ulong, (ulong Parent, ulong Otransid)> _lineage = new();
    private readonly List<(ulong Bytenr, ulong Root, ulong Since)> _sharedRootRefs = new();
    private readonly List<(ulong Bytenr, ulong Root, ulong Until)> _originDrops = new();
    private readonly List<(ulong Bytenr, ulong Owner, ulong Generation, ulong Cursor, ulong[] Ids,
        List<ReferrerEntryItem.SideView> Sides)> _referrerEntries = new();

    private void CountFileExtent(ulong root, FileExtentItem fe)
    {
        var (c, _) = _fileExtentCounts.GetValueOrDefault((root, fe.DiskBytenr));
        _fileExtentCounts[(root, fe.DiskBytenr)] = (c + 1, fe.DiskNumBytes);
    }

    private void VisitOwnerRef(ulong root, Key k, ReadOnlySpan<byte> d)
    {
        string where = $"subvolume {root} EXTENT_OWNER_REF {k.Offset}";
        if (k.Type != KeyTypes.ExtentOwnerRef) { _r.Add(FindingKind.Structure, where, $"unexpected item type {KeyTypes.Name(k.Type)} under the owner-ref objectid"); return; }
        if (!ExtentOwnerRefItem.TryRead(d, out var r)) { _r.Add(FindingKind.Structure, where, "malformed"); return; }
        _ownerRefs[(root, k.Offset)] = (r.Count, r.NumBytes);
    }

    /// <summary>Each data extent's length and referrers, as the trees say.</summary>
    private Dictionary<ulong, (ulong Len, List<ulong> Roots)> ExtentReferrers()
    {
        var referrers = new Dictionary<ulong, (ulong Len, List<ulong> Roots)>();
        foreach (var ((root, bytenr), (_, len)) in _fileExtentCounts)
            if (!_deletedSubvols.Contains(root)) QgroupRecount.AddReferrer(referrers, bytenr, len, root);
        foreach (var ((root, bytenr), (_, len)) in _ownerRefs)
            if (_deletedSubvols.Contains(root)) QgroupRecount.AddReferrer(referrers, bytenr, len, root);
        return referrers;
    }

    /// <summary>Owner refs against file extent items (live subvolumes; quotas of version 2).</summary>
    private void CheckOwnerRefs()
    {
        foreach (var ((root, bytenr), (count, len)) in _fileExtentCounts)
        {
            if (_deletedSubvols.Contains(root)) continue;
            if (!_ownerRefs.TryGetValue((root, bytenr), out var o))
                _r.Add(FindingKind.Structure, $"subvolume {root}", $"{count} file extent item(s) name extent {bytenr} but it has no EXTENT_OWNER_REF");
            else if (o.Count != count || o.Len != len)
                _r.Add(FindingKind.Structure, $"subvolume {root}", $"EXTENT_OWNER_REF of extent {bytenr} counts {o.Count} item(s) of {o.Len} bytes; the tree has {count} of {len}");
        }
        foreach (var ((root, bytenr), _) in _ownerRefs)
            if (!_deletedSubvols.Contains(root) && !_fileExtentCounts.ContainsKey((root, bytenr)))
                _r.Add(FindingKind.Structure, $"subvolume {root}", $"EXTENT_OWNER_REF of extent {bytenr}, which no file extent item names");
    }

    /// <summary>Every referrer of an extent is reachable from its writer or a SHARED_ROOT_REF
    /// through snapshots taken since, and, for an origin with an ORIGIN_DROP, taken no later
    /// than it (the commit's search looks nowhere else). An ORIGIN_DROP belongs to an origin
    /// that does not reference the extent.</summary>
    private void CheckReferrersExplained(Dictionary<ulong, (ulong Len, List<ulong> Roots)> referrers)
    {
        var shared = _sharedRootRefs.ToLookup(s => s.Bytenr);
        var drops = _originDrops.ToDictionary(x => (x.Bytenr, x.Root), x => x.Until);
        // A SHARED_ROOT_REF or ORIGIN_DROP goes with its extent: one left behind would make its
        // subvolume a candidate (or hide its snapshots) for whatever extent the address holds
        // next (and is an item leaked).
        foreach (var (bytenr, root, _) in _sharedRootRefs)
            if (!_dataExtents.ContainsKey(bytenr))
                _r.Add(FindingKind.Structure, $"extent tree item ({bytenr}, SHARED_ROOT_REF, {root})", "names a data extent that does not exist");
        foreach (var (bytenr, root, _) in _originDrops)
        {
            string where = $"extent tree item ({bytenr}, ORIGIN_DROP, {root})";
            if (!_dataExtents.TryGetValue(bytenr, out var ext)) _r.Add(FindingKind.Structure, where, "names a data extent that does not exist");
            else if (ext.Item.Owner != root && !shared[bytenr].Any(s => s.Root == root)) _r.Add(FindingKind.Structure, where, "the subvolume is not an origin of the extent (its writer or one with a SHARED_ROOT_REF)");
            else if (referrers.TryGetValue(bytenr, out var rs) && rs.Roots.Contains(root)) _r.Add(FindingKind.Structure, where, "the subvolume references the extent: it has not let go of it");
        }
        foreach (var (bytenr, (_, roots)) in referrers)
        {
            if (!_dataExtents.TryGetValue(bytenr, out var ext)) continue; // reported by the extent checks
            ulong Until(ulong root) => drops.TryGetValue((bytenr, root), out var u) ? u : ulong.MaxValue;
            var starts = shared[bytenr].Select(s => (s.Root, s.Since)).Prepend((ext.Item.Owner, ext.Item.Generation)).ToList();
            foreach (var r in roots)
                if (!starts.Any(s => Explains(s.Item1, s.Item2, Until(s.Item1), r)))
                    _r.Add(FindingKind.Structure, $"extent {bytenr}", $"referenced by subvolume {r}, which neither wrote it, nor has a SHARED_ROOT_REF, nor is a snapshot of one that had it, taken since it had it (and before it let go of it, by an ORIGIN_DROP)");
        }
    }

    /// <summary>
    /// Each REFERRER_ENTRY against the recount: it belongs to an extent that exists, written by
    /// the subvolume in the transaction it names; every id it lists references the extent, and
    /// every referrer with an id up to its cursor is listed (the commit's search takes the listed
    /// ones as they are and never looks below the cursor again). Its cursor is within the ids
    /// handed out (QGROUP_STATUS), which are never handed out again. Each group side of the
    /// current membership epoch likewise, counting only the referrers on its side of the group
    /// (those of an older epoch are started again before use).
    /// </summary>
    private void CheckReferrerEntries(Dictionary<ulong, (ulong Len, List<ulong> Roots)> referrers, Dictionary<ulong, List<ulong>> children)
    {
        if (_referrerEntries.Count == 0) return;
        ulong highest = Math.Max(_quotaIdsUpTo, _roots.Keys.Where(IsFsTree).DefaultIfEmpty(0UL).Max());
        var members = new Dictionary<ulong, HashSet<ulong>>();
        foreach (var (bytenr, owner, gen, cursor, ids, sides) in _referrerEntries)
        {
            string where = $"extent tree item ({bytenr}, REFERRER_ENTRY, 0)";
            if (!_dataExtents.TryGetValue(bytenr, out var ext)) { _r.Add(FindingKind.Structure, where, "names a data extent that does not exist"); continue; }
            if (ext.Item.Owner != owner || ext.Item.Generation != gen)
            { _r.Add(FindingKind.Structure, where, $"is for the extent written by subvolume {owner} in transaction {gen}; the extent there was written by {ext.Item.Owner} in {ext.Item.Generation}"); continue; }
            var roots = referrers.TryGetValue(bytenr, out var rs) ? rs.Roots : [];
            CheckWalked(where, cursor, ids, roots, highest);
            foreach (var (group, epoch, sc, inside, sids) in sides)
            {
                if (epoch != _quotaEpoch) continue;
                string side = $"{where} side of group {QgroupId.Show(group)} ({(inside ? "members" : "others")})";
                if (!_qgroupInfo.ContainsKey(group)) { _r.Add(FindingKind.Structure, side, "the group does not exist, yet the side is of the current membership epoch"); continue; }
                if (!members.TryGetValue(group, out var m)) members[group] = m = QgroupId.Level0Below(group, c => children.GetValueOrDefault(c));
                CheckWalked(side, sc, sids, roots.Where(r => m.Contains(QgroupId.Of(0, r)) == inside).ToList(), highest);
            }
        }
    }

    /// <summary>A cursor and the referrers listed with it against the referrers it walks over
    /// (<paramref name="roots"/>): every one listed is one, every one up to the cursor is listed.</summary>
    private void CheckWalked(string where, ulong cursor, ulong[] ids, List<ulong> roots, ulong highest)
    {
        if (cursor > highest) _r.Add(FindingKind.Structure, where, $"its cursor {cursor} is above every subvolume id handed out ({highest}): a later id could be missed");
        foreach (var id in ids)
            if (!roots.Contains(id)) _r.Add(FindingKind.Structure, where, $"lists subvolume {id}, which does not reference the extent");
        foreach (var r in roots)
            if (r <= cursor && Array.IndexOf(ids, r) < 0) _r.Add(FindingKind.Structure, where, $"subvolume {r} references the extent but is not listed, though the cursor ({cursor}) passed it");
    }

    /// <summary>Whether <paramref name="r"/> is <paramref name="start"/> or a snapshot (of a
    /// snapshot…) of it taken in transaction <paramref name="since"/> … <paramref name="until"/>.</summary>
    private bool Explains(ulong start, ulong since, ulong until, ulong r)
    {
        for (int hops = 0; hops <= _lineage.Count; hops++)
        {
            if (r == start) return true;
            if (!_lineage.TryGetValue(r, out var p)) return false;
            ulong child = r;
            r = p.Parent;
            if (r == start) return _lineage[child].Otransid >= since && _lineage[child].Otransid <= until;
        }
        return false;
    }

    /// <summary>Where level-0 usage is kept: from version 3 beside the subvolume's ROOT_ITEM
    /// only, one per subvolume that exists (a deleted one's goes with its ROOT_ITEM); before,
    /// in the quota tree only. The usage found is checked against the recount like any group's.</summary>
    private void CheckLevel0UsagePlace()
    {
        bool v3 = _quotaVersion >= QgroupStatusItem.Level0BesideRootVersion;
        if (_quotaVersion < QgroupStatusItem.OriginDropVersion && _originDrops.Count > 0)
            _r.Add(FindingKind.Structure, "quota", $"quota version {_quotaVersion} has {_originDrops.Count} ORIGIN_DROP item(s), which only version {QgroupStatusItem.OriginDropVersion} on may hold");
        if (_quotaVersion < QgroupStatusItem.ReferrerEntryVersion && _referrerEntries.Count > 0)
            _r.Add(FindingKind.Structure, "quota", $"quota version {_quotaVersion} has {_referrerEntries.Count} REFERRER_ENTRY item(s), which only version {QgroupStatusItem.ReferrerEntryVersion} on may hold");
        foreach (var (subvolume, usage) in _level0Usage)
        {
            ulong id = QgroupId.Of(0, subvolume);
            string where = $"root tree item ({subvolume}, SUBVOL_QGROUP_INFO, 0)";
            if (!v3) _r.Add(FindingKind.Structure, where, $"quota version {_quotaVersion} keeps level-0 usage in the quota tree");
            else if (!_roots.ContainsKey(subvolume)) _r.Add(FindingKind.Structure, where, "the subvolume has no ROOT_ITEM (a stale qgroup)");
            if (_qgroupInfo.ContainsKey(id)) _r.Add(FindingKind.Structure, $"qgroup {QgroupId.Show(id)}", "usage kept twice: in the quota tree and beside its ROOT_ITEM");
            else _qgroupInfo[id] = usage;
        }
        if (!v3) return;
        foreach (var id in _qgroupInfo.Keys.Where(i => QgroupId.Level(i) == 0 && !_level0Usage.ContainsKey(QgroupId.Id(i))).ToList())
            _r.Add(FindingKind.Structure, $"quota tree item (0, QGROUP_INFO, {id})", "a level-0 group's usage belongs beside its subvolume's ROOT_ITEM (quota version 3)");
        // Every subvolume has its level-0 group while quotas are on (a deleted one until its
        // tree is gone), created in the transaction that creates it.
        foreach (var subvolume in _roots.Keys.Where(IsFsTree).Where(i => !_level0Usage.ContainsKey(i)).Order())
            _r.Add(FindingKind.Structure, $"subvolume {subvolume}", "quotas are on but it has no level-0 qgroup (no SUBVOL_QGROUP_INFO)");
    }

    private void CheckQuotaUsage(Dictionary<ulong, List<ulong>> children)
    {
        bool v2 = _quotaVersion >= QgroupStatusItem.OwnerRefsVersion;
        if (v2) CheckOwnerRefs();
        var referrers = ExtentReferrers();
        if (v2) CheckReferrersExplained(referrers);
        CheckReferrerEntries(referrers, children);
        var members = _qgroupInfo.Keys.ToDictionary(id => id,
            id => QgroupId.Level(id) == 0 ? [id] : QgroupId.Level0Below(id, c => children.GetValueOrDefault(c)));
        var recount = QgroupRecount.Compute(referrers.Values, members);
        foreach (var (id, (rfer, excl)) in recount)
            if (QgroupId.Level(id) == 0 && !_qgroupInfo.ContainsKey(id))
                _r.Add(FindingKind.Structure, $"qgroup {QgroupId.Show(id)}", $"missing, yet its subvolume references {rfer} bytes");
        foreach (var (id, info) in _qgroupInfo)
        {
            var (rfer, excl) = recount.GetValueOrDefault(id);
            if (info.Referenced != rfer || info.Exclusive != excl)
                _r.Add(FindingKind.Structure, $"qgroup {QgroupId.Show(id)}", $"referenced {info.Referenced}, exclusive {info.Exclusive}; a recount gives {rfer} and {excl}");
        }
    }
}

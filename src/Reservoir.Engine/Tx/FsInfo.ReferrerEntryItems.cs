using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// REFERRER_ENTRY items (SPEC.md §5.9, docs/SNAPSHOTS.md §3 "Cost"): the referrer entries the
/// quota accounting keeps (<see cref="ReferrerEntries"/>) are written to the extent tree by the
/// commit that changes them, so a new mount goes on from where the searches got to instead of
/// walking each such extent's subvolume ids again (with N writable snapshots letting go of a
/// golden image in turn, the first commit after a mount looked at N/2 ids per extent).
///
/// Why an item read at a later mount is still right. It was written by the commit that last
/// changed the extent's referrers or the entry: every transition of the extent is accounted by a
/// commit, which loads the item (its origins' read says it exists) and applies the transition
/// before writing it again; a subvolume created since has an id above every id in use when it
/// was made, so above the cursor (the cursor only passes ids in use). The one thing a later
/// mount changes is which ids are in use: a subvolume deleted and cleaned away leaves no
/// ROOT_ITEM, so its id may be handed out again on a later mount. A loaded cursor is therefore
/// cut back to the highest id in use at this mount (<see cref="_highestIdAtMount"/>; ids made on
/// this mount are above it): an id above it is looked at again by the walk, none below it can be
/// new. Items go with their extent (<see cref="DeleteSharedRootRefs"/>) and with quotas turned
/// off or on.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>The highest subvolume id in use when this mount began (every subvolume made on
    /// this mount has a higher one): loaded entries' cursors are cut back to it.</summary>
    private ulong _highestIdAtMount;

    /// <summary>The extent's entry as its REFERRER_ENTRY item holds it, kept in memory; null if
    /// it has none that fits (an item of another extent, or malformed, is deleted by the commit:
    /// entries only save walks). Caller is the commit's accounting (extent tree locked).</summary>
    internal ReferrerEntries.Entry? LoadReferrerEntry(ulong bytenr, ulong owner, ulong generation)
    {
        var data = ExtentTree.Get(ReferrerEntryKey(bytenr));
        if (data == null) return null;
        if (!ReferrerEntryItem.TryRead(data, out ulong o, out ulong g, out ulong cursor, out int count, out int sides) || o != owner || g != generation)
        {
            ReferrerEntries.ItemGone(bytenr);
            return null;
        }
        var e = new ReferrerEntries.Entry(owner, generation, Math.Min(cursor, _highestIdAtMount));
        for (int i = 0; i < count; i++) e.Add(ReferrerEntryItem.Id(data, i));
        foreach (var v in ReferrerEntryItem.Sides(data, count, sides))
        {
            // One of an older membership epoch is started again when it is asked.
            var side = new ReferrerEntries.GroupSide(v.Group, v.Inside, (long)v.Epoch) { Cursor = Math.Min(v.Cursor, _highestIdAtMount) };
            foreach (var id in v.Ids) side.Add(id);
            (e.Sides ??= new()).Add(side);
        }
        ReferrerEntries.KeepLoaded(bytenr, e);
        Stats.ReferrerEntriesLoaded++;
        return e;
    }

    private static Key ReferrerEntryKey(ulong bytenr) => new(bytenr, KeyTypes.ReferrerEntry, 0);

    /// <summary>Forgets every referrer entry and deletes every REFERRER_ENTRY item (`quota
    /// rescan`). Caller is the commit, with the extent tree locked.</summary>
    private void DropAllReferrerEntries(TransHandle h)
    {
        ReferrerEntries.Clear();
        DeleteExtentItems(h, t => t == KeyTypes.ReferrerEntry);
    }

    /// <summary>Deletes every extent-tree item of the types <paramref name="type"/> accepts (a
    /// scan of the whole tree). Caller holds the extent tree's write lock.</summary>
    private void DeleteExtentItems(TransHandle h, Func<byte, bool> type)
    {
        var keys = new List<Key>();
        var path = new TreePath();
        if (ExtentTree.SeekGE(Key.Min, path))
            do if (type(path.Key.Type)) keys.Add(path.Key); while (ExtentTree.Next(path));
        foreach (var k in keys) ExtentTree.Delete(h, k);
    }

    /// <summary>In the commit's fold, after the delayed refs ran (so an extent freed by this
    /// commit is gone): writes the items of the entries changed since the last commit and
    /// deletes those whose entry went. An entry of an extent freed meanwhile is not written.
    /// Returns how many items changed (the fold goes round again for the nodes they dirtied).</summary>
    private int WriteReferrerEntries(TransHandle h)
    {
        if (!ReferrerEntries.HasWrites) return 0;
        var (changed, gone) = ReferrerEntries.TakeWrites();
        int n = 0;
        foreach (var bytenr in gone)
            if (ExtentTree.Delete(h, ReferrerEntryKey(bytenr))) n++;
        if (changed.Count == 0) return n;
        changed.Sort((a, b) => a.Bytenr.CompareTo(b.Bytenr));
        // An item stays small beside the extent's others (a leaf holds several): its group
        // sides of the current epoch go in, the most recently used first, as they fit.
        int budget = Math.Min(ExtentTree.MaxItemData / 4, 8192);
        var buf = new byte[Math.Max(budget, ReferrerEntryItem.SizeFor(ReferrerEntryItem.MaxIds))];
        var kept = new List<ReferrerEntries.GroupSide>();
        long epoch = Quota.Epoch;
        var path = new TreePath();
        foreach (var (bytenr, e) in changed)
        {
            if (e.Count > ReferrerEntryItem.MaxIds || !ExtentStillThere(bytenr, e, path))
            {
                if (ExtentTree.Delete(h, ReferrerEntryKey(bytenr))) n++;
                ReferrerEntries.DropFreed(bytenr, e);
                continue;
            }
            int size = ReferrerEntryItem.SizeFor(e.Count);
            kept.Clear();
            if (e.Sides != null)
                for (int i = e.Sides.Count - 1; i >= 0; i--)
                {
                    var side = e.Sides[i];
                    int more = ReferrerEntryItem.SideSizeFor(side.Count);
                    if (side.Epoch != epoch || side.Count > ReferrerEntryItem.MaxIds || size + more > budget) continue;
                    kept.Add(side);
                    size += more;
                }
            int at = ReferrerEntryItem.Write(buf, e.Owner, e.Generation, e.Cursor, e.Known, kept.Count);
            for (int i = kept.Count - 1; i >= 0; i--)
                at = ReferrerEntryItem.WriteSide(buf, at, kept[i].Group, (ulong)kept[i].Epoch, kept[i].Cursor, kept[i].Inside, kept[i].Known);
            ExtentTree.Put(h, ReferrerEntryKey(bytenr), buf.AsSpan(0, size));
            path.Reset(); // the tree changed
            e.OnDisk = true;
            n++;
        }
        Stats.ReferrerEntriesWritten += changed.Count;
        return n;
    }

    /// <summary>Whether the entry's extent still has its EXTENT_ITEM, written by the same
    /// subvolume in the same transaction (not freed by this commit, not another extent).</summary>
    private bool ExtentStillThere(ulong bytenr, ReferrerEntries.Entry e, TreePath path)
    {
        if (!ExtentTree.SeekGE(new Key(bytenr, KeyTypes.ExtentItem, 0), path)) return false;
        var k = path.Key;
        return k.ObjectId == bytenr && k.Type == KeyTypes.ExtentItem && ExtentItem.TryRead(path.Data, out var ei)
            && ei.Owner == e.Owner && ei.Generation == e.Generation;
    }
}

using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// EXTENT_OWNER_REF items (SPEC.md §5.9): each subvolume tree counts, inside itself, how many
/// of its file extent items name each data extent. Because they live in the subvolume's own
/// tree a snapshot inherits them in O(1), and a change by one subvolume rewrites only its own
/// leaf, however many snapshots share the rest. A subvolume references an extent exactly
/// while its item exists, which is what makes referenced and exclusive exact without btrfs's
/// back-reference walks (docs/SNAPSHOTS.md §3).
/// </summary>
internal static class OwnerRefs
{
    public static Key KeyOf(ulong bytenr) => new(TreeIds.OwnerRefObjectId, KeyTypes.ExtentOwnerRef, bytenr);

    /// <summary>Adds <paramref name="delta"/> file extent items naming an extent to the tree's
    /// count, and notes in the transaction when the tree starts (0 → ≥ 1) or stops (→ 0)
    /// referencing it (<paramref name="isNew"/>: the tree is writing the extent in this
    /// transaction). Caller holds a handle and the tree's write lock.</summary>
    public static void Change(TransHandle h, BTree tree, ulong bytenr, ulong numBytes, long delta, bool isNew = false)
    {
        if (delta == 0) return;
        var key = KeyOf(bytenr);
        var path = new TreePath();
        // One copy-on-write search; the item is then changed, deleted or inserted in place.
        if (!tree.Search(h, key, path))
        {
            if (delta < 0)
                throw new CorruptionException($"subvolume {tree.Id}: dropping a missing EXTENT_OWNER_REF of extent {bytenr}", bytenr);
            new ExtentOwnerRefItem { Count = (ulong)delta, NumBytes = numBytes }.Write(tree.Insert(h, key, ExtentOwnerRefItem.Size));
            h.Transaction.OwnerTransitions.Note(tree.Id, bytenr, numBytes, +1, isNew ? h.Transid : 0);
            return;
        }
        if (!ExtentOwnerRefItem.TryRead(path.Data, out var r))
            throw new CorruptionException($"subvolume {tree.Id}: malformed EXTENT_OWNER_REF of extent {bytenr}", bytenr);
        long count = (long)r.Count + delta;
        if (count < 0)
            throw new CorruptionException($"subvolume {tree.Id}: EXTENT_OWNER_REF of extent {bytenr} would go negative", bytenr);
        if (count == 0)
        {
            tree.DeleteAt(h, path);
            h.Transaction.OwnerTransitions.Note(tree.Id, bytenr, numBytes, -1);
            return;
        }
        new ExtentOwnerRefItem { Count = (ulong)count, NumBytes = numBytes }.Write(path.MutableData);
    }

    /// <summary>Whether the tree references the extent now.</summary>
    public static bool Holds(BTree tree, ulong bytenr)
    {
        using var lk = tree.Lock.Read();
        var path = new TreePath();
        return tree.Search(null, KeyOf(bytenr), path);
    }

    /// <summary>Every (extent, count, length) the tree's items name, in address order, from
    /// <paramref name="from"/> on. Caller holds the tree's lock.</summary>
    public static IEnumerable<(ulong Bytenr, ulong Count, ulong NumBytes)> Scan(BTree tree, ulong from = 0)
    {
        var path = new TreePath();
        if (!tree.SeekGE(KeyOf(from), path)) yield break;
        do
        {
            var k = path.Key;
            if (k.ObjectId != TreeIds.OwnerRefObjectId || k.Type != KeyTypes.ExtentOwnerRef) yield break;
            if (!ExtentOwnerRefItem.TryRead(path.Data, out var r))
                throw new CorruptionException($"subvolume {tree.Id}: malformed EXTENT_OWNER_REF of extent {k.Offset}", k.Offset);
            yield return (k.Offset, r.Count, r.NumBytes);
        } while (tree.Next(path));
    }
}

/// <summary>
/// "Does this tree reference the extent?" for many extents in address order, within one
/// commit's quota accounting: it keeps the leaf each tree's last answer came from, and an
/// extent whose key falls inside that leaf's key range is answered from the leaf alone (in a
/// B+tree such a key can be in no other leaf). Consecutive extents' EXTENT_OWNER_REFs sit in
/// the same leaf, so most answers need no descent and no lock. What is kept is keyed by the
/// tree's root block, not by the tree: snapshots taken with no change between them share their
/// root block, so they hold the same items, and the second of them asked about the same
/// extent is answered by the first's answer (the accounting asks two snapshots per extent the
/// source lets go of). Valid only while the trees cannot change: the commit holds the commit
/// lock exclusively, so no handle is open and no subvolume tree moves until the accounting is
/// done (and two trees with one root block at the same moment have the same content: a block
/// several trees share is copied before it is changed, and a freed address is not reused
/// within the transaction).
/// </summary>
internal sealed class OwnerRefProbe
{
    private struct Kept
    {
        public TreeNode? Leaf;
        public int Slot;
        public ulong Bytenr; // the last extent asked about, and its answer
        public bool Asked, Answer;
    }

    private readonly Dictionary<ulong, Kept> _byRoot = new();

    /// <summary>Forgets every leaf (a new commit: the trees may have changed).</summary>
    public void Clear() => _byRoot.Clear();

    public bool Holds(BTree tree, ulong bytenr)
    {
        var key = OwnerRefs.KeyOf(bytenr);
        ref var at = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_byRoot, tree.Root.Bytenr, out bool known);
        if (known && at.Asked && at.Bytenr == bytenr) return at.Answer;
        bool hit;
        // Asked in address order, the next extent's item is at or just after the last
        // answer's slot in the leaf kept for the root.
        if (known && at.Leaf != null && at.Leaf.Spans(key)) hit = at.Leaf.SearchFrom(key, at.Slot, out at.Slot);
        else
        {
            using var lk = tree.Lock.Read();
            var path = new TreePath();
            hit = tree.Search(null, key, path);
            (at.Leaf, at.Slot) = (path.Leaf, path.Slots[0]);
        }
        (at.Bytenr, at.Asked, at.Answer) = (bytenr, true, hit);
        return hit;
    }
}

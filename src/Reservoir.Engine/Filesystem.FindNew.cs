using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>One file extent item a find-new walk found: where it is in its file, where its
/// data is (<see cref="DiskStart"/> 0 for an inline one), the generation it says, and a path to
/// its file from the subvolume's root (null for a file with no name, unlinked while open).
/// <see cref="Length"/> is the item's num_bytes (an inline item's data length).</summary>
public readonly record struct NewExtent(ulong Inode, ulong FileOffset, ulong Length, ulong DiskStart, ulong ExtentOffset,
    ulong Generation, FileExtentType Type, string? Path);

/// <summary>What <see cref="Filesystem.FindNew"/> found: the extents, the subvolume's
/// generation when the walk began (btrfs's "transid marker"), and the tree nodes it read.</summary>
public sealed record NewExtents(IReadOnlyList<NewExtent> Extents, ulong Marker, long NodesRead);

public sealed partial class Filesystem
{
    /// <summary>Items a find-new walk takes under one hold of the tree's read lock.</summary>
    internal const int FindNewBatchItems = 4096;

    /// <summary>
    /// btrfs's `subvolume find-new`: every file extent item of subvolume
    /// <paramref name="treeId"/> whose generation is <paramref name="minGeneration"/> or later,
    /// in (inode, file offset) order, each with a path to its file (the first name of its first
    /// reference, as btrfs-progs resolves it). Everything dirty is written back and committed
    /// first (btrfs syncs too), so the marker is the generation of the subvolume's last commit
    /// (<see cref="Marker"/>); a later walk from that marker shows everything written since, and
    /// again what the marker's own commit wrote (the comparison is "or later", as btrfs's).
    /// The walk steps over every subtree no commit since <paramref name="minGeneration"/> wrote
    /// (<see cref="GenerationSearch"/>): it costs what changed, not what the subvolume holds.
    /// It reads in batches of <see cref="FindNewBatchItems"/> items, so writers are held up by one
    /// batch at a time; what they change meanwhile may or may not be seen, as with btrfs.
    /// </summary>
    public Errno FindNew(ulong treeId, ulong minGeneration, out NewExtents result)
    {
        result = new NewExtents([], 0, 0);
        var sv = SubvolumeOf(treeId);
        if (sv == null || sv.Dead) return Errno.ENOENT;
        var se = Sync();
        if (se != Errno.OK) return se;
        NewExtents found = result;
        var e = Guard(NodeIds.Encode(treeId, RootIno), () =>
        {
            if (Fs.RootItemOf(treeId) is not { } ri) return Errno.ENOENT;
            var extents = new List<NewExtent>();
            var paths = new InodePaths(sv.Tree);
            long nodes = 0;
            Key? from = FindNewStart;
            while (from is { } k)
            {
                var be = FindNewBatch(sv, minGeneration, k, FindNewBatchItems, paths, extents, ref nodes, out from);
                if (be != Errno.OK) return be;
            }
            found = new NewExtents(extents, Marker(ri), nodes);
            return Errno.OK;
        });
        result = found;
        return e;
    }

    /// <summary>Where a find-new walk starts: the first key an EXTENT_DATA item can have.</summary>
    public static readonly Key FindNewStart = new(0, KeyTypes.ExtentData, 0);

    /// <summary>
    /// One page of <see cref="FindNew"/> for a caller that pages the answer itself (the FUSE
    /// daemon, which hands it out through an ioctl of bounded size): the extents from key
    /// <paramref name="from"/> on (<see cref="FindNewStart"/> first), about
    /// <paramref name="maxItems"/> items of the tree (a leaf is read whole), no sync (the caller
    /// syncs before the first page); <paramref name="resume"/> is where the next page starts,
    /// null at the end. <paramref name="marker"/>: the subvolume's generation now.
    /// </summary>
    public Errno FindNewPage(ulong treeId, ulong minGeneration, Key from, int maxItems, out List<NewExtent> extents, out ulong marker, out Key? resume)
    {
        var found = extents = new List<NewExtent>();
        marker = 0;
        resume = null;
        var sv = SubvolumeOf(treeId);
        if (sv == null || sv.Dead) return Errno.ENOENT;
        ulong m = 0;
        Key? next = null;
        var e = Guard(NodeIds.Encode(treeId, RootIno), () =>
        {
            if (Fs.RootItemOf(treeId) is not { } ri) return Errno.ENOENT;
            m = Marker(ri);
            long nodes = 0;
            return FindNewBatch(sv, minGeneration, from, Math.Max(1, maxItems), new InodePaths(sv.Tree), found, ref nodes, out next);
        });
        marker = m;
        resume = next;
        return e;
    }

    /// <summary>
    /// The generation a later find-new starts from to see what comes after this one: the
    /// subvolume's last commit (ROOT_ITEM generation), or its creation transaction if that is
    /// later. A snapshot shares its source's root node, so its ROOT_ITEM carries the source's
    /// generation, older than the transaction that took it; nothing written into the source
    /// after the snapshot is older than that transaction, so it is the marker, as btrfs's (whose
    /// snapshots get a root of their creation transaction) — and a diff of a subvolume against
    /// a blank snapshot of it does not list what the snapshot already held.
    /// </summary>
    private static ulong Marker(RootItem ri) => Math.Max(ri.Generation, ri.Otransid);

    /// <summary>One batch of a find-new walk under one hold of the tree's read lock.</summary>
    private Errno FindNewBatch(Subvolume sv, ulong minGeneration, Key from, int maxItems, InodePaths paths, List<NewExtent> into, ref long nodes, out Key? resume)
    {
        resume = null;
        var t = sv.Tree;
        using var lk = t.Lock.Read();
        if (sv.Dead) return Errno.ENOENT;
        resume = GenerationSearch.Run(t, from, minGeneration, maxItems, (key, data) =>
        {
            if (key.Type != KeyTypes.ExtentData || key.ObjectId > NodeIds.MaxIno) return;
            if (!FileExtentItem.TryRead(data, out var fe)) throw new CorruptionException($"malformed EXTENT_DATA at file offset {key.Offset}", inode: key.ObjectId);
            if (fe.Generation < minGeneration) return;
            into.Add(new NewExtent(key.ObjectId, key.Offset, fe.NumBytes, fe.DiskBytenr, fe.Offset, fe.Generation, fe.Type, paths.Of(key.ObjectId)));
        }, ref nodes);
        return Errno.OK;
    }

    /// <summary>
    /// Paths from a subvolume's root as btrfs-progs' find-new names files: each inode by the
    /// first name of its first reference (INODE_REF items come before INODE_EXTREF, and by
    /// directory inode number), each directory above it likewise; remembered per inode, so a
    /// walk resolves every directory once. Read under the tree's read lock.
    /// </summary>
    private sealed class InodePaths(BTree tree)
    {
        private readonly Dictionary<ulong, string?> _known = new() { [RootIno] = "" };

        public string? Of(ulong ino)
        {
            if (_known.TryGetValue(ino, out var p)) return p;
            // Upwards to the root or to something known; a loop in a damaged tree, or a chain
            // deeper than any path can be, ends as "no path".
            var chain = new List<(ulong Ino, string Name)>();
            ulong at = ino;
            string? above = null;
            while (!_known.TryGetValue(at, out above))
            {
                if (chain.Count > 4096 || FirstName(at) is not { } n) { above = null; break; }
                chain.Add((at, n.Name));
                at = n.Dir;
            }
            for (int i = chain.Count - 1; i >= 0; i--)
            {
                above = above == null ? null : above.Length == 0 ? chain[i].Name : above + "/" + chain[i].Name;
                _known[chain[i].Ino] = above;
            }
            if (chain.Count == 0) _known[ino] = null; // no name at all
            return _known[ino];
        }

        private (ulong Dir, string Name)? FirstName(ulong ino) =>
            NamesOf(tree, ino, firstOnly: true) is [var first, ..] ? first : null;
    }
}

using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>What one file's extents take and what of it is its alone (`reservoir filesystem
/// du`, as btrfs filesystem du): <paramref name="Total"/> the bytes its extent items reference;
/// <paramref name="Exclusive"/> those nothing else references (deleting the file frees them);
/// <paramref name="Shared"/> the rest as device ranges, so that a set of files can count
/// what they share once; <paramref name="SharedInline"/> shared bytes kept inline in a leaf a
/// snapshot shares (no device range of their own).</summary>
public readonly record struct FileUsage(ulong Total, ulong Exclusive, List<(ulong Start, ulong Len)> Shared, ulong SharedInline);

public sealed partial class Filesystem
{
    /// <summary>
    /// One file's usage (<see cref="FileUsage"/>). An extent item's bytes are shared when the
    /// data extent has more references than this file's own items to it (a reflink, or a
    /// snapshot's older copy of the leaf), or when the leaf holding the item, or a node above
    /// it, has more than one parent (a snapshot shares it). A file that references one extent
    /// from several items (a write split it) keeps it exclusive. The answer is read from the
    /// trees as they are, without holding off writers: a file being written gives a figure
    /// of some moment of it, as fiemap does.
    /// </summary>
    public Errno DiskUsage(ulong node, out FileUsage usage)
    {
        usage = new(0, 0, [], 0);
        var e = Get(node, out var inode);
        if (e != Errno.OK) return e;
        FileUsage result = usage;
        try
        {
            e = Guard(node, () =>
            {
                var items = new List<(FileExtentItem Fe, int Leaf)>();
                var leaves = new List<List<(ulong Bytenr, int Level)>>();
                using (inode.Lock.Read())
                using (inode.Subvol.Tree.Lock.Read())
                {
                    var t = inode.Subvol.Tree;
                    var path = new Tree.TreePath();
                    ulong lastLeaf = ulong.MaxValue;
                    for (bool ok = t.SeekGE(FileExtents.ExtentKey(inode.Ino, 0), path); ok; ok = t.Next(path))
                    {
                        var k = path.Key;
                        if (k.ObjectId != inode.Ino || k.Type != KeyTypes.ExtentData) break;
                        if (!FileExtentItem.TryRead(path.Data, out var fe)) throw new CorruptionException($"malformed EXTENT_DATA at offset {k.Offset}", inode: inode.Ino);
                        if (path.Leaf.Bytenr != lastLeaf)
                        {
                            lastLeaf = path.Leaf.Bytenr;
                            var chain = new List<(ulong, int)>();
                            for (int l = 0; l <= t.Root.Level; l++) chain.Add((path.Nodes[l]!.Bytenr, l));
                            leaves.Add(chain);
                        }
                        if (fe.Type == FileExtentType.Inline || fe.DiskBytenr != 0) items.Add((fe, leaves.Count - 1));
                    }
                }
                // Outside the file's tree lock: the extent tree's answers.
                var tx = Fs.Running;
                // The nodes above the leaves are the same for most of them: each asked once.
                var nodeShared = new Dictionary<ulong, bool>();
                bool Shared((ulong Bytenr, int Level) n)
                {
                    if (!nodeShared.TryGetValue(n.Bytenr, out bool sh)) nodeShared[n.Bytenr] = sh = Fs.TreeBlockRefs(n.Bytenr, n.Level, tx) > 1;
                    return sh;
                }
                var sharedLeaf = leaves.Select(chain => chain.Any(Shared)).ToList();
                var own = items.Where(i => i.Fe.Type != FileExtentType.Inline).GroupBy(i => (i.Fe.DiskBytenr, i.Fe.DiskNumBytes)).ToDictionary(g => g.Key, g => (ulong)g.Count());
                var refs = own.Keys.ToDictionary(k => k, k => ExtentRefs(k.DiskBytenr, k.DiskNumBytes, tx));
                ulong total = 0, exclusive = 0, sharedInline = 0;
                var shared = new List<(ulong, ulong)>();
                foreach (var (fe, leaf) in items)
                {
                    total += fe.NumBytes;
                    if (fe.Type == FileExtentType.Inline)
                    {
                        if (sharedLeaf[leaf]) sharedInline += fe.NumBytes; else exclusive += fe.NumBytes;
                        continue;
                    }
                    var key = (fe.DiskBytenr, fe.DiskNumBytes);
                    if (sharedLeaf[leaf] || refs[key] > (long)own[key]) shared.Add((fe.DiskBytenr + fe.Offset, fe.NumBytes));
                    else exclusive += fe.NumBytes;
                }
                result = new(total, exclusive, shared, sharedInline);
                return Errno.OK;
            });
        }
        finally { Put(inode); }
        usage = result;
        return e;
    }

    /// <summary>A data extent's reference count: its EXTENT_ITEM's refs with the changes the
    /// running transaction has not folded in yet (a clone just made counts).</summary>
    private long ExtentRefs(ulong bytenr, ulong length, Tx.Transaction tx)
    {
        byte[]? d;
        using (Fs.ExtentTree.Lock.Read()) d = Fs.ExtentTree.Get(new Key(bytenr, KeyTypes.ExtentItem, length));
        long refs = d != null && ExtentItem.TryRead(d, out var ei) ? (long)ei.Refs : 0;
        return refs + tx.Refs.PendingDataRefs(bytenr);
    }

    /// <summary>Bytes covered by the union of <paramref name="ranges"/> (what a set of files
    /// shares, each byte counted once).</summary>
    public static ulong UnionBytes(IEnumerable<(ulong Start, ulong Len)> ranges)
    {
        ulong total = 0, end = 0;
        foreach (var (s, l) in ranges.OrderBy(r => r.Start))
        {
            ulong e = s + l;
            if (e <= end) continue;
            total += e - Math.Max(s, end);
            end = e;
        }
        return total;
    }
}

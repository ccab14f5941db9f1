using System.Buffers;
using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Decides whether a commit written with a single flush reached the device whole (SPEC.md §1,
/// "Crash model"). Such a commit writes its nodes, its data and its superblock before one
/// flush, so a power cut during that flush may leave the superblock on disk without some of
/// what it points at. Everything the commit wrote carries its generation: every tree block it
/// wrote has that generation and is reached from a root through pointers that name it (a
/// copy-on-write tree rewrites the whole path to a changed block), and every data extent it
/// made or filled is named by a file extent item of that generation, with checksums in the
/// checksum tree. So the walk descends only into pointers of that generation, checks every
/// block it reaches (checksum, address, generation, level) and reads back the data of every
/// file extent item of that generation against its checksums. Its cost is the size of the
/// last transaction, not of the filesystem, and it runs only when the last commit was not
/// followed by a clean unmount.
/// </summary>
internal sealed class CommitVerifier
{
    private readonly IBlockDevice _dev;
    private readonly Superblock _sb;
    private readonly NodeStore _store;
    private readonly IScheduler _sched;
    private readonly ulong _gen;
    private readonly HashSet<ulong> _seen = new();
    private readonly List<FileExtentItem> _data = new();
    private BTree? _csums;

    private CommitVerifier(IBlockDevice dev, Superblock sb, IScheduler sched)
    {
        _dev = dev; _sb = sb; _sched = sched; _gen = sb.Generation;
        _store = new NodeStore(dev, sched, (int)sb.NodeSize, sb.Fsid, 16L << 20);
    }

    /// <summary>Null when commit <paramref name="sb"/> is whole; otherwise what is missing.</summary>
    public static string? Check(IBlockDevice dev, Superblock sb, IScheduler? sched = null)
    {
        try
        {
            var v = new CommitVerifier(dev, sb, sched ?? RealScheduler.Instance);
            v.Run();
            return null;
        }
        // Whatever a damaged block makes the walk throw means the same: this commit cannot be
        // trusted. (A mount must never crash on what it reads.)
        catch (Exception ex) when (ex is not SchedulerAbortedException and not OutOfMemoryException)
        {
            return ex is FsException ? ex.Message : $"{ex.GetType().Name}: {ex.Message}";
        }
    }

    private void Run()
    {
        var root = _store.Read(_sb.RootTreeBytenr, 0, _sb.RootTreeLevel);
        // Every commit rewrites the root tree's root (FsInfo.Commit), so a root of another
        // generation is an older block left at an address the commit reused: the commit's own
        // root never landed.
        if (root.Generation != _gen)
            throw new CorruptionException($"root tree block {_sb.RootTreeBytenr} has generation {root.Generation}, not the commit's {_gen}", _sb.RootTreeBytenr);
        var trees = new List<RootItem>();
        Walk(root, leaf => RootLeaf(leaf, trees));
        foreach (var ri in trees)
        {
            var node = _store.Read(ri.Bytenr, ri.Generation, ri.Level);
            Walk(node, DataLeaf);
        }
        if (_data.Count == 0) return;
        // Checksums come from the commit's own checksum tree (its new blocks were just checked).
        var csumRi = FindRoot(root, TreeIds.CsumTree) ?? throw new CorruptionException("the root tree has no checksum tree");
        _csums = new BTree(TreeIds.CsumTree, _store, _store.Read(csumRi.Bytenr, csumRi.Generation, csumRi.Level), _sched);
        foreach (var fe in _data) CheckData(fe);
    }

    /// <summary>Visits the blocks of <paramref name="node"/>'s subtree written by this commit.</summary>
    private void Walk(TreeNode node, Action<TreeNode> leaf)
    {
        if (!_seen.Add(node.Bytenr)) return; // shared by a snapshot taken in this commit
        if (node.IsLeaf) { leaf(node); return; }
        for (int i = 0; i < node.NrItems; i++)
        {
            if (node.ChildGenAt(i) != _gen) continue; // written by an earlier, durable commit
            Walk(_store.Read(node.ChildAt(i), _gen, node.Level - 1), leaf);
        }
    }

    /// <summary>A root-tree leaf of this commit: the trees whose root it moved.</summary>
    private void RootLeaf(TreeNode leaf, List<RootItem> trees)
    {
        for (int i = 0; i < leaf.NrItems; i++)
        {
            var k = leaf.KeyAt(i);
            if (k.Type != KeyTypes.RootItem || leaf.ItemSize(i) != RootItem.Size) continue;
            var ri = RootItem.Read(leaf.ItemDataRO(i));
            if (ri.Generation == _gen) trees.Add(ri);
        }
    }

    /// <summary>A leaf of this commit in any tree: the file extent items it wrote.</summary>
    private void DataLeaf(TreeNode leaf)
    {
        for (int i = 0; i < leaf.NrItems; i++)
        {
            if (leaf.KeyAt(i).Type != KeyTypes.ExtentData) continue;
            if (!FileExtentItem.TryRead(leaf.ItemDataRO(i), out var fe)) continue; // inline: inside the leaf
            if (fe.Type == FileExtentType.Regular && fe.Generation == _gen && fe.DiskBytenr != 0) _data.Add(fe);
        }
    }

    private RootItem? FindRoot(TreeNode root, ulong id)
    {
        var t = new BTree(TreeIds.RootTree, _store, root, _sched);
        var d = t.Get(new Key(id, KeyTypes.RootItem, 0));
        return d != null && d.Length == RootItem.Size ? RootItem.Read(d) : null;
    }

    /// <summary>The blocks a file extent item of this commit names hold the data its
    /// checksums say (an extent without checksums, of a no-datasum file, is not checked:
    /// nothing can tell its old bytes from its new ones).</summary>
    private void CheckData(FileExtentItem fe)
    {
        var sums = _csums!.Get(new Key(TreeIds.CsumObjectId, KeyTypes.ExtentCsum, fe.DiskBytenr));
        if (sums == null) return;
        ulong bs = _sb.BlockSize;
        ulong from = fe.Offset / bs * bs, to = Units.AlignUp(fe.Offset + fe.NumBytes, bs);
        if (to > fe.DiskNumBytes || (int)(to / bs) * 4 > sums.Length)
            throw new CorruptionException($"file extent item names [{fe.Offset}, +{fe.NumBytes}) of the {fe.DiskNumBytes}-byte extent {fe.DiskBytenr}", fe.DiskBytenr);
        var buf = ArrayPool<byte>.Shared.Rent((int)bs);
        try
        {
            for (ulong o = from; o < to; o += bs)
            {
                _dev.Read(fe.DiskBytenr + o, buf.AsSpan(0, (int)bs));
                uint want = BinaryPrimitives.ReadUInt32LittleEndian(sums.AsSpan((int)(o / bs) * 4));
                if (Crc32C.Compute(buf.AsSpan(0, (int)bs)) != want)
                    throw new CorruptionException($"data block {fe.DiskBytenr + o} does not hold what commit {_gen} wrote there", fe.DiskBytenr + o);
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }
}

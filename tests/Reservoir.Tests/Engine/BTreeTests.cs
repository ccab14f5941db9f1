using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Xunit;

namespace Reservoir.Tests.Engine;

/// <summary>The B+tree against SortedDictionary: random inserts, deletes, resizes and replaces,
/// with items from empty to the largest a leaf holds, so that splits (two- and three-way),
/// merges and root changes all happen; the structure is verified throughout.</summary>
public class BTreeTests
{
    private static (BTree Tree, DetachedTreeContext Ctx) NewTree(int nodeSize)
    {
        var store = new NodeStore(new MemoryBlockDevice(1UL << 40), RealScheduler.Instance, nodeSize, Guid.NewGuid(), 1L << 40);
        var ctx = new DetachedTreeContext(store, nodeSize);
        return (new BTree(99, store, BTree.NewEmptyRoot(ctx, 99), RealScheduler.Instance), ctx);
    }

    private static void Verify(BTree t, SortedDictionary<Key, byte[]> model, DetachedTreeContext ctx)
    {
        var path = new TreePath();
        var it = model.GetEnumerator();
        int count = 0;
        if (t.SeekGE(Key.Min, path))
        {
            do
            {
                Assert.True(it.MoveNext(), "tree has more items than the model");
                Assert.Equal(it.Current.Key, path.Key);
                Assert.True(it.Current.Value.AsSpan().SequenceEqual(path.Data), $"data of {path.Key} differs");
                count++;
            } while (t.Next(path));
        }
        Assert.False(it.MoveNext(), "model has more items than the tree");
        Assert.Equal(model.Count, count);
        // Structure: parent keys equal child first keys, no empty non-root nodes, node count.
        int nodes = 0;
        void Walk(TreeNode n, Key? low, bool isRoot)
        {
            nodes++;
            if (!isRoot) Assert.True(n.NrItems > 0, "empty non-root node");
            if (low is { } l && n.NrItems > 0) Assert.Equal(l, n.KeyAt(0));
            if (n.Level == 0) return;
            if (isRoot) Assert.True(n.NrItems >= 2, "internal root with one child");
            for (int i = 0; i < n.NrItems; i++)
            {
                var c = t.ReadChild(n, i);
                Assert.Equal(n.Level - 1, c.Level);
                Walk(c, n.KeyAt(i), false);
            }
        }
        Walk(t.Root, null, true);
        Assert.Equal(ctx.Live, nodes);
    }

    [Theory]
    [InlineData(4096, 1)]
    [InlineData(4096, 2)]
    [InlineData(16384, 3)]
    [InlineData(65536, 4)]
    public void RandomOperationsMatchSortedDictionary(int nodeSize, int seed)
    {
        var (t, ctx) = NewTree(nodeSize);
        var model = new SortedDictionary<Key, byte[]>();
        var rng = new Random(seed);
        int maxItem = NodeLayout.MaxItemData(nodeSize);
        Key RandKey() => new((ulong)rng.Next(0, 3000), (byte)rng.Next(1, 4), (ulong)rng.Next(0, 50));
        byte[] RandData()
        {
            int len = rng.Next(20) switch { 0 => maxItem, 1 => rng.Next(maxItem / 2, maxItem), 2 => 0, _ => rng.Next(1, 200) };
            var d = new byte[len];
            rng.NextBytes(d);
            return d;
        }
        for (int i = 0; i < 30_000; i++)
        {
            int op = rng.Next(100);
            var k = RandKey();
            if (op < 50)
            {
                var d = RandData();
                bool ok = t.TryInsert(ctx, k, d.Length, out var span);
                Assert.Equal(!model.ContainsKey(k), ok);
                if (ok) { d.CopyTo(span); model[k] = d; }
            }
            else if (op < 80)
            {
                Assert.Equal(model.Remove(k), t.Delete(ctx, k));
            }
            else if (op < 90 && model.ContainsKey(k))
            {
                var d = RandData();
                var span = t.Resize(ctx, k, d.Length);
                int keep = Math.Min(d.Length, model[k].Length);
                Assert.True(span[..keep].SequenceEqual(model[k].AsSpan(0, keep)), "resize lost the prefix");
                d.CopyTo(span);
                model[k] = d;
            }
            else
            {
                var d = RandData();
                t.Put(ctx, k, d);
                model[k] = d;
            }
            if (i % 5000 == 0) Verify(t, model, ctx);
        }
        Verify(t, model, ctx);
        // Empty it completely: the tree shrinks back to one empty leaf.
        foreach (var k in model.Keys.ToList()) Assert.True(t.Delete(ctx, k));
        model.Clear();
        Verify(t, model, ctx);
        Assert.Equal(0, t.Root.Level);
        Assert.Equal(1, ctx.Live);
    }

    [Fact]
    public void HundredThousandSequentialKeysStayShallowAndSeekWorks()
    {
        var (t, ctx) = NewTree(16384);
        for (ulong i = 0; i < 100_000; i++) t.Insert(ctx, new Key(i * 2, 1, 0), 8);
        Assert.True(t.Height <= 3, $"height {t.Height}");
        var path = new TreePath();
        Assert.True(t.SeekGE(new Key(1001, 0, 0), path));
        Assert.Equal(1002UL, path.Key.ObjectId);
        Assert.True(t.SeekLE(new Key(1001, 0, 0), path));
        Assert.Equal(1000UL, path.Key.ObjectId);
        Assert.False(t.SeekLE(new Key(0, 0, 0), path));
        Assert.False(t.SeekGE(new Key(200_000, 0, 0), path));
        // SeekLE across a leaf boundary, for every leaf's first key minus one.
        for (ulong i = 1; i < 100_000; i += 997)
        {
            Assert.True(t.SeekLE(new Key(i * 2 - 1, 9, 9), path));
            Assert.Equal((i - 1) * 2, path.Key.ObjectId);
        }
    }

    /// <summary>SearchNear (the commit's in-order lookups, from where the last one left the path,
    /// stepping with Next in between as the accounting does) must answer exactly as a search
    /// from the root: found or not, and the same slot.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void SearchNearAnswersAsAFullSearch(int seed)
    {
        var (t, ctx) = NewTree(4096);
        var rng = new Random(seed);
        for (ulong i = 0; i < 20_000; i++) if (rng.Next(3) > 0) t.Insert(ctx, new Key(i * 4, (byte)(1 + i % 2), 0), 8);
        var near = new TreePath();
        ulong at = 0;
        for (int q = 0; q < 5_000; q++)
        {
            // Mostly forward by a little (absent keys included), sometimes back or far.
            at = rng.Next(10) switch { 0 => (ulong)rng.Next(0, 80_000), 1 => at > 40 ? at - (ulong)rng.Next(40) : 0, _ => at + (ulong)rng.Next(0, 12) };
            var key = new Key(at, (byte)(1 + rng.Next(2)), 0);
            var full = new TreePath();
            bool want = t.Search(null, key, full);
            Assert.Equal(want, t.SearchNear(key, near));
            Assert.Same(full.Leaf, near.Leaf);
            Assert.Equal(full.Slots[0], near.Slots[0]);
            for (int k = rng.Next(3); k > 0 && t.Next(near); k--) { } // the accounting steps over back-references
        }
    }

    /// <summary>
    /// How full the leaves end: a full leaf first gives items to a neighbour with room (btrfs's
    /// push_leaf_right/left) and splits only when neither can take enough, so keys inserted in
    /// order (extent addresses, inode numbers) do not leave a trail of half-full leaves: every
    /// commit writes each leaf it touches, so a tree at half fill costs twice the writes. A
    /// split alone leaves ascending inserts at about half fill; the bounds sit well above it.
    /// </summary>
    [Theory]
    [InlineData("ascending", 0.85)]
    [InlineData("descending", 0.85)]
    [InlineData("random", 0.80)]
    [InlineData("interleaved", 0.82)]
    public void LeavesStayFullWhenKeysArriveInOrderOrNot(string order, double minFill)
    {
        var (t, ctx) = NewTree(16384);
        var model = new SortedDictionary<Key, byte[]>();
        const int n = 20_000;
        var keys = Enumerable.Range(0, n).Select(i => (ulong)i).ToArray();
        if (order == "descending") Array.Reverse(keys);
        if (order == "random") new Random(5).Shuffle(keys);
        // Two ascending runs woven together, as new inodes' items land before a tree's
        // EXTENT_OWNER_REFs, which arrive in address order too.
        if (order == "interleaved") keys = keys.Select(k => k % 2 == 0 ? k / 2 : (1UL << 40) + k / 2).ToArray();
        var rng = new Random(7);
        foreach (var k in keys)
        {
            var d = new byte[rng.Next(8, 120)];
            rng.NextBytes(d);
            d.CopyTo(t.Insert(ctx, new Key(k, 1, 0), d.Length));
            model[new Key(k, 1, 0)] = d;
        }
        Verify(t, model, ctx);
        long used = 0, leaves = 0;
        void Walk(TreeNode node)
        {
            if (node.IsLeaf) { leaves++; used += node.LeafUsed; return; }
            for (int i = 0; i < node.NrItems; i++) Walk(t.ReadChild(node, i));
        }
        Walk(t.Root);
        double fill = used / (double)(leaves * (16384 - NodeLayout.HeaderSize));
        Assert.True(fill >= minFill, $"{order}: {leaves} leaves at {fill:P0} full on average, want at least {minFill:P0}");
    }
}

using Reservoir.Common.Concurrency;
using Reservoir.Engine.Quota;
using Xunit;

namespace Reservoir.Tests.Engine;

/// <summary>The transitions ledger: net changes per (subvolume, extent) grouped per extent, with
/// the writer's birth mark; and the commit's sort of addresses (the packed sort, indices in the
/// aligned addresses' zero bits, and the fallback must both give the addresses in order and,
/// for each, the index it came from).</summary>
public class OwnerTransitionsTests
{
    [Theory]
    [InlineData(4096, 200)]   // block-aligned: packed
    [InlineData(4096, 5000)]  // more entries than the free bits hold: fallback
    [InlineData(1, 300)]      // odd addresses: fallback
    [InlineData(65536, 1)]
    public void SortedOrderSortsAndTracksWhereEachCameFrom(int align, int n)
    {
        var rnd = new Random(align * 31 + n);
        var original = new ulong[n];
        for (int i = 0; i < n; i++) original[i] = (ulong)rnd.Next(0, 1 << 20) * (ulong)align + (align == 1 ? 1UL : 0); // repeats included
        if (n > 3) original[3] = original[1];
        var addresses = (ulong[])original.Clone();
        var order = OwnerTransitions.SortedOrder(addresses);
        var expected = original.Order().ToArray();
        Assert.Equal(expected, addresses);
        Assert.Equal(n, order.Distinct().Count());
        for (int i = 0; i < n; i++) Assert.Equal(original[order[i]], addresses[i]);
    }

    /// <summary>Addresses already in order (the common case: a writer's extents as its writes
    /// completed) keep their places, repeats included; one out of place at the very end is
    /// still sorted.</summary>
    [Fact]
    public void SortedOrderOfAddressesAlreadyInOrderIsTheIdentity()
    {
        ulong[] original = [4096, 8192, 8192, 16384, 1 << 20];
        var addresses = (ulong[])original.Clone();
        Assert.Equal([0, 1, 2, 3, 4], OwnerTransitions.SortedOrder(addresses));
        Assert.Equal(original, addresses);
        ulong[] late = [4096, 8192, 16384, 12288];
        var order = OwnerTransitions.SortedOrder(late);
        Assert.Equal([4096UL, 8192, 12288, 16384], late);
        Assert.Equal([0, 1, 3, 2], order);
    }

    private sealed record Taken(ulong[] Acquired, ulong[] Dropped, ulong BornOwner, ulong BornGeneration);

    /// <summary>The ledger's non-empty entries by address, as the commit reads them.</summary>
    private static Dictionary<ulong, Taken> TakeByExtent(OwnerTransitions t)
    {
        var got = new Dictionary<ulong, Taken>();
        ulong[]? single = null;
        foreach (var c in t.Take())
        {
            if (c.IsEmpty) continue;
            Assert.False(got.ContainsKey(c.Bytenr)); // one entry per extent
            var (a, d) = c.Split(ref single);
            got[c.Bytenr] = new Taken(a, d, c.BornOwner, c.BornGeneration);
        }
        return got;
    }

    [Fact]
    public void NetChangesPerSubvolumeAreGroupedPerExtent()
    {
        var t = new OwnerTransitions(RealScheduler.Instance);
        t.Note(256, 4096, 4096, +1, bornGeneration: 7);   // written now by 256
        t.Note(300, 4096, 4096, +1);                      // cloned by 300
        t.Note(257, 4096, 4096, -1);                      // a snapshot let go of it? (other order)
        t.Note(256, 4096, 4096, -1);                      // the writer overwrote it: 256 cancels
        t.Note(258, 8192, 4096, -1);                      // an old extent let go of by 258 and 259
        t.Note(259, 8192, 4096, -1);
        t.Note(260, 12288, 4096, +1);                     // a pair that cancels leaves nothing
        t.Note(260, 12288, 4096, -1);
        var got = TakeByExtent(t);
        Assert.Equal(2, got.Count);
        var a = got[4096];
        Assert.Equal([300UL], a.Acquired);
        Assert.Equal([257UL], a.Dropped);
        Assert.Equal((256UL, 7UL), (a.BornOwner, a.BornGeneration)); // the mark outlives the writer's cancelled entry
        var b = got[8192];
        Assert.Empty(b.Acquired);
        Assert.Equal([258UL, 259UL], b.Dropped);
        Assert.Equal(0UL, b.BornGeneration);
        Assert.Empty(TakeByExtent(t)); // taken: the ledger starts over
    }

    [Fact]
    public void TheInlineSlotIsRefilledWhenItsSubvolumeCancels()
    {
        var t = new OwnerTransitions(RealScheduler.Instance);
        t.Note(256, 4096, 4096, +1);
        t.Note(257, 4096, 4096, +1);
        t.Note(258, 4096, 4096, -1);
        t.Note(256, 4096, 4096, -1); // the first subvolume's slot empties; 257 or 258 moves in
        t.Note(258, 4096, 4096, +1); // 258 cancels too: 257 is left, wherever it sits
        var c = Assert.Single(TakeByExtent(t)).Value;
        Assert.Equal([257UL], c.Acquired);
        Assert.Empty(c.Dropped);
    }

    [Fact]
    public void ASnapshotRepeatsItsSourcesTransitionsSoFar()
    {
        var t = new OwnerTransitions(RealScheduler.Instance);
        t.Note(300, 4096, 4096, +1);
        t.Note(256, 4096, 4096, +1, bornGeneration: 9);
        t.Note(256, 8192, 4096, -1);
        t.Note(257, 12288, 4096, +1); // not the source's: not copied
        t.CopyRoot(256, 400);
        t.Note(256, 16384, 4096, +1); // after the snapshot: the source's alone
        var got = TakeByExtent(t);
        Assert.Equal([256UL, 300UL, 400UL], got[4096].Acquired);
        Assert.Equal([256UL, 400UL], got[8192].Dropped);
        Assert.Equal([257UL], got[12288].Acquired);
        Assert.Equal([256UL], got[16384].Acquired);
    }
}

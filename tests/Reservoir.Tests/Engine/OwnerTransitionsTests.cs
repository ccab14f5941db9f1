using Reservoir.Engine.Quota;
using Xunit;

namespace Reservoir.Tests.Engine;

/// <summary>The commit's sort of transition addresses: the packed sort (indices in the aligned
/// addresses' zero bits) and the fallback must both give the addresses in order and, for each,
/// the index it came from.</summary>
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
}

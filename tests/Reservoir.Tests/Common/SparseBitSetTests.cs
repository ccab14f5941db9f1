using Reservoir.Common.Collections;
using Xunit;

namespace Reservoir.Tests.Common;

public class SparseBitSetTests
{
    /// <summary>Random adds, removes and range walks against SortedSet, over values that cluster
    /// (runs, like dirty pages) and scatter (across word boundaries and far apart).</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void BehavesLikeASortedSet(int seed)
    {
        var rng = new Random(seed);
        var set = new SparseBitSet();
        var model = new SortedSet<long>();
        for (int op = 0; op < 20_000; op++)
        {
            long v = rng.Next(4) switch
            {
                0 => rng.Next(200),
                1 => 60 + rng.Next(10),
                2 => (long)rng.Next(1 << 20) * 64 + rng.Next(64),
                _ => long.MaxValue - rng.Next(3),
            };
            switch (rng.Next(5))
            {
                case 0 or 1: Assert.Equal(model.Add(v), set.Add(v)); break;
                case 2: Assert.Equal(model.Remove(v), set.Remove(v)); break;
                case 3: Assert.Equal(model.Contains(v), set.Contains(v)); break;
                default:
                    long a = rng.Next(300), b = a + rng.Next(300);
                    if (rng.Next(10) == 0) b = long.MaxValue;
                    Assert.Equal(model.GetViewBetween(a, b).ToList(), set.Between(a, b).ToList());
                    break;
            }
            Assert.Equal(model.Count, set.Count);
        }
        Assert.Equal(model.ToList(), set.All.ToList());
        set.Clear();
        Assert.Equal(0, set.Count);
        Assert.Empty(set.All);
        Assert.False(set.Remove(-1));
        Assert.False(set.Contains(-5));
        Assert.Throws<ArgumentOutOfRangeException>(() => set.Add(-1));
    }
}

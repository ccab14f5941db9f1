using Reservoir.Engine.Inodes;
using Xunit;

namespace Reservoir.Tests.Data;

/// <summary>The reservation ledger against a per-byte model: changesets, merging, overlap
/// queries and run boundaries.</summary>
public class LedgerTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void LedgerMatchesAPerByteModel(int seed)
    {
        const int N = 2000;
        var rng = new Random(seed);
        var model = new RangeBits[N];
        var t = new ExtentIoTree();
        var bitsChoices = new[] { RangeBits.Delalloc, RangeBits.QgroupReserved, RangeBits.InPlace };
        for (int i = 0; i < 5000; i++)
        {
            int s = rng.Next(N), e = Math.Min(N, s + rng.Next(1, 200));
            var bit = bitsChoices[rng.Next(3)];
            bool set = rng.Next(2) == 0;
            ulong expect = 0;
            for (int k = s; k < e; k++)
            {
                var nb = set ? model[k] | bit : model[k] & ~bit;
                if (nb != model[k]) expect++;
                model[k] = nb;
            }
            ulong got = set ? t.Set((ulong)s, (ulong)e, bit) : t.Clear((ulong)s, (ulong)e, bit);
            Assert.Equal(expect, got);
            if (i % 50 == 0)
            {
                int qs = rng.Next(N), qe = Math.Min(N, qs + rng.Next(1, 500));
                foreach (var b in bitsChoices)
                    Assert.Equal((ulong)Enumerable.Range(qs, qe - qs).Count(k => (model[k] & b) != 0), t.CountSet((ulong)qs, (ulong)qe, b));
                // Runs of the dirty mask touching [qs, qe) agree with the model's runs.
                var mask = RangeBits.Delalloc | RangeBits.InPlace;
                var want = new List<(ulong, ulong)>();
                for (int k = 0; k < N;)
                {
                    if ((model[k] & mask) == 0) { k++; continue; }
                    int j = k;
                    while (j < N && (model[j] & mask) != 0) j++;
                    if ((ulong)j >= (ulong)qs && (ulong)k <= (ulong)qe) want.Add(((ulong)k, (ulong)j));
                    k = j;
                }
                Assert.Equal(want, t.Runs(mask, (ulong)qs, (ulong)qe));
            }
        }
        // Ranges are maximal: no two neighbours with equal bits.
        var ranges = t.Overlapping(0, ulong.MaxValue).ToList();
        for (int i = 1; i < ranges.Count; i++)
            Assert.False(ranges[i - 1].V.End == ranges[i].Start && ranges[i - 1].V.Bits == ranges[i].V.Bits, "unmerged neighbours");
    }

    /// <summary>Counting ordered extents incrementally (recounting only the runs a change
    /// touches, as DataEngine.ChangeDirtyBits does) agrees with a full recount after every change.</summary>
    [Fact]
    public void IncrementalRunCountMatchesARecount()
    {
        var rng = new Random(1);
        var t = new ExtentIoTree();
        var mask = RangeBits.Delalloc | RangeBits.InPlace;
        ulong max = 16;
        int Ext(List<(ulong S, ulong E)> runs) => runs.Sum(r => (int)((r.E - r.S + max - 1) / max));
        int count = 0;
        for (int i = 0; i < 20000; i++)
        {
            ulong s = (ulong)rng.Next(0, 200), e = s + (ulong)rng.Next(1, 30);
            var bit = new[] { RangeBits.Delalloc, RangeBits.InPlace, RangeBits.QgroupReserved }[rng.Next(3)];
            bool set = rng.Next(2) == 0;
            int before = Ext(t.Runs(mask, s, e));
            if (set) t.Set(s, e, bit); else t.Clear(s, e, bit);
            count += Ext(t.Runs(mask, s, e)) - before;
            Assert.True(Ext(t.Runs(mask)) == count, $"step {i}: {(set ? "set" : "clear")} {bit} [{s},{e}) left {t}");
        }
    }
}

using Reservoir.Common.Collections;
using Xunit;

namespace Reservoir.Tests.Common;

public class SortedRangesTests
{
    /// <summary>The block-list storage against a plain sorted list, through every operation,
    /// with enough entries to split blocks many times and remove across block boundaries.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void BehavesLikeOneSortedList(int seed)
    {
        var rng = new Random(seed);
        var r = new SortedRanges<int>();
        var model = new List<RangeEntry<int>>();
        int maxCount = 0;
        int LowerBound(ulong pos) { int i = 0; while (i < model.Count && model[i].Start < pos) i++; return i; }
        for (int op = 0; op < 6000; op++)
        {
            int kind = op < 2500 ? 0 : rng.Next(10); // grow first: thousands of entries, many blocks
            if (kind < 5 || model.Count == 0)
            {
                // Insert a few disjoint ranges in a free gap found by position.
                ulong pos = (ulong)rng.Next(0, 1 << 22) * 16;
                int at = LowerBound(pos);
                ulong lo = at > 0 ? model[at - 1].End : 0, hi = at < model.Count ? model[at].Start : ulong.MaxValue;
                if (pos < lo || pos + 4 > hi) continue;
                var add = new List<RangeEntry<int>>();
                for (ulong p = pos; p + 3 <= hi && add.Count < rng.Next(1, 4); p += 3) add.Add(new(p, p + 1 + (ulong)rng.Next(2), op));
                if (add.Count == 1 && rng.Next(2) == 0) r.Add(add[0]); else r.InsertRange(at, add);
                model.InsertRange(at, add);
            }
            else if (kind < 7)
            {
                int i = rng.Next(model.Count), n = Math.Min(model.Count - i, rng.Next(0, 700));
                r.RemoveRange(i, n);
                model.RemoveRange(i, n);
            }
            else if (kind < 8)
            {
                int i = rng.Next(model.Count);
                // Sometimes the start moves too (down into the gap before it, or up inside the
                // range), as a range growing or trimmed at its front does: the search must see
                // the new start.
                ulong floorStart = i > 0 ? model[i - 1].End : 0, start = model[i].Start;
                if (rng.Next(2) == 0 && start > floorStart) start--;
                else if (rng.Next(2) == 0 && start + 1 < model[i].End) start++;
                var e = model[i] with { Value = -op, Start = start };
                r.Set(i, e);
                model[i] = e;
            }
            else
            {
                ulong pos = (ulong)rng.Next(0, 1 << 22) * 16 + (ulong)rng.Next(3);
                Assert.Equal(LowerBound(pos), r.LowerBound(pos));
                int floor = model.FindLastIndex(e => e.Start <= pos);
                Assert.Equal(floor, r.FloorIndex(pos));
                Assert.Equal(floor >= 0 && model[floor].End > pos ? floor : -1, r.IndexContaining(pos));
                ulong end = pos + (ulong)rng.Next(1, 4000);
                int f = model.FindIndex(e => e.End > pos && e.Start < end);
                var (rf, rl) = r.Overlapping(pos, end);
                if (f < 0) Assert.Equal(rf, rl);
                else
                {
                    Assert.Equal(f, rf);
                    Assert.Equal(model.FindLastIndex(e => e.End > pos && e.Start < end) + 1, rl);
                }
            }
            Assert.Equal(model.Count, r.Count);
            maxCount = Math.Max(maxCount, model.Count);
            if (op % 500 == 0 || model.Count < 5)
            {
                Assert.Equal(model, r.All.ToList());
                for (int i = 0; i < model.Count; i += 1 + model.Count / 50) Assert.Equal(model[i], r[i]);
            }
        }
        Assert.Equal(model, r.All.ToList());
        Assert.True(maxCount > 2000, $"only {maxCount} entries: the test never split blocks");
        Assert.Throws<ArgumentOutOfRangeException>(() => r[r.Count]);
        r.Clear();
        Assert.Equal(0, r.Count);
        Assert.Equal(0, r.LowerBound(5));
        Assert.Equal(-1, r.FloorIndex(5));
    }

    /// <summary>Moving any entry's start, the last of a block included, is seen by the next
    /// search (the search keeps each block's last start beside the blocks).</summary>
    [Fact]
    public void ASetStartIsFoundByTheNextSearch()
    {
        var r = new SortedRanges<int>();
        for (int k = 0; k < 2000; k++) r.Add(new((ulong)k * 10, (ulong)k * 10 + 5, k)); // blocks split many times
        for (int k = 0; k < 2000; k++)
        {
            ulong start = (ulong)k * 10 + 3;
            r.Set(k, new(start, (ulong)k * 10 + 5, k));
            Assert.Equal(k, r.LowerBound(start));
            Assert.Equal(k, r.FloorIndex(start));
            Assert.Equal(k + 1, r.LowerBound(start + 1));
        }
    }
}

namespace Reservoir.Engine.Inodes;

/// <summary>Bits of the per-inode reservation ledger (btrfs's extent io tree bits).</summary>
[Flags]
internal enum RangeBits : byte
{
    None = 0,
    /// <summary>Dirty data waiting for allocation; owns a data reservation (space_info
    /// may_use) of exactly the range's bytes, and a share of the inode's metadata reservation.</summary>
    Delalloc = 1,
    /// <summary>Owns qgroup data reservation of exactly the range's bytes (QGROUP_RESERVED).</summary>
    QgroupReserved = 2,
    /// <summary>Dirty data that will be written in place (into a preallocated extent, or a
    /// no-CoW file's extent): owns no data or qgroup reservation, only a metadata share.</summary>
    InPlace = 4,
}

/// <summary>
/// The ledger of who owns which reserved byte of one inode: disjoint ranges sorted by start,
/// each with a set of <see cref="RangeBits"/>; neighbours with equal bits are merged. Setting
/// bits reports how many bytes were newly set and clearing how many were cleared (btrfs's
/// extent_changeset), so reserving is idempotent per range (re-dirtying reserves nothing new) and
/// releasing frees exactly what the range owned. Lookups and changes are logarithmic in the
/// number of ranges plus the ranges touched. Not thread-safe: the mapping's state lock guards it.
/// </summary>
internal sealed class ExtentIoTree
{
    private readonly record struct R(ulong Start, ulong End, RangeBits Bits);

    private sealed class ByStart : IComparer<R>
    {
        public int Compare(R a, R b) => a.Start.CompareTo(b.Start);
    }

    private readonly SortedSet<R> _set = new(new ByStart());

    public bool IsEmpty => _set.Count == 0;
    public int Count => _set.Count;

    /// <summary>The range starting at or before <paramref name="pos"/>, or null. (A view's Max
    /// is logarithmic and is default when the view is empty; a real range has End > 0. A view's
    /// Count, by contrast, walks the view, so it is never used here.)</summary>
    private R? Floor(ulong pos)
    {
        if (_set.Count == 0) return null;
        var r = _set.GetViewBetween(new R(0, 0, 0), new R(pos, 0, 0)).Max;
        return r.End == 0 ? null : r;
    }

    /// <summary>Ranges overlapping [start, end), in order.</summary>
    private List<R> Overlap(ulong start, ulong end)
    {
        var list = new List<R>();
        if (_set.Count == 0 || start >= end) return list;
        if (Floor(start) is { } f && f.End > start) list.Add(f);
        if (start + 1 < end)
            foreach (var r in _set.GetViewBetween(new R(start + 1, 0, 0), new R(end - 1, 0, 0))) list.Add(r);
        return list;
    }

    public IEnumerable<(ulong Start, (ulong End, RangeBits Bits) V)> Overlapping(ulong start, ulong end) =>
        Overlap(start, end).Select(r => (r.Start, (r.End, r.Bits)));

    /// <summary>Bytes in [start, end) that carry any bit of <paramref name="bit"/>.</summary>
    public ulong CountSet(ulong start, ulong end, RangeBits bit)
    {
        ulong n = 0;
        foreach (var r in Overlap(start, end))
            if ((r.Bits & bit) != 0) n += Math.Min(r.End, end) - Math.Max(r.Start, start);
        return n;
    }

    public ulong Total(RangeBits bit)
    {
        ulong n = 0;
        foreach (var r in _set) if ((r.Bits & bit) != 0) n += r.End - r.Start;
        return n;
    }

    /// <summary>Sets <paramref name="bit"/> on [start, end); returns the bytes newly set.</summary>
    public ulong Set(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: true);

    /// <summary>Clears <paramref name="bit"/> on [start, end); returns the bytes cleared.</summary>
    public ulong Clear(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: false);

    private ulong Change(ulong start, ulong end, RangeBits bit, bool set)
    {
        if (start >= end) return 0;
        var old = Overlap(start, end);
        var pieces = new List<R>();
        ulong changed = 0, cursor = start;
        foreach (var r in old)
        {
            _set.Remove(r);
            if (r.Start < start) pieces.Add(r with { End = start });
            ulong a = Math.Max(r.Start, start), z = Math.Min(r.End, end);
            if (cursor < a && set) { pieces.Add(new R(cursor, a, bit)); changed += a - cursor; }
            var nb = set ? r.Bits | bit : r.Bits & ~bit;
            if (nb != r.Bits) changed += z - a;
            if (nb != RangeBits.None) pieces.Add(new R(a, z, nb));
            if (r.End > end) pieces.Add(r with { Start = end });
            cursor = z;
        }
        if (cursor < end && set) { pieces.Add(new R(cursor, end, bit)); changed += end - cursor; }
        foreach (var p in pieces) _set.Add(p);
        MergeAround(start, end);
        return changed;
    }

    /// <summary>Merges equal-bit neighbours from the range before start to the one at end.</summary>
    private void MergeAround(ulong start, ulong end)
    {
        ulong from = start > 0 && Floor(start - 1) is { } f ? f.Start : start;
        var span = _set.GetViewBetween(new R(from, 0, 0), new R(end, 0, 0)).ToList();
        for (int i = 0; i + 1 < span.Count; i++)
        {
            var a = span[i];
            var b = span[i + 1];
            if (a.End == b.Start && a.Bits == b.Bits)
            {
                _set.Remove(a);
                _set.Remove(b);
                var m = new R(a.Start, b.End, a.Bits);
                _set.Add(m);
                span[i + 1] = m;
            }
        }
    }

    /// <summary>Maximal runs of ranges carrying any bit of <paramref name="mask"/> (adjacent
    /// ranges joined). With bounds, only the runs that overlap or touch [start, end), found by
    /// walking outwards from the bounds (cost proportional to the ranges of those runs).</summary>
    public List<(ulong Start, ulong End)> Runs(RangeBits mask, ulong start = 0, ulong end = ulong.MaxValue)
    {
        var runs = new List<(ulong, ulong)>();
        if (_set.Count == 0) return runs;
        ulong lo = start;
        // Extend left over adjacent masked ranges that touch start.
        while (lo > 0 && Floor(lo - 1) is { } f && f.End >= lo && (f.Bits & mask) != 0) lo = f.Start;
        ulong hi = end;
        // Extend right over adjacent masked ranges that touch end.
        while (hi != ulong.MaxValue && Floor(hi) is { } g && g.End > hi && (g.Bits & mask) != 0) hi = g.End;
        while (hi != ulong.MaxValue)
        {
            var next = _set.GetViewBetween(new R(hi, 0, 0), new R(hi, 0, 0)).Max;
            if (next.End == 0 || (next.Bits & mask) == 0) break;
            hi = next.End;
        }
        IEnumerable<R> scan = lo == 0 && hi == ulong.MaxValue ? _set : _set.GetViewBetween(new R(Floor(lo) is { } fl && fl.End > lo ? fl.Start : lo, 0, 0), new R(hi == ulong.MaxValue ? ulong.MaxValue : hi, 0, 0));
        foreach (var r in scan)
        {
            if ((r.Bits & mask) == 0) continue;
            if (runs.Count > 0 && runs[^1].Item2 == r.Start) runs[^1] = (runs[^1].Item1, r.End);
            else runs.Add((r.Start, r.End));
        }
        return runs.Where(r => r.Item2 >= start && r.Item1 <= end).ToList();
    }

    public override string ToString() => string.Join(" ", _set.Select(r => $"[{r.Start},{r.End}):{r.Bits}"));
}

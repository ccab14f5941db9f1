namespace Reservoir.Engine.Alloc;

/// <summary>
/// Free byte ranges of one block group, kept merged and sorted by start. Not thread-safe: the
/// owning <see cref="SpaceManager"/> serialises access. Floor lookups use SortedSet views, so
/// add and remove are logarithmic in the number of ranges.
/// </summary>
internal sealed class FreeSpaceMap
{
    private readonly record struct Range(ulong Start, ulong Len);

    private sealed class ByStart : IComparer<Range>
    {
        public int Compare(Range a, Range b) => a.Start.CompareTo(b.Start);
    }

    private readonly SortedSet<Range> _ranges = new(new ByStart());
    public ulong FreeBytes { get; private set; }
    public int Count => _ranges.Count;
    public IEnumerable<(ulong Start, ulong Length)> Ranges => _ranges.Select(r => (r.Start, r.Len));

    // A view's Max/Min are logarithmic and default (Len 0) when empty; a view's Count walks it.
    private Range? Floor(ulong at)
    {
        if (_ranges.Count == 0 || _ranges.Min.Start > at) return null;
        var r = _ranges.GetViewBetween(new Range(0, 0), new Range(at, 0)).Max;
        return r.Len == 0 ? null : r;
    }

    private Range? Ceiling(ulong at)
    {
        if (_ranges.Count == 0 || _ranges.Max.Start < at) return null;
        var r = _ranges.GetViewBetween(new Range(at, 0), new Range(ulong.MaxValue, 0)).Min;
        return r.Len == 0 ? null : r;
    }

    /// <summary>Returns [start, start+len) to the free set; throws on a double free.</summary>
    public void Add(ulong start, ulong len)
    {
        if (len == 0) return;
        ulong end = start + len;
        if (Floor(start) is { } p && p.Start + p.Len > start)
            throw new InvalidOperationException($"double free of [{start}, +{len}) overlaps free [{p.Start}, +{p.Len})");
        if (Ceiling(start) is { } n && n.Start < end)
            throw new InvalidOperationException($"double free of [{start}, +{len}) overlaps free [{n.Start}, +{n.Len})");
        FreeBytes += len;
        if (Floor(start) is { } prev && prev.Start + prev.Len == start)
        {
            _ranges.Remove(prev);
            start = prev.Start;
        }
        if (Ceiling(end) is { } next && next.Start == end)
        {
            _ranges.Remove(next);
            end += next.Len;
        }
        _ranges.Add(new Range(start, end - start));
    }

    /// <summary>Removes [start, start+len), which must be entirely free; false otherwise.</summary>
    public bool Remove(ulong start, ulong len)
    {
        if (Floor(start) is not { } r || r.Start + r.Len < start + len) return false;
        _ranges.Remove(r);
        if (r.Start < start) _ranges.Add(new Range(r.Start, start - r.Start));
        ulong end = start + len, rend = r.Start + r.Len;
        if (rend > end) _ranges.Add(new Range(end, rend - end));
        FreeBytes -= len;
        return true;
    }

    /// <summary>Takes up to <paramref name="want"/> bytes (at least <paramref name="min"/>),
    /// aligned to <paramref name="align"/>: the first range at or after <paramref name="hint"/>
    /// that holds all of it, else the largest piece found. Returns length 0 when nothing fits.</summary>
    public (ulong Start, ulong Length) Take(ulong want, ulong min, ulong align, ulong hint)
    {
        Range best = default;
        ulong bestLen = 0;
        foreach (var order in new[] { _ranges.GetViewBetween(new Range(hint, 0), new Range(ulong.MaxValue, 0)), _ranges.GetViewBetween(new Range(0, 0), new Range(hint, 0)) })
        {
            foreach (var r in order)
            {
                ulong a = (r.Start + align - 1) / align * align;
                if (a >= r.Start + r.Len) continue;
                ulong avail = (r.Start + r.Len - a) / align * align;
                if (avail < min || avail == 0) continue;
                ulong take = Math.Min(avail, want);
                if (take == want)
                {
                    Remove(a, take);
                    return (a, take);
                }
                if (take > bestLen) { best = new Range(a, take); bestLen = take; }
            }
        }
        if (bestLen == 0) return (0, 0);
        Remove(best.Start, bestLen);
        return (best.Start, bestLen);
    }

    public bool Contains(ulong start, ulong len) => Floor(start) is { } r && r.Start + r.Len >= start + len;
}

using Reservoir.Common.Collections;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// Free byte ranges of one block group, kept merged and sorted by start (binary search over a
/// sorted array). Not thread-safe: the owning <see cref="SpaceManager"/> serialises access.
/// </summary>
internal sealed class FreeSpaceMap
{
    private readonly SortedRanges<byte> _r = new();
    public ulong FreeBytes { get; private set; }
    public int Count => _r.Count;
    public IEnumerable<(ulong Start, ulong Length)> Ranges => _r.All.Select(r => (r.Start, r.End - r.Start));

    /// <summary>The free pieces inside [start, end), clipped to it (a binary search, then only
    /// the ranges that overlap).</summary>
    public List<(ulong Start, ulong Length)> Within(ulong start, ulong end)
    {
        var (f, l) = _r.Overlapping(start, end);
        var pieces = new List<(ulong, ulong)>(l - f);
        for (int i = f; i < l; i++)
        {
            ulong a = Math.Max(_r[i].Start, start), b = Math.Min(_r[i].End, end);
            if (b > a) pieces.Add((a, b - a));
        }
        return pieces;
    }

    /// <summary>Returns [start, start+len) to the free set; throws on a double free.</summary>
    public void Add(ulong start, ulong len)
    {
        if (len == 0) return;
        ulong end = start + len;
        var (f, l) = _r.Overlapping(start, end);
        if (f != l) throw new InvalidOperationException($"double free of [{start}, +{len}) overlaps free [{_r[f].Start}, {_r[f].End})");
        FreeBytes += len;
        int i = f; // insertion point
        if (i > 0 && _r[i - 1].End == start)
        {
            start = _r[i - 1].Start;
            _r.RemoveAt(--i);
        }
        if (i < _r.Count && _r[i].Start == end)
        {
            end = _r[i].End;
            _r.RemoveAt(i);
        }
        _r.InsertRange(i, [new RangeEntry<byte>(start, end, 0)]);
    }

    /// <summary>Removes [start, start+len), which must be entirely free; false otherwise.</summary>
    public bool Remove(ulong start, ulong len)
    {
        int i = _r.IndexContaining(start);
        if (i < 0 || _r[i].End < start + len) return false;
        var r = _r[i];
        ulong end = start + len;
        var keep = new List<RangeEntry<byte>>(2);
        if (r.Start < start) keep.Add(r with { End = start });
        if (r.End > end) keep.Add(r with { Start = end });
        _r.RemoveAt(i);
        _r.InsertRange(i, keep);
        FreeBytes -= len;
        return true;
    }

    /// <summary>Takes up to <paramref name="want"/> bytes (at least <paramref name="min"/>),
    /// aligned to <paramref name="align"/>: the first range at or after <paramref name="hint"/>
    /// (wrapping around) that holds all of it, else the largest piece found. Returns length 0
    /// when nothing fits. Only space below <paramref name="end"/> is taken.</summary>
    public (ulong Start, ulong Length) Take(ulong want, ulong min, ulong align, ulong hint, ulong end = ulong.MaxValue)
    {
        int n = _r.Count;
        if (n == 0) return (0, 0);
        int startIdx = Math.Max(0, _r.FloorIndex(hint));
        ulong bestStart = 0, bestLen = 0;
        for (int k = 0; k < n; k++)
        {
            var r = _r[(startIdx + k) % n];
            ulong a = (r.Start + align - 1) / align * align;
            ulong rEnd = Math.Min(r.End, end);
            if (a >= rEnd) continue;
            ulong avail = (rEnd - a) / align * align;
            if (avail < min || avail == 0) continue;
            ulong take = Math.Min(avail, want);
            if (take == want)
            {
                Remove(a, take);
                return (a, take);
            }
            if (take > bestLen) { bestStart = a; bestLen = take; }
        }
        if (bestLen == 0) return (0, 0);
        Remove(bestStart, bestLen);
        return (bestStart, bestLen);
    }

    public bool Contains(ulong start, ulong len)
    {
        int i = _r.IndexContaining(start);
        return i >= 0 && _r[i].End >= start + len;
    }
}

namespace Reservoir.Common.Collections;

/// <summary>A half-open range [Start, End) carrying a value.</summary>
public readonly record struct RangeEntry<T>(ulong Start, ulong End, T Value);

/// <summary>
/// Disjoint ranges kept sorted by start in one array, found by binary search. Lookups are
/// logarithmic; inserts and removals move the tail of the array (memmove), which for the range
/// counts of a per-inode ledger or a block group's free space is cheaper than any tree. (.NET's
/// SortedSet has no floor lookup, and its views count their elements on creation.)
/// Not thread-safe.
/// </summary>
public sealed class SortedRanges<T>
{
    private readonly List<RangeEntry<T>> _items = new();

    public int Count => _items.Count;
    public RangeEntry<T> this[int i] => _items[i];
    public IEnumerable<RangeEntry<T>> All => _items;

    /// <summary>Index of the first range with Start ≥ <paramref name="pos"/> (Count if none).</summary>
    public int LowerBound(ulong pos)
    {
        int lo = 0, hi = _items.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_items[mid].Start < pos) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>Index of the last range with Start ≤ <paramref name="pos"/>, or -1.</summary>
    public int FloorIndex(ulong pos)
    {
        int i = LowerBound(pos);
        if (i < _items.Count && _items[i].Start == pos) return i;
        return i - 1;
    }

    /// <summary>Index of the range containing <paramref name="pos"/>, or -1.</summary>
    public int IndexContaining(ulong pos)
    {
        int i = FloorIndex(pos);
        return i >= 0 && _items[i].End > pos ? i : -1;
    }

    /// <summary>Indexes [first, last) of the ranges overlapping [start, end).</summary>
    public (int First, int Last) Overlapping(ulong start, ulong end)
    {
        if (start >= end || _items.Count == 0) return (0, 0);
        int first = FloorIndex(start);
        if (first < 0 || _items[first].End <= start) first++;
        int last = LowerBound(end);
        return (first, Math.Max(first, last));
    }

    public void Add(RangeEntry<T> r)
    {
        int i = LowerBound(r.Start);
        _items.Insert(i, r);
    }

    public void RemoveAt(int i) => _items.RemoveAt(i);
    public void RemoveRange(int i, int n) => _items.RemoveRange(i, n);
    public void Set(int i, RangeEntry<T> r) => _items[i] = r;
    public void InsertRange(int i, IEnumerable<RangeEntry<T>> rs) => _items.InsertRange(i, rs);
    public void Clear() => _items.Clear();
}

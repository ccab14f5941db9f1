using System.Runtime.InteropServices;

namespace Reservoir.Common.Collections;

/// <summary>A half-open range [Start, End) carrying a value.</summary>
public readonly record struct RangeEntry<T>(ulong Start, ulong End, T Value);

/// <summary>
/// Disjoint ranges kept sorted by start, addressed by index and found by binary search.
///
/// Storage is a list of blocks of at most <see cref="MaxBlock"/> entries with a running count
/// of the entries before each block (a tiered vector): an index finds its block by binary
/// search, and inserts and removals move entries only within one block and update the counts
/// of the blocks after it. One flat array (the first version) made every insert move the whole
/// tail, which random 4 KiB writes turned into the bulk of their cost once a file's ledger held
/// tens of thousands of ranges. (.NET's SortedSet has no floor lookup and no index, and its
/// views count their elements on creation.)
/// Not thread-safe.
/// </summary>
public sealed class SortedRanges<T>
{
    private const int MaxBlock = 512;
    private readonly List<List<RangeEntry<T>>> _blocks = new();
    private readonly List<int> _before = new(); // entries in the blocks before block b
    private readonly List<ulong> _lastStart = new(); // Start of block b's last entry: LowerBound's
                                                     // search reads one flat array, not every block
    private int _finger;                            // the block Locate found last (a hint only)

    public int Count { get; private set; }

    public RangeEntry<T> this[int i]
    {
        get
        {
            var (b, j) = Locate(i);
            return _blocks[b][j];
        }
    }

    public IEnumerable<RangeEntry<T>> All
    {
        get
        {
            foreach (var blk in _blocks)
                foreach (var e in blk) yield return e;
        }
    }

    /// <summary>Block and offset of index <paramref name="i"/> (0 ≤ i &lt; Count).</summary>
    private (int Block, int Offset) Locate(int i)
    {
        if ((uint)i >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(i), $"index {i} of {Count}");
        // Callers walk neighbouring indexes (a lookup, then the entries around it): try the
        // block found last before searching.
        int f = _finger;
        if (f < _blocks.Count && _before[f] <= i && i - _before[f] < _blocks[f].Count) return (f, i - _before[f]);
        int lo = 0, hi = _blocks.Count - 1;
        while (lo < hi) // last block with _before ≤ i
        {
            int mid = (lo + hi + 1) >>> 1;
            if (_before[mid] <= i) lo = mid; else hi = mid - 1;
        }
        _finger = lo;
        return (lo, i - _before[lo]);
    }

    /// <summary>Index of the first range with Start ≥ <paramref name="pos"/> (Count if none).</summary>
    public int LowerBound(ulong pos)
    {
        // The first block whose last entry starts at or after pos holds the answer; try the
        // block used last first. (Spans: no bounds-checked list indexer, no entry copies; this
        // search runs several times per 4 KiB write.)
        var last = CollectionsMarshal.AsSpan(_lastStart);
        int lo = 0, hi = last.Length, f = _finger;
        if (f < last.Length && last[f] >= pos && (f == 0 || last[f - 1] < pos)) lo = f;
        else
        {
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (last[mid] < pos) lo = mid + 1; else hi = mid;
            }
        }
        if (lo == last.Length) return Count;
        _finger = lo;
        var blk = CollectionsMarshal.AsSpan(_blocks[lo]);
        int a = 0, z = blk.Length;
        while (a < z)
        {
            int mid = (a + z) >>> 1;
            if (blk[mid].Start < pos) a = mid + 1; else z = mid;
        }
        return _before[lo] + a;
    }

    /// <summary>Index of the last range with Start ≤ <paramref name="pos"/>, or -1.</summary>
    public int FloorIndex(ulong pos)
    {
        int i = LowerBound(pos);
        if (i < Count && this[i].Start == pos) return i;
        return i - 1;
    }

    /// <summary>Index of the range containing <paramref name="pos"/>, or -1.</summary>
    public int IndexContaining(ulong pos)
    {
        int i = FloorIndex(pos);
        return i >= 0 && this[i].End > pos ? i : -1;
    }

    /// <summary>Indexes [first, last) of the ranges overlapping [start, end).</summary>
    public (int First, int Last) Overlapping(ulong start, ulong end)
    {
        if (start >= end || Count == 0) return (0, 0);
        int first = FloorIndex(start);
        if (first < 0 || this[first].End <= start) first++;
        int last = LowerBound(end);
        return (first, Math.Max(first, last));
    }

    public void Add(RangeEntry<T> r) => InsertRange(LowerBound(r.Start), [r]);

    public void RemoveAt(int i) => RemoveRange(i, 1);

    /// <summary>Removes entries [i, i+n).</summary>
    public void RemoveRange(int i, int n)
    {
        if (n == 0) return;
        if (i < 0 || n < 0 || i + n > Count) throw new ArgumentOutOfRangeException(nameof(n), $"[{i}, +{n}) of {Count}");
        var (b, j) = Locate(i);
        if (j + n < _blocks[b].Count)
        {
            // Inside one block, which keeps entries (the common case): only the counts after it move.
            _blocks[b].RemoveRange(j, n);
            Count -= n;
            Shift(b, -n);
            return;
        }
        int first = b, left = n;
        while (left > 0)
        {
            var blk = _blocks[b];
            int take = Math.Min(left, blk.Count - j);
            blk.RemoveRange(j, take);
            left -= take;
            if (blk.Count == 0) _blocks.RemoveAt(b); // the next block slides into b
            else { b++; j = 0; }
        }
        Count -= n;
        Renumber(Math.Max(0, first - 1));
    }

    public void Set(int i, RangeEntry<T> r)
    {
        var (b, j) = Locate(i);
        var blk = _blocks[b];
        blk[j] = r;
        if (j == blk.Count - 1) _lastStart[b] = r.Start;
    }

    /// <summary>Inserts entries at index <paramref name="i"/> (0 ≤ i ≤ Count), in order.</summary>
    public void InsertRange(int i, IEnumerable<RangeEntry<T>> rs)
    {
        var items = rs as IReadOnlyCollection<RangeEntry<T>> ?? rs.ToList();
        if (items.Count == 0) return;
        if (i < 0 || i > Count) throw new ArgumentOutOfRangeException(nameof(i), $"index {i} of {Count}");
        int b, j;
        if (_blocks.Count == 0) { _blocks.Add(new List<RangeEntry<T>>(items.Count)); _before.Add(0); _lastStart.Add(0); b = 0; j = 0; }
        else if (i == Count) { b = _blocks.Count - 1; j = _blocks[b].Count; }
        else (b, j) = Locate(i);
        var blk = _blocks[b];
        blk.InsertRange(j, items);
        Count += items.Count;
        if (blk.Count <= MaxBlock)
        {
            Shift(b, items.Count);
            return;
        }
        // Split into blocks of half the maximum, so that inserts nearby do not split again at once.
        int half = MaxBlock / 2, at = half;
        var pieces = new List<List<RangeEntry<T>>>();
        while (blk.Count - at > 0)
        {
            int n = Math.Min(half, blk.Count - at);
            pieces.Add(blk.GetRange(at, n));
            at += n;
        }
        blk.RemoveRange(half, blk.Count - half);
        _blocks.InsertRange(b + 1, pieces);
        Renumber(b);
    }

    public void Clear()
    {
        _blocks.Clear();
        _before.Clear();
        _lastStart.Clear();
        Count = 0;
    }

    /// <summary>Block <paramref name="b"/> kept its place and changed its entry count by
    /// <paramref name="delta"/>: its last start is read again, and the running counts of the
    /// blocks after it move by delta (one pass over an int array, no block visited).</summary>
    private void Shift(int b, int delta)
    {
        _lastStart[b] = _blocks[b][^1].Start;
        var before = CollectionsMarshal.AsSpan(_before);
        for (int k = b + 1; k < before.Length; k++) before[k] += delta;
    }

    /// <summary>Recomputes the running counts, and the last starts, from block
    /// <paramref name="from"/> on (blocks before it are unchanged).</summary>
    private void Renumber(int from)
    {
        while (_before.Count > _blocks.Count) { _before.RemoveAt(_before.Count - 1); _lastStart.RemoveAt(_lastStart.Count - 1); }
        while (_before.Count < _blocks.Count) { _before.Add(0); _lastStart.Add(0); }
        var before = CollectionsMarshal.AsSpan(_before);
        var lastStart = CollectionsMarshal.AsSpan(_lastStart);
        int n = from == 0 ? 0 : before[from - 1] + _blocks[from - 1].Count;
        for (int b = from; b < _blocks.Count; b++)
        {
            var blk = _blocks[b];
            before[b] = n;
            lastStart[b] = blk[^1].Start;
            n += blk.Count;
        }
    }
}

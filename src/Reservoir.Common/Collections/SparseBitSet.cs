using System.Numerics;

namespace Reservoir.Common.Collections;

/// <summary>
/// A set of non-negative longs kept as 64-bit words (one per 64 consecutive values) in a hash
/// table, with the words' keys in a sorted set for ordered walks: the page cache's dirty-page
/// index (the kernel tags dirty pages in the xarray the same way). Adding or removing a value
/// costs a hash lookup; the sorted set changes only when a word appears or empties, so a run
/// of dirty pages costs one tree node per 64 pages instead of one per page.
/// Not thread-safe: the owner's lock guards it.
/// </summary>
public sealed class SparseBitSet
{
    private readonly Dictionary<long, ulong> _words = new();
    private readonly SortedSet<long> _keys = new();

    public int Count { get; private set; }

    /// <summary>Adds <paramref name="v"/>; false when it was there already.</summary>
    public bool Add(long v)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(v);
        long k = v >> 6;
        ulong bit = 1UL << (int)(v & 63);
        if (_words.TryGetValue(k, out ulong w))
        {
            if ((w & bit) != 0) return false;
            _words[k] = w | bit;
        }
        else
        {
            _words[k] = bit;
            _keys.Add(k);
        }
        Count++;
        return true;
    }

    /// <summary>Removes <paramref name="v"/>; false when it was not there.</summary>
    public bool Remove(long v)
    {
        if (v < 0) return false;
        long k = v >> 6;
        ulong bit = 1UL << (int)(v & 63);
        if (!_words.TryGetValue(k, out ulong w) || (w & bit) == 0) return false;
        w &= ~bit;
        if (w == 0)
        {
            _words.Remove(k);
            _keys.Remove(k);
        }
        else _words[k] = w;
        Count--;
        return true;
    }

    public bool Contains(long v) =>
        v >= 0 && _words.TryGetValue(v >> 6, out ulong w) && (w & (1UL << (int)(v & 63))) != 0;

    /// <summary>The values in [first, last] (both inclusive), ascending.</summary>
    public IEnumerable<long> Between(long first, long last)
    {
        if (first < 0) first = 0;
        if (last < first) yield break;
        foreach (long k in _keys.GetViewBetween(first >> 6, last >> 6))
        {
            ulong w = _words[k];
            while (w != 0)
            {
                int b = BitOperations.TrailingZeroCount(w);
                w &= w - 1;
                long v = (k << 6) | (long)b;
                if (v < first) continue;
                if (v > last) yield break;
                yield return v;
            }
        }
    }

    /// <summary>Every value, ascending.</summary>
    public IEnumerable<long> All => Between(0, long.MaxValue);

    public void Clear()
    {
        _words.Clear();
        _keys.Clear();
        Count = 0;
    }
}

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
    /// <summary>Dirty data that will be written in place (into a preallocated extent): owns no
    /// data or qgroup reservation, only a share of the metadata reservation.</summary>
    InPlace = 4,
}

/// <summary>
/// The ledger of who owns which reserved byte of one inode: a sorted map of disjoint ranges,
/// each with a set of <see cref="RangeBits"/>. Setting bits reports how many bytes were newly
/// set and clearing how many were cleared (btrfs's extent_changeset), so that reserving is
/// idempotent per range (re-dirtying reserves nothing new) and releasing frees exactly what the
/// range owned. Not thread-safe: the owning mapping's state lock guards it.
/// </summary>
internal sealed class ExtentIoTree
{
    private readonly SortedDictionary<ulong, (ulong End, RangeBits Bits)> _ranges = new();

    public bool IsEmpty => _ranges.Count == 0;

    /// <summary>Bytes in [start, end) that carry <paramref name="bit"/>.</summary>
    public ulong CountSet(ulong start, ulong end, RangeBits bit)
    {
        ulong n = 0;
        foreach (var (s, (e, b)) in Overlapping(start, end))
            if ((b & bit) != 0) n += Math.Min(e, end) - Math.Max(s, start);
        return n;
    }

    public ulong Total(RangeBits bit)
    {
        ulong n = 0;
        foreach (var (s, (e, b)) in _ranges) if ((b & bit) != 0) n += e - s;
        return n;
    }

    /// <summary>Sets <paramref name="bit"/> on [start, end); returns the bytes newly set.</summary>
    public ulong Set(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: true);

    /// <summary>Clears <paramref name="bit"/> on [start, end); returns the bytes cleared.</summary>
    public ulong Clear(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: false);

    private ulong Change(ulong start, ulong end, RangeBits bit, bool set)
    {
        if (start >= end) return 0;
        // Rebuild the covered span as a list of pieces, then write it back merged.
        var pieces = new List<(ulong S, ulong E, RangeBits B)>();
        ulong changed = 0;
        ulong cursor = start;
        foreach (var (s, (e, b)) in Overlapping(start, end).ToList())
        {
            _ranges.Remove(s);
            if (s < start) pieces.Add((s, start, b));
            ulong a = Math.Max(s, start), z = Math.Min(e, end);
            if (cursor < a) // gap with no bits
            {
                if (set) { pieces.Add((cursor, a, bit)); changed += a - cursor; }
            }
            var nb = set ? b | bit : b & ~bit;
            if (nb != b) changed += z - a;
            if (nb != RangeBits.None) pieces.Add((a, z, nb));
            if (e > end) pieces.Add((end, e, b));
            cursor = z;
        }
        if (cursor < end && set) { pieces.Add((cursor, end, bit)); changed += end - cursor; }
        foreach (var (s, e, b) in pieces) _ranges[s] = (e, b);
        MergeAround(start, end);
        return changed;
    }

    private void MergeAround(ulong start, ulong end)
    {
        // Merge neighbours with identical bits, scanning from the range just before start.
        var keys = _ranges.Keys.Where(k => k + 0 <= end).ToList();
        int i = Math.Max(0, keys.FindLastIndex(k => k < start) - 1);
        for (; i + 1 < keys.Count; i++)
        {
            var (e1, b1) = _ranges[keys[i]];
            var (e2, b2) = _ranges[keys[i + 1]];
            if (e1 == keys[i + 1] && b1 == b2)
            {
                _ranges[keys[i]] = (e2, b1);
                _ranges.Remove(keys[i + 1]);
                keys.RemoveAt(i + 1);
                i--;
            }
        }
    }

    /// <summary>Ranges overlapping [start, end), in order.</summary>
    public IEnumerable<(ulong Start, (ulong End, RangeBits Bits) V)> Overlapping(ulong start, ulong end)
    {
        foreach (var kv in _ranges)
        {
            if (kv.Key >= end) yield break;
            if (kv.Value.End > start) yield return (kv.Key, kv.Value);
        }
    }

    /// <summary>Maximal runs of <paramref name="bit"/> (adjacent ranges joined) overlapping
    /// [start, end), not clipped.</summary>
    public List<(ulong Start, ulong End)> Runs(RangeBits bit, ulong start = 0, ulong end = ulong.MaxValue)
    {
        var runs = new List<(ulong, ulong)>();
        foreach (var (s, (e, b)) in _ranges)
        {
            if ((b & bit) == 0) continue;
            if (runs.Count > 0 && runs[^1].Item2 == s) runs[^1] = (runs[^1].Item1, e);
            else runs.Add((s, e));
        }
        return runs.Where(r => r.Item2 > start && r.Item1 < end).ToList();
    }

    public override string ToString() => string.Join(" ", _ranges.Select(kv => $"[{kv.Key},{kv.Value.End}):{kv.Value.Bits}"));
}

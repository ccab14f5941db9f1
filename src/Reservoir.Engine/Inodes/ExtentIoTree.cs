using Reservoir.Common.Collections;

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
/// releasing frees exactly what the range owned. Not thread-safe: the mapping's state lock
/// guards it.
/// </summary>
internal sealed class ExtentIoTree
{
    private readonly SortedRanges<RangeBits> _r = new();

    public bool IsEmpty => _r.Count == 0;
    public int Count => _r.Count;

    public IEnumerable<(ulong Start, (ulong End, RangeBits Bits) V)> Overlapping(ulong start, ulong end)
    {
        var (f, l) = _r.Overlapping(start, end);
        var list = new List<(ulong, (ulong, RangeBits))>(l - f);
        for (int i = f; i < l; i++) list.Add((_r[i].Start, (_r[i].End, _r[i].Value)));
        return list;
    }

    /// <summary>Bytes in [start, end) that carry any bit of <paramref name="bit"/>.</summary>
    public ulong CountSet(ulong start, ulong end, RangeBits bit)
    {
        var (f, l) = _r.Overlapping(start, end);
        ulong n = 0;
        for (int i = f; i < l; i++)
            if ((_r[i].Value & bit) != 0) n += Math.Min(_r[i].End, end) - Math.Max(_r[i].Start, start);
        return n;
    }

    public ulong Total(RangeBits bit)
    {
        ulong n = 0;
        foreach (var r in _r.All) if ((r.Value & bit) != 0) n += r.End - r.Start;
        return n;
    }

    /// <summary>Sets <paramref name="bit"/> on [start, end); returns the bytes newly set.</summary>
    public ulong Set(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: true);

    /// <summary>Clears <paramref name="bit"/> on [start, end); returns the bytes cleared.</summary>
    public ulong Clear(ulong start, ulong end, RangeBits bit) => Change(start, end, bit, set: false);

    private ulong Change(ulong start, ulong end, RangeBits bit, bool set)
    {
        if (start >= end) return 0;
        var (f, l) = _r.Overlapping(start, end);
        var pieces = new List<RangeEntry<RangeBits>>(l - f + 3);
        ulong changed = 0, cursor = start;
        for (int i = f; i < l; i++)
        {
            var r = _r[i];
            if (r.Start < start) pieces.Add(r with { End = start });
            ulong a = Math.Max(r.Start, start), z = Math.Min(r.End, end);
            if (cursor < a && set) { pieces.Add(new(cursor, a, bit)); changed += a - cursor; }
            var nb = set ? r.Value | bit : r.Value & ~bit;
            if (nb != r.Value) changed += z - a;
            if (nb != RangeBits.None) pieces.Add(new(a, z, nb));
            if (r.End > end) pieces.Add(r with { Start = end });
            cursor = z;
        }
        if (cursor < end && set) { pieces.Add(new(cursor, end, bit)); changed += end - cursor; }
        if (changed == 0) return 0;
        _r.RemoveRange(f, l - f);
        // Merge with the neighbours and within, then put back in one insert.
        int at = f;
        if (at > 0 && pieces.Count > 0 && _r[at - 1].End == pieces[0].Start && _r[at - 1].Value == pieces[0].Value)
        {
            pieces[0] = pieces[0] with { Start = _r[at - 1].Start };
            _r.RemoveAt(--at);
        }
        if (at < _r.Count && pieces.Count > 0 && pieces[^1].End == _r[at].Start && pieces[^1].Value == _r[at].Value)
        {
            pieces[^1] = pieces[^1] with { End = _r[at].End };
            _r.RemoveAt(at);
        }
        var merged = new List<RangeEntry<RangeBits>>(pieces.Count);
        foreach (var p in pieces)
        {
            if (merged.Count > 0 && merged[^1].End == p.Start && merged[^1].Value == p.Value) merged[^1] = merged[^1] with { End = p.End };
            else merged.Add(p);
        }
        _r.InsertRange(at, merged);
        return changed;
    }

    /// <summary>Maximal runs of ranges carrying any bit of <paramref name="mask"/> (adjacent
    /// ranges joined). With bounds, only the runs that overlap or touch [start, end), found by
    /// walking outwards from the bounds.</summary>
    public List<(ulong Start, ulong End)> Runs(RangeBits mask, ulong start = 0, ulong end = ulong.MaxValue)
    {
        var runs = new List<(ulong, ulong)>();
        if (_r.Count == 0) return runs;
        int first, last;
        if (start == 0 && end == ulong.MaxValue) { first = 0; last = _r.Count; }
        else
        {
            // Ranges overlapping or touching [start, end], then outwards over adjacent masked ranges.
            // The range containing start-1 (a range ending exactly at start touches it).
            first = _r.FloorIndex(start == 0 ? 0 : start - 1);
            if (first < 0) first = 0;
            else if (_r[first].End < start) first++;
            last = end == ulong.MaxValue ? _r.Count : _r.LowerBound(end + 1);
            while (first > 0 && first < _r.Count && _r[first - 1].End == _r[first].Start && (_r[first - 1].Value & mask) != 0 && (_r[first].Value & mask) != 0) first--;
            while (last < _r.Count && last > 0 && _r[last - 1].End == _r[last].Start && (_r[last].Value & mask) != 0 && (_r[last - 1].Value & mask) != 0) last++;
        }
        for (int i = first; i < last; i++)
        {
            var r = _r[i];
            if ((r.Value & mask) == 0) continue;
            if (runs.Count > 0 && runs[^1].Item2 == r.Start) runs[^1] = (runs[^1].Item1, r.End);
            else runs.Add((r.Start, r.End));
        }
        return runs.Where(r => r.Item2 >= start && r.Item1 <= end).ToList();
    }

    public override string ToString() => string.Join(" ", _r.All.Select(r => $"[{r.Start},{r.End}):{r.Value}"));
}

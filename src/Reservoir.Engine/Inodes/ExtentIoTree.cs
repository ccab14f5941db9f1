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
    // Scratch lists for Change, reused: the ledger is changed on every write, and it is only
    // ever used under its owner's lock, one change at a time.
    private readonly List<RangeEntry<RangeBits>> _pieces = new(), _merged = new();

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

    /// <summary>Whether every byte of [start, end) carries all of <paramref name="bits"/>.</summary>
    public bool AllSet(ulong start, ulong end, RangeBits bits)
    {
        var (f, l) = _r.Overlapping(start, end);
        ulong cursor = start;
        for (int i = f; i < l; i++)
        {
            var r = _r[i];
            if (r.Start > cursor || (r.Value & bits) != bits) return false;
            cursor = r.End;
        }
        return cursor >= end;
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
        var pieces = _pieces;
        pieces.Clear();
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
        var merged = _merged;
        merged.Clear();
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
        AddRuns(runs, mask, start, end);
        return runs;
    }

    /// <summary><see cref="Runs"/> appended to a list the caller has (no allocation).</summary>
    public void AddRuns(List<(ulong Start, ulong End)> runs, RangeBits mask, ulong start = 0, ulong end = ulong.MaxValue)
    {
        var w = new RunWalker(this, mask, start, end);
        while (w.Next(out ulong s, out ulong e)) runs.Add((s, e));
    }

    /// <summary>How many pieces of at most <paramref name="maxLen"/> bytes the runs of
    /// <see cref="Runs"/> split into; the same answer without building the list (the write
    /// path asks this twice per dirtying to keep the outstanding-extent count).</summary>
    public int CountRunPieces(RangeBits mask, ulong start, ulong end, ulong maxLen)
    {
        int n = 0;
        var w = new RunWalker(this, mask, start, end);
        while (w.Next(out ulong s, out ulong e)) n += (int)((e - s + maxLen - 1) / maxLen);
        return n;
    }

    /// <summary>Walks the maximal masked runs overlapping or touching [start, end].</summary>
    private struct RunWalker
    {
        private readonly ExtentIoTree _t;
        private readonly RangeBits _mask;
        private readonly ulong _start, _end;
        private int _i;
        private readonly int _last;

        public RunWalker(ExtentIoTree t, RangeBits mask, ulong start, ulong end)
        {
            _t = t; _mask = mask; _start = start; _end = end;
            var r = t._r;
            if (r.Count == 0) { _i = _last = 0; return; }
            int first, last;
            if (start == 0 && end == ulong.MaxValue) { first = 0; last = r.Count; }
            else
            {
                // Ranges overlapping or touching [start, end], then outwards over adjacent masked
                // ranges. The range containing start-1 (a range ending exactly at start touches it).
                first = r.FloorIndex(start == 0 ? 0 : start - 1);
                if (first < 0) first = 0;
                else if (r[first].End < start) first++;
                last = end == ulong.MaxValue ? r.Count : r.LowerBound(end + 1);
                while (first > 0 && first < r.Count && r[first - 1].End == r[first].Start && (r[first - 1].Value & mask) != 0 && (r[first].Value & mask) != 0) first--;
                while (last < r.Count && last > 0 && r[last - 1].End == r[last].Start && (r[last].Value & mask) != 0 && (r[last - 1].Value & mask) != 0) last++;
            }
            _i = first;
            _last = last;
        }

        public bool Next(out ulong runStart, out ulong runEnd)
        {
            var r = _t._r;
            while (_i < _last)
            {
                var e = r[_i++];
                if ((e.Value & _mask) == 0) continue;
                ulong s = e.Start, z = e.End;
                while (_i < _last && r[_i].Start == z && (r[_i].Value & _mask) != 0) z = r[_i++].End;
                if (z >= _start && s <= _end) { runStart = s; runEnd = z; return true; }
            }
            runStart = runEnd = 0;
            return false;
        }
    }

    public override string ToString() => string.Join(" ", _r.All.Select(r => $"[{r.Start},{r.End}):{r.Value}"));
}

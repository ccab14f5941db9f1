using Reservoir.Common.Collections;

namespace Reservoir.Engine.Inodes;

internal enum ExtentStatus : byte
{
    /// <summary>Backed by a regular extent on disk.</summary>
    Written,
    /// <summary>Backed by a preallocated extent: reads as zeros, written in place.</summary>
    Unwritten,
    /// <summary>Dirty in the page cache with a delalloc reservation, no extent yet.</summary>
    Delayed,
    /// <summary>Nothing on disk and nothing reserved.</summary>
    Hole,
}

/// <summary>
/// ext4's extent status tree for one inode: a cache of what each block range is. A range that is
/// not cached is unknown (ask the file tree), never implicitly a hole. Invariant 7 of the design
/// notes: a range is written, unwritten, delayed or a hole, never two; inserting Delayed happens
/// only after looking again under the exclusive mapping lock (seed 001). Lookups are
/// logarithmic. Not thread-safe: the mapping's state lock guards it.
/// </summary>
internal sealed class ExtentStatusTree
{
    private readonly SortedRanges<ExtentStatus> _r = new();
    private readonly List<RangeEntry<ExtentStatus>> _scratch = new(2); // used under the owner's lock only

    /// <summary>Changes with every insert and removal: a caller that asked the file tree
    /// without the owner's lock caches the answer only if the cache did not change meanwhile
    /// (an ordered extent finishing or writeback starting may have made the answer stale).</summary>
    public long Version { get; private set; }

    /// <summary>Where the first cached range at or after <paramref name="pos"/> starts
    /// (<see cref="ulong.MaxValue"/> if none): how far a miss at <paramref name="pos"/> may be
    /// filled from the tree without overwriting what the cache knows.</summary>
    public ulong NextStart(ulong pos)
    {
        int i = _r.LowerBound(pos);
        return i < _r.Count ? _r[i].Start : ulong.MaxValue;
    }

    public bool TryLookup(ulong pos, out ExtentStatus status, out ulong start, out ulong end)
    {
        int i = _r.IndexContaining(pos);
        if (i >= 0)
        {
            status = _r[i].Value; start = _r[i].Start; end = _r[i].End;
            return true;
        }
        status = default; start = end = 0;
        return false;
    }

    /// <summary>Records [start, end) as <paramref name="status"/>, replacing what was cached.</summary>
    public void Insert(ulong start, ulong end, ExtentStatus status)
    {
        if (start >= end) return;
        Remove(start, end);
        Version++;
        _scratch.Clear();
        _scratch.Add(new(start, end, status));
        _r.InsertRange(_r.LowerBound(start), _scratch);
    }

    /// <summary>Forgets [start, end) (it becomes unknown).</summary>
    public void Remove(ulong start, ulong end)
    {
        var (f, l) = _r.Overlapping(start, end);
        if (f == l) return;
        Version++;
        var keep = _scratch;
        keep.Clear();
        if (_r[f].Start < start) keep.Add(_r[f] with { End = start });
        if (_r[l - 1].End > end) keep.Add(_r[l - 1] with { Start = end });
        _r.RemoveRange(f, l - f);
        _r.InsertRange(f, keep);
    }

    public void Clear()
    {
        _r.Clear();
        Version++;
    }

    public IEnumerable<(ulong Start, ulong End, ExtentStatus Status)> Entries => _r.All.Select(e => (e.Start, e.End, e.Value));

    public ulong Count(ExtentStatus s) => _r.All.Where(e => e.Value == s).Aggregate(0UL, (a, e) => a + e.End - e.Start);
}

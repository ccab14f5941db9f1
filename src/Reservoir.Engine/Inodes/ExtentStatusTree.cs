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
    private readonly record struct E(ulong Start, ulong End, ExtentStatus Status);

    private sealed class ByStart : IComparer<E>
    {
        public int Compare(E a, E b) => a.Start.CompareTo(b.Start);
    }

    private readonly SortedSet<E> _set = new(new ByStart());

    private E? Floor(ulong pos)
    {
        if (_set.Count == 0) return null;
        var e = _set.GetViewBetween(new E(0, 0, 0), new E(pos, 0, 0)).Max;
        return e.End == 0 ? null : e;
    }

    public bool TryLookup(ulong pos, out ExtentStatus status, out ulong start, out ulong end)
    {
        if (Floor(pos) is { } e && e.End > pos)
        {
            status = e.Status; start = e.Start; end = e.End;
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
        _set.Add(new E(start, end, status));
    }

    /// <summary>Forgets [start, end) (it becomes unknown).</summary>
    public void Remove(ulong start, ulong end)
    {
        if (start >= end || _set.Count == 0) return;
        var hit = new List<E>();
        if (Floor(start) is { } f && f.End > start) hit.Add(f);
        if (start + 1 < end) hit.AddRange(_set.GetViewBetween(new E(start + 1, 0, 0), new E(end - 1, 0, 0)));
        foreach (var e in hit)
        {
            _set.Remove(e);
            if (e.Start < start) _set.Add(e with { End = start });
            if (e.End > end) _set.Add(e with { Start = end });
        }
    }

    public void Clear() => _set.Clear();

    public IEnumerable<(ulong Start, ulong End, ExtentStatus Status)> Entries => _set.Select(e => (e.Start, e.End, e.Status));

    public ulong Count(ExtentStatus s) => _set.Where(e => e.Status == s).Aggregate(0UL, (a, e) => a + e.End - e.Start);
}

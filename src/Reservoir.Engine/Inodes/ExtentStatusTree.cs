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
/// only after looking again under the exclusive mapping lock (seed 001). Not thread-safe: the
/// mapping's state lock guards it.
/// </summary>
internal sealed class ExtentStatusTree
{
    private readonly SortedDictionary<ulong, (ulong End, ExtentStatus Status)> _map = new();

    public bool TryLookup(ulong pos, out ExtentStatus status, out ulong start, out ulong end)
    {
        foreach (var (s, (e, st)) in _map)
        {
            if (s > pos) break;
            if (e > pos) { status = st; start = s; end = e; return true; }
        }
        status = default; start = end = 0;
        return false;
    }

    /// <summary>Records [start, end) as <paramref name="status"/>, replacing what was cached.</summary>
    public void Insert(ulong start, ulong end, ExtentStatus status)
    {
        Remove(start, end);
        _map[start] = (end, status);
    }

    /// <summary>Forgets [start, end) (it becomes unknown).</summary>
    public void Remove(ulong start, ulong end)
    {
        foreach (var (s, (e, st)) in _map.Where(kv => kv.Key < end && kv.Value.End > start).ToList())
        {
            _map.Remove(s);
            if (s < start) _map[s] = (start, st);
            if (e > end) _map[end] = (e, st);
        }
    }

    public void Clear() => _map.Clear();

    public IEnumerable<(ulong Start, ulong End, ExtentStatus Status)> Entries => _map.Select(kv => (kv.Key, kv.Value.End, kv.Value.Status));

    public ulong Count(ExtentStatus s) => _map.Where(kv => kv.Value.Status == s).Aggregate(0UL, (a, kv) => a + kv.Value.End - kv.Key);
}

namespace Reservoir.Engine.Alloc;

/// <summary>
/// The allocation fence of a shrink (FsInfo.Relocate.cs): while it stands, allocations take
/// space below <see cref="FenceLimit"/> while there is any, so the extents a relocation moves
/// below it are not followed past it by new ones. For ordinary allocations it is a preference,
/// not a wall: every reservation was promised against all of the space (the fence does not
/// change what may be promised), so an allocation that finds nothing below it takes space past
/// it, and the shrink's commit then finds that space in use and refuses, with nothing lost. A
/// relocation's own allocations (<c>belowFence</c>) take space below it or fail.
/// </summary>
internal sealed partial class SpaceManager
{
    /// <summary>Where the fence stands (0: no fence). Written under the lock.</summary>
    private ulong _fence;

    /// <summary>Where the fence stands, 0 when there is none.</summary>
    public ulong FenceLimit => Volatile.Read(ref _fence);

    /// <summary>Puts the fence up at <paramref name="limit"/> (one at a time: resizes are
    /// serialised).</summary>
    public void Fence(ulong limit)
    {
        using var _ = _lock.Lock();
        if (_fence != 0) throw new InvalidOperationException("a fence already stands");
        _fence = limit;
    }

    /// <summary>Takes the fence down.</summary>
    public void Unfence()
    {
        using var _ = _lock.Lock();
        _fence = 0;
    }

    /// <summary>Whether any of [start, start+len) lies at or past the fence (an extent a shrink
    /// is about to move: written in place, its new data would be left behind).</summary>
    public bool PastFence(ulong start, ulong len)
    {
        // Without the lock (every in-place write asks): the fence goes up before the shrink's
        // sync, so a write deciding after that sync sees it.
        ulong fence = Volatile.Read(ref _fence);
        return fence != 0 && start + len > fence;
    }

    /// <summary>Space of one kind free below <paramref name="limit"/>: the free ranges of its
    /// groups there, and the slots no group has taken that end by it (either kind may take one).
    /// An upper bound on what can be moved there (free space may be in pieces too small for an
    /// extent).</summary>
    public ulong FreeBelow(ulong limit, bool data)
    {
        using var _ = _lock.Lock();
        ulong sum = 0;
        foreach (var g in _groups)
            if (g.IsData == data && g.Start < limit)
                foreach (var (_, l) in g.Free.Within(g.Start, Math.Min(g.End, limit))) sum += l;
        foreach (var (_, l) in FreeSlots(limit)) sum += l;
        return sum;
    }
}

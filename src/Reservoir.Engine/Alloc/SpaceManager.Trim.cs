using Reservoir.Format;

namespace Reservoir.Engine.Alloc;

internal sealed partial class SpaceManager
{
    /// <summary>Commits whose freed ranges are being discarded (-o discard) before they become
    /// free: a reservation that finds too little space waits for them (guarded by the lock).</summary>
    private int _discarding;

    /// <summary>
    /// -o discard: instead of <see cref="Unpin"/>, the ranges the commit freed are taken out to
    /// be discarded; they stay pinned (counted, not allocatable) until
    /// <see cref="UnpinDiscarded"/> returns them, so nothing can allocate a range while its
    /// discard is under way. Called where <see cref="Unpin"/> would be.
    /// </summary>
    public List<(ulong Start, ulong Len, BlockGroup Group)> TakePinnedForDiscard()
    {
        using var _ = _lock.Lock();
        var taken = _pinned.ToList();
        _pinned.Clear();
        if (taken.Count > 0) _discarding++;
        return taken;
    }

    /// <summary>Returns ranges <see cref="TakePinnedForDiscard"/> took, discarded or not, to the
    /// free space, and wakes reservations waiting for them.</summary>
    /// <param name="discarded">Whether the device gave any of them back to the host: their
    /// groups then have no longer all their room.</param>
    public void UnpinDiscarded(List<(ulong Start, ulong Len, BlockGroup Group)> taken, bool discarded = false)
    {
        if (taken.Count == 0) return;
        using var _ = _lock.Lock();
        if (discarded)
            foreach (var (s, l, _) in taken) NoteDiscardedUnsynchronized(s, l);
        ReturnPinnedUnsynchronized(taken);
        _discarding--;
        _lock.PulseAll();
    }

    /// <summary>The most discarded under one hold of the space lock.</summary>
    public const ulong TrimPiece = 64UL << 20;

    /// <summary>
    /// FITRIM: hands every free range of at least <paramref name="minLen"/> bytes within
    /// [<paramref name="from"/>, <paramref name="to"/>) to <paramref name="discard"/> (an image
    /// file punches a hole, so the host gets its space back): the free ranges of every block
    /// group, and the slots no group has taken, less the superblock copies. What is free here is
    /// free in the last commit too (space the running transaction frees stays pinned until its
    /// commit is durable, and a group is removed only with nothing pinned), so a discarded range
    /// holds nothing a commit needs, as a range the allocator reuses holds nothing. Each piece
    /// (at most <paramref name="piece"/> bytes, <see cref="TrimPiece"/>; tests make it small
    /// for more interleavings) is checked and discarded under the space lock, so nothing
    /// allocates it meanwhile; the lock is let go between pieces, so allocations wait for at
    /// most one. Returns the bytes discarded.
    /// </summary>
    public ulong Trim(Func<ulong, ulong, ulong> discard, ulong from, ulong to, ulong minLen, ulong piece = TrimPiece)
    {
        var candidates = new List<(ulong Start, ulong Len)>();
        using (_lock.Lock())
        {
            foreach (var g in _groups)
                foreach (var (s, l) in g.Free.Ranges)
                    Clip(s, l);
            foreach (var (s, l) in FreeSlots())
                foreach (var (ps, pl) in WithoutSuperblocks(s, l))
                    Clip(ps, pl);
        }
        void Clip(ulong s, ulong l)
        {
            ulong a = Math.Max(s, from), b = Math.Min(s + l, to);
            if (b > a && b - a >= Math.Max(minLen, 1)) candidates.Add((a, b - a));
        }
        ulong trimmed = 0;
        foreach (var (s, l) in candidates)
            for (ulong at = s; at < s + l; at += piece)
            {
                ulong n = Math.Min(piece, s + l - at);
                using (_lock.Lock())
                    if (StillFreeUnsynchronized(at, n))
                    {
                        ulong d = discard(at, n);
                        if (d > 0) NoteDiscardedUnsynchronized(at, n);
                        trimmed += d;
                    }
            }
        return trimmed;
    }

    /// <summary>Whether [start, start+len) is free space now (<see cref="StillFreeUnsynchronized"/>
    /// under the lock; tests ask it from inside a device's discard).</summary>
    public bool IsFree(ulong start, ulong len)
    {
        using var _ = _lock.Lock();
        return StillFreeUnsynchronized(start, len);
    }

    /// <summary>Whether [start, start+len) is still free: inside the filesystem, in its group's
    /// free ranges or in a slot no group has taken since. Caller holds the lock.</summary>
    private bool StillFreeUnsynchronized(ulong start, ulong len)
    {
        if (start + len > DeviceSize) return false; // a shrink since the candidates were listed
        var g = GroupOfUnsynchronized(start);
        if (g != null) return start + len <= g.End && g.Free.Contains(start, len);
        return !_groups.Any(x => x.Start < start + len && x.End > start);
    }

    /// <summary>A slot's range less the block-aligned spans of the superblock copies in it.</summary>
    private IEnumerable<(ulong Start, ulong Len)> WithoutSuperblocks(ulong start, ulong len)
    {
        ulong at = start, end = start + len, unit = (ulong)BlockSize;
        foreach (var sb in _superblocks.Order())
        {
            ulong a = Common.Units.AlignDown(sb, unit), b = Common.Units.AlignUp(sb + FormatConstants.SuperblockSize, unit);
            if (b <= at || a >= end) continue;
            if (a > at) yield return (at, a - at);
            at = Math.Max(at, b);
        }
        if (at < end) yield return (at, end - at);
    }
}

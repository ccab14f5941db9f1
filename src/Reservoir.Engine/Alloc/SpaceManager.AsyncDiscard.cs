namespace Reservoir.Engine.Alloc;

/// <summary>
/// discard=async (btrfs's async discard): the ranges each commit freed become free space at
/// once, as without discard, and wait in a queue; the discard worker later hands the device
/// whatever of each is still free, checked and discarded under the lock as a trim's pieces
/// are, so an allocation never takes a range while it is being discarded and a range
/// allocated again before its turn is left alone. What is in the free maps is free in the last
/// durable commit too (space stays pinned until its commit's flush), so a discard never
/// touches anything a durable state needs.
/// </summary>
internal sealed partial class SpaceManager
{
    /// <summary>Freed ranges waiting for the discard worker, in the order freed (guarded by
    /// the lock). Bounded: past <see cref="MaxUndiscarded"/> ranges the rest are not queued
    /// (fstrim finds them).</summary>
    private readonly List<(ulong Start, ulong Len)> _undiscarded = new();
    private const int MaxUndiscarded = 1 << 16;

    /// <summary>Queue what <see cref="Unpin"/> frees for the discard worker (discard=async).
    /// Set once at mount.</summary>
    public bool QueueFreedForDiscard { get; set; }

    /// <summary>Ranges queued and not yet taken by the worker.</summary>
    public int UndiscardedCount { get { using var _ = _lock.Lock(); return _undiscarded.Count; } }

    /// <summary>Caller holds the lock: queues ranges just returned to the free maps.</summary>
    private void QueueForDiscardUnsynchronized(IEnumerable<(ulong Start, ulong Len, BlockGroup Group)> ranges)
    {
        if (!QueueFreedForDiscard) return;
        foreach (var (s, l, _) in ranges)
        {
            if (_undiscarded.Count >= MaxUndiscarded) { UndiscardedDropped++; continue; }
            _undiscarded.Add((s, l));
        }
    }

    /// <summary>Ranges left out of a full queue (guarded by the lock; a counter for reports).</summary>
    public long UndiscardedDropped { get; private set; }

    /// <summary>Takes the whole queue, sorted and with touching ranges merged (a delete frees
    /// its extents one by one: the device gets one discard for a run of them).</summary>
    public List<(ulong Start, ulong Len)> TakeUndiscarded()
    {
        List<(ulong Start, ulong Len)> taken;
        using (_lock.Lock())
        {
            if (_undiscarded.Count == 0) return [];
            taken = _undiscarded.ToList();
            _undiscarded.Clear();
        }
        taken.Sort((a, b) => a.Start.CompareTo(b.Start));
        var merged = new List<(ulong Start, ulong Len)>(taken.Count);
        foreach (var (s, l) in taken)
        {
            if (merged.Count > 0 && merged[^1].Start + merged[^1].Len >= s)
            {
                var (ms, ml) = merged[^1];
                merged[^1] = (ms, Math.Max(ms + ml, s + l) - ms);
            }
            else merged.Add((s, l));
        }
        return merged;
    }

    /// <summary>
    /// Discards what of [start, start+len) is free now, under the lock (so nothing allocates
    /// it meanwhile): in each group it crosses, the pieces of its free ranges inside the range;
    /// where no group is any more (an empty data group removed), all of it. Returns the bytes
    /// discarded.
    /// </summary>
    public ulong DiscardIfFree(Func<ulong, ulong, ulong> discard, ulong start, ulong len)
    {
        using var _ = _lock.Lock();
        ulong end = Math.Min(start + len, DeviceSize), done = 0;
        for (ulong at = start; at < end;)
        {
            var g = GroupOfUnsynchronized(at);
            if (g == null)
            {
                // Up to the next group, if one starts inside the range.
                ulong next = _groups.Where(x => x.Start > at && x.Start < end).Select(x => x.Start).DefaultIfEmpty(end).Min();
                if (StillFreeUnsynchronized(at, next - at)) done += Discarded(at, next - at, discard(at, next - at));
                at = next;
                continue;
            }
            ulong stop = Math.Min(end, g.End);
            foreach (var (s, l) in g.Free.Within(at, stop)) done += Discarded(s, l, discard(s, l));
            at = stop;
        }
        return done;

        // A range the device gave back to the host: its group (or slot) no longer has all its room.
        ulong Discarded(ulong s, ulong l, ulong n)
        {
            if (n > 0) NoteDiscardedUnsynchronized(s, l);
            return n;
        }
    }
}

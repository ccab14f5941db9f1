using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// Moving the end of the filesystem (total_bytes), as `btrfs filesystem resize` does. The slots
/// keep their size (the superblock stores it once the size no longer gives it, GROUP_SIZE), so
/// every group stays on its slot: growing adds slots after the end, and the group in a short
/// last slot takes the slot's new length; shrinking removes the slots past the new end, and
/// shortens the group the new end falls in. Nothing is moved here (the shrink moved what was in
/// the way before this commit, FsInfo.Relocate.cs): a shrink is refused while anything (an
/// extent, a reservation, a range pinned for the last commit) still lies past the new end, or
/// when the space left could not keep what is already promised.
/// Called by the commit that resizes, with no transaction handle active (the commit lock is
/// held exclusively), so no tree block is allocated meanwhile except through this lock.
/// </summary>
internal sealed partial class SpaceManager
{
    /// <summary>A block group a resize changed. Its item is keyed by its length, so the commit
    /// deletes the item under <paramref name="OldLength"/>; unless <paramref name="Removed"/>,
    /// the group is dirty and its item is written again with the new length.</summary>
    public readonly record struct ResizedGroup(BlockGroup Group, ulong OldLength, bool Removed);

    /// <summary>
    /// Makes the filesystem <paramref name="newSize"/> bytes (node-aligned, at least the minimum
    /// size). Returns the groups whose items change, or null with <paramref name="refusal"/>
    /// saying why a shrink cannot be done, in which case nothing changed.
    /// </summary>
    public List<ResizedGroup>? Resize(ulong newSize, out string? refusal)
    {
        if (newSize % (ulong)NodeSize != 0 || newSize < FormatConstants.MinDeviceSize)
            throw new ArgumentOutOfRangeException(nameof(newSize), newSize, "not a node-aligned size of at least the minimum");
        using var _ = _lock.Lock();
        refusal = null;
        if (newSize >= DeviceSize)
        {
            var grown = GrowUnsynchronized(newSize);
            RecheckRoomAfterResizeUnsynchronized();
            _lock.PulseAll(); // reservations waiting for space (discards in flight) look again
            return grown;
        }
        var shrunk = ShrinkUnsynchronized(newSize, out refusal);
        if (shrunk != null) RecheckRoomAfterResizeUnsynchronized();
        return shrunk;
    }

    private List<ResizedGroup> GrowUnsynchronized(ulong newSize)
    {
        ulong old = DeviceSize;
        SetSizeUnsynchronized(newSize); // first: a superblock copy now inside is kept out of the growth
        var changed = new List<ResizedGroup>();
        var last = _groups.Count > 0 ? _groups[^1] : null;
        if (last != null && last.End == old && last.Length < GroupSize)
        {
            ulong oldLen = last.Length;
            SetLengthUnsynchronized(last, Math.Min(GroupSize, newSize - last.Start));
            changed.Add(new(last, oldLen, false));
        }
        return changed;
    }

    private List<ResizedGroup>? ShrinkUnsynchronized(ulong newSize, out string? refusal)
    {
        refusal = null;
        ulong old = DeviceSize;
        var cut = _groups.Where(g => g.End > newSize).ToList();
        ulong inUse = 0;
        foreach (var g in cut)
        {
            ulong keep = KeptLength(g, newSize);
            foreach (var (s, l) in Allocatable(g.Start + keep, g.Length - keep, g.Flags))
                inUse += l - FreeWithin(g, s, l);
        }
        if (inUse > 0)
        {
            refusal = $"{Units.Human(inUse)} past {Units.Human(newSize)} is still in use (extents, or space held for writes in flight or for the last commit); "
                + $"without moving anything, the smallest size now is {Units.Human(MinimumSizeUnsynchronized())}";
            return null;
        }
        // Superblock copies past the new end are still kept out while the groups shrink (the
        // ranges taken out of their free space are exactly the ones put in).
        var changed = new List<ResizedGroup>();
        foreach (var g in cut)
        {
            ulong keep = KeptLength(g, newSize);
            if (keep == 0)
            {
                _groups.Remove(g);
                var k = Kind(g.Flags);
                SpaceInfo.Sub(ref k.Total, g.Capacity, k);
                changed.Add(new(g, g.Length, true));
            }
            else
            {
                ulong oldLen = g.Length;
                SetLengthUnsynchronized(g, keep);
                changed.Add(new(g, oldLen, false));
            }
        }
        SetSizeUnsynchronized(newSize);
        // Every reservation made so far must still be keepable (a promise that cannot fail),
        // and the metadata reserve free: otherwise undo.
        if (!CanKeepUnsynchronized(0, 0, useGlobal: false))
        {
            SetSizeUnsynchronized(old);
            foreach (var c in changed)
            {
                if (c.Removed)
                {
                    _groups.Add(c.Group);
                    Kind(c.Group.Flags).Total += c.Group.Capacity;
                }
                else SetLengthUnsynchronized(c.Group, c.OldLength);
            }
            _groups.Sort((x, y) => x.Start.CompareTo(y.Start));
            refusal = $"{Units.Human(newSize)} would leave too little free space for what writes in flight were promised and for the metadata reserve ({Units.Human(GlobalReserve)})";
            return null;
        }
        return changed;
    }

    /// <summary>The smallest size the filesystem could shrink to now without moving anything:
    /// the end of the last byte in use, past the groups that hold nothing.</summary>
    public ulong MinimumSize()
    {
        using var _ = _lock.Lock();
        return MinimumSizeUnsynchronized();
    }

    private ulong MinimumSizeUnsynchronized()
    {
        ulong min = FormatConstants.MinDeviceSize;
        for (int i = _groups.Count - 1; i >= 0; i--)
        {
            var g = _groups[i];
            ulong top = HighestInUse(g);
            if (top == g.Start) continue;
            return Math.Max(min, Math.Max(Units.AlignUp(top, (ulong)NodeSize), g.Start + 4UL * (ulong)NodeSize));
        }
        return min;
    }

    /// <summary>The end of the highest byte of the group that is not free (its start when all
    /// of it is).</summary>
    private ulong HighestInUse(BlockGroup g)
    {
        foreach (var (s, l) in Enumerable.Reverse(Allocatable(g.Start, g.Length, g.Flags)))
        {
            ulong end = s + l;
            var reach = g.Free.Ranges.FirstOrDefault(r => r.Start < end && r.Start + r.Length >= end);
            if (reach.Length == 0) return end;
            if (reach.Start > s) return reach.Start;
        }
        return g.Start;
    }

    /// <summary>How much of the group stays below <paramref name="newSize"/>: 0 when the group
    /// goes (it starts past the new end, or what is left of its slot is too short to use).</summary>
    private ulong KeptLength(BlockGroup g, ulong newSize)
    {
        if (g.Start >= newSize) return 0;
        ulong keep = newSize - g.Start;
        return Geometry.UsableSlot(keep, NodeSize) ? keep : 0;
    }

    private static ulong FreeWithin(BlockGroup g, ulong start, ulong len) =>
        g.Free.Within(start, start + len).Aggregate(0UL, (sum, p) => sum + p.Length);

    /// <summary>The ranges of [start, start+len) a group of this kind may allocate: less the
    /// superblock copies (<see cref="Excluded"/>). The bounds are node-aligned (slot starts and
    /// sizes are), and so are the pieces.</summary>
    private List<(ulong Start, ulong Len)> Allocatable(ulong start, ulong len, BlockGroupFlags flags)
    {
        var pieces = new List<(ulong, ulong)>();
        ulong at = start, end = start + len;
        foreach (var (s, l) in Excluded(start, len, flags).OrderBy(x => x.Start))
        {
            if (s > at) pieces.Add((at, s - at));
            at = Math.Max(at, s + l);
        }
        if (at < end) pieces.Add((at, end - at));
        return pieces;
    }

    /// <summary>Moves the group's end to <paramref name="newLen"/>: growing adds the new part to
    /// its free space, shrinking takes the cut part (all free: checked first) out of it. Either
    /// way capacity and the kind's total follow, and the group's item must be written again.</summary>
    private void SetLengthUnsynchronized(BlockGroup g, ulong newLen)
    {
        var k = Kind(g.Flags);
        if (newLen > g.Length)
        {
            ulong added = 0;
            foreach (var (s, l) in Allocatable(g.End, g.Start + newLen - g.End, g.Flags))
            {
                g.Free.Add(s, l);
                added += l;
            }
            g.Capacity += added;
            k.Total += added;
        }
        else
        {
            ulong cut = 0;
            foreach (var (s, l) in Allocatable(g.Start + newLen, g.Length - newLen, g.Flags))
            {
                if (!g.Free.Remove(s, l)) throw new InvalidOperationException($"resize: [{s}, +{l}) of {g} is not free");
                cut += l;
            }
            g.Capacity -= cut;
            SpaceInfo.Sub(ref k.Total, cut, k);
            if (g.Cursor >= g.Start + newLen) g.Cursor = g.Start;
        }
        g.Length = newLen;
        g.Dirty = true;
    }

    /// <summary>The size, the superblock copies inside it and the metadata reserve it gives.</summary>
    private void SetSizeUnsynchronized(ulong size)
    {
        DeviceSize = size;
        _superblocks = SuperblocksWithin(size);
        GlobalReserve = GlobalReserveFor(size, NodeSize);
    }
}

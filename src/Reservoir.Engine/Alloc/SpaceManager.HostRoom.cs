using Reservoir.Common;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// The host's room for a sparse image. An image file gets its blocks from the host only when
/// they are first written, and the host may then refuse (ENOSPC): by then write(2) has long
/// accepted the data, and the commit that needs it fails. So a reservation counts only space
/// whose room the host has given: the free space of groups whose whole slot is allocated on
/// the host (<see cref="BlockGroup.HasRoom"/>) and unallocated slots likewise. When that is not
/// enough, the room of one more group or slot is asked for (fallocate of the whole slot) before
/// the reservation is answered, and ENOSPC goes to the writer when the host has none left: a
/// promise, once made, can always be kept, whatever the host holds. The image then takes its
/// room from the host a slot at a time, as it fills (btrfs's chunks); a trim or discard gives
/// room back, and the group it punched must ask again before its free space counts.
/// Allocations made against reservations take only space with room; those made without one
/// (the commit's own tree blocks, relocation) prefer it and fall back to the rest, where the
/// host decides at the write as it did before. Mount asks room for every metadata group, so
/// commits and the global reserve have theirs. Every field is guarded by the space lock.
/// </summary>
internal sealed partial class SpaceManager
{
    /// <summary>The device's answers (IBlockDevice.HasRoom, MakeRoom); null until
    /// <see cref="AttachHost"/> (a space manager without a host: every slot has its room).</summary>
    private Func<ulong, ulong, bool>? _hasRoom;
    private Func<ulong, ulong, Errno>? _makeRoom;
    /// <summary>Unallocated slots (by start) whose room the host has given.</summary>
    private readonly HashSet<ulong> _roomySlots = new();
    /// <summary>Groups without their room: while 0, reservations count every free byte.</summary>
    private int _roomlessGroups;

    private bool TracksRoom => _makeRoom != null;

    /// <summary>
    /// At mount, once the groups and their extents are known: asks the device which groups and
    /// unallocated slots have their room, then makes room for every metadata group (false, with
    /// the groups left as they were, when the host has not that much: commits may then meet
    /// the host's ENOSPC, as before this was tracked).
    /// </summary>
    public bool AttachHost(Func<ulong, ulong, bool> hasRoom, Func<ulong, ulong, Errno> makeRoom)
    {
        using var _ = _lock.Lock();
        _hasRoom = hasRoom;
        _makeRoom = makeRoom;
        _roomySlots.Clear();
        _roomlessGroups = 0;
        foreach (var g in _groups)
        {
            g.HasRoom = hasRoom(g.Start, g.Length);
            if (!g.HasRoom) _roomlessGroups++;
        }
        foreach (var (s, l) in FreeSlots())
            if (hasRoom(s, l)) _roomySlots.Add(s);
        bool all = true;
        foreach (var g in _groups)
            if (!g.IsData && !g.HasRoom) all &= MakeGroupRoomUnsynchronized(g);
        return all;
    }

    private bool SlotHasRoom(ulong start) => !TracksRoom || _roomySlots.Contains(start);

    /// <summary>Free bytes of one kind in groups without their room: not for reservations.</summary>
    private long RoomlessFree(bool data)
    {
        if (_roomlessGroups == 0) return 0;
        long sum = 0;
        foreach (var g in _groups)
            if (!g.HasRoom && g.IsData == data) sum += (long)g.Free.FreeBytes;
        return sum;
    }

    private bool MakeGroupRoomUnsynchronized(BlockGroup g)
    {
        if (_makeRoom!(g.Start, g.Length) != Errno.OK) return false;
        g.HasRoom = true;
        _roomlessGroups--;
        return true;
    }

    /// <summary>Asks the host for the room of one more group of the kind (the one with the most
    /// free space) or, failing that, of one unallocated slot. False when there is nothing left
    /// to ask for or the host has no room.</summary>
    private bool MakeRoomUnsynchronized(bool data)
    {
        if (!TracksRoom) return false;
        BlockGroup? best = null;
        foreach (var g in _groups)
            if (!g.HasRoom && g.IsData == data && (best == null || g.Free.FreeBytes > best.Free.FreeBytes)) best = g;
        if (best != null && best.Free.FreeBytes > 0) return MakeGroupRoomUnsynchronized(best);
        foreach (var (s, l) in FreeSlots())
        {
            if (_roomySlots.Contains(s)) continue;
            if (_makeRoom!(s, l) != Errno.OK) return false;
            _roomySlots.Add(s);
            return true;
        }
        return false;
    }

    /// <summary>A discard gave [start, start+len) back to the host: its group (or slot) has no
    /// longer all its room.</summary>
    private void NoteDiscardedUnsynchronized(ulong start, ulong len)
    {
        if (!TracksRoom || len == 0) return;
        var g = GroupOfUnsynchronized(start);
        if (g != null)
        {
            if (g.HasRoom) { g.HasRoom = false; _roomlessGroups++; }
            return;
        }
        ulong slot = SlotStart(start);
        _roomySlots.Remove(slot);
    }

    private ulong SlotStart(ulong bytenr) =>
        Format.FormatConstants.ReservedPrefix + (bytenr - Format.FormatConstants.ReservedPrefix) / GroupSize * GroupSize;

    /// <summary>A group leaves (reclaimed empty, or cut by a shrink): its slot keeps its room.</summary>
    private void NoteGroupGoneUnsynchronized(BlockGroup g)
    {
        if (!TracksRoom) return;
        if (g.HasRoom) _roomySlots.Add(g.Start);
        else _roomlessGroups--;
    }

    /// <summary>A group just made in the slot at <paramref name="start"/> has the slot's room.</summary>
    private void NoteGroupMadeUnsynchronized(BlockGroup g)
    {
        if (!TracksRoom) return;
        g.HasRoom = _roomySlots.Remove(g.Start);
        if (!g.HasRoom) _roomlessGroups++;
    }

    /// <summary>After a resize: the groups and slots the new size changed are asked again (a
    /// slot past the old end, the last group grown into it), and slots past a shrink's end
    /// are forgotten.</summary>
    private void RecheckRoomAfterResizeUnsynchronized()
    {
        if (!TracksRoom) return;
        _roomySlots.RemoveWhere(s => s >= DeviceSize);
        _roomlessGroups = 0;
        foreach (var g in _groups)
        {
            if (g.HasRoom && !_hasRoom!(g.Start, g.Length)) g.HasRoom = false;
            if (!g.HasRoom) _roomlessGroups++;
        }
        foreach (var (s, l) in FreeSlots())
            if (!_roomySlots.Contains(s) && _hasRoom!(s, l)) _roomySlots.Add(s);
    }
}

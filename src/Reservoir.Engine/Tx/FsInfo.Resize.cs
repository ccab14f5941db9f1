using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Format;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Growing and shrinking the filesystem (`reservoir filesystem resize`, btrfs's resize ioctl).
/// The new size takes effect in a commit of its own: the commit applies it while no handle is
/// active (<see cref="SpaceManager.Resize"/>), rewrites the block group items it changed and
/// writes total_bytes (and group_size with the GROUP_SIZE feature when the size no longer gives
/// it) in the same superblock, so the last commit and its size always agree: a power cut before
/// that commit is durable leaves the old size with everything it had.
/// Order with the device: a growing image file is extended (durably) before the commit that
/// uses the new space; a shrinking one is cut only after the commit that stopped using it.
/// A shrink first moves what is in its way (FsInfo.Relocate.cs), behind an allocation fence
/// that keeps new extents below the new end from before its sync until its commit.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>Serialises resizes (one device size change and its commit at a time).</summary>
    private readonly FsMutex _resizeMutex;
    /// <summary>A shrink is moving extents (its fence stands), and whether it was asked to stop
    /// (`resize cancel`): read between its rounds. Set without the resize mutex, which the
    /// shrink holds.</summary>
    private volatile bool _shrinking, _cancelShrink;

    /// <summary>`resize cancel`: the shrink under way stops after the round it is in (what that
    /// round moved stays moved; the size stays as it was) and answers ECANCELED. False when no
    /// shrink is under way.</summary>
    public bool CancelResize()
    {
        if (!_shrinking) return false;
        _cancelShrink = true;
        return true;
    }
    /// <summary>The size the next commit resizes to (0: none) and its refusal, if it refused.
    /// Guarded by the commit mutex.</summary>
    private ulong _resizeTo;
    private string? _resizeRefusal;

    /// <summary>The filesystem's size now.</summary>
    public ulong TotalBytes => Space.DeviceSize;

    /// <summary>
    /// Makes the filesystem <paramref name="requested"/> bytes (rounded down to a node). Grows
    /// the image file first when it is shorter; cuts it after a shrink. Returns the new size.
    /// What the running transaction freed stays pinned until its commit is durable, so a shrink
    /// is asked after a sync (<see cref="Filesystem.Resize(ulong, out Filesystem.ResizeResult, out string?)"/>
    /// writes back and commits first), or it finds that space in use.
    /// Throws <see cref="FsException"/>: EROFS read-only, EINVAL below the minimum, EFBIG past
    /// what the device can be, ENOSPC when what is in use does not fit below the new end (the
    /// message says what is in use).
    /// </summary>
    public ulong Resize(ulong requested) => Resize(requested, sync: null, out _);

    /// <summary>
    /// <see cref="Resize(ulong)"/>, moving the extents in the way of a shrink first
    /// (<see cref="Relocate"/>): the allocation fence goes up at the new end, then
    /// <paramref name="sync"/> (the filesystem's writeback and commit: ordered extents finish,
    /// what was freed is free) runs, then everything still past the end is moved below it, then
    /// the resize's commit cuts the groups. A shrink is refused (ENOSPC, the size as it was, no
    /// data lost) only when what is in use does not fit below the new end.
    /// <paramref name="moved"/> says what moved.
    /// </summary>
    public ulong Resize(ulong requested, Action? sync, out RelocationResult moved)
    {
        moved = default;
        if (ReadOnly) throw new FsException(Errno.EROFS, "the filesystem is mounted read-only");
        ulong to = Units.AlignDown(requested, (ulong)NodeSize);
        if (to < FormatConstants.MinDeviceSize)
            throw new FsException(Errno.EINVAL, $"{Units.Human(requested)} is below the smallest filesystem, {Units.Human(FormatConstants.MinDeviceSize)}");
        if (to > FormatConstants.MaxFileSize)
            throw new FsException(Errno.EFBIG, $"{Units.Human(requested)} is past the largest filesystem, {Units.Human(FormatConstants.MaxFileSize)}");
        using var serial = _resizeMutex.Lock();
        ulong from = Space.DeviceSize;
        if (to == from) return to;
        if (to > from) return CommitResize(to, from);
        try
        {
            Space.Fence(to);
            (_cancelShrink, _shrinking) = (false, true);
            try
            {
                sync?.Invoke();
                moved = Relocate(to);
                if (_cancelShrink) throw new FsException(Errno.ECANCELED, $"the shrink to {Units.Human(to)} was cancelled; the size stays {Units.Human(from)}");
                return CommitResize(to, from);
            }
            finally
            {
                _shrinking = false;
                Space.Unfence(); // whatever happened: the groups are cut, or stay
            }
        }
        catch (FsException ex) when (ex.Errno == Errno.ENOSPC)
        {
            throw new FsException(Errno.ENOSPC, $"cannot shrink to {Units.Human(to)}: {ex.Reason}; "
                + $"{Units.Human(Space.Data.Used)} of data and {Units.Human(Space.Meta.Used)} of metadata are in use");
        }
    }

    /// <summary>The resize's own commit (the device grown first, cut after a shrink). Caller
    /// holds the resize mutex.</summary>
    private ulong CommitResize(ulong to, ulong from)
    {
        if (to > from && Device.Size < to)
        {
            if (!Device.CanResize)
                throw new FsException(Errno.EFBIG, $"the device has {Units.Human(Device.Size)}: the filesystem cannot grow to {Units.Human(to)}");
            Device.Resize(to);
        }
        using (_commitMutex.Lock())
        {
            _resizeTo = to;
            _resizeRefusal = null;
            ForceCommit = true;
        }
        Commit();
        string? refusal;
        bool applied;
        using (_commitMutex.Lock())
        {
            applied = _resizeTo == 0;
            _resizeTo = 0;
            refusal = _resizeRefusal;
        }
        if (!applied) throw new FsException(Errno.EIO, FailedReason ?? "the resize was not committed");
        if (refusal != null) throw new FsException(Errno.ENOSPC, refusal);
        // The image past the new end holds nothing any commit needs now (the shrink's commit is
        // durable, and the one before it in the other slot only reads as invalid).
        if (to < from && Device.CanResize && Device.Size > to) Device.Resize(to);
        return to;
    }

    /// <summary>In the commit, with no handle active and the tree locks held: applies a pending
    /// resize, deleting the items of the block groups it changed (their key holds the length;
    /// a changed group is dirty and gets its item back with the new length).</summary>
    private void ApplyResize(TransHandle h)
    {
        ulong to = _resizeTo;
        if (to == 0) return;
        _resizeTo = 0;
        var changed = Space.Resize(to, out _resizeRefusal);
        if (changed == null) return;
        foreach (var c in changed)
            if (c.Group.OnDisk) ExtentTree.Delete(h, new Key(c.Group.Start, KeyTypes.BlockGroupItem, c.OldLength));
    }

    /// <summary>The superblock's size fields for the space as it is now.</summary>
    private void SetSizeFields(Superblock sb)
    {
        sb.TotalBytes = Space.DeviceSize;
        sb.GroupSize = Space.GroupSize;
        if (Geometry.DerivedGroupSize(sb.TotalBytes, NodeSize) != Space.GroupSize) sb.Incompat |= Features.IncompatGroupSize;
        else sb.Incompat &= ~Features.IncompatGroupSize;
    }
}

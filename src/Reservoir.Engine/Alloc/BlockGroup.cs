using Reservoir.Format;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// A contiguous region of the device that holds only one kind of extent: tree nodes
/// (metadata) or file data. Keeping nodes apart means metadata never fails for want of an
/// aligned nodesize hole amid fragmented data. Mirrors BLOCK_GROUP_ITEM (SPEC.md §4.3).
/// </summary>
internal sealed class BlockGroup(ulong start, ulong length, BlockGroupFlags flags)
{
    public ulong Start { get; } = start;
    /// <summary>Its slot's length: changes only when a resize moves the end of the filesystem
    /// through the group's slot (SpaceManager.Resize.cs), under the space lock.</summary>
    public ulong Length { get; set; } = length;
    public BlockGroupFlags Flags { get; } = flags;
    public ulong End => Start + Length;
    /// <summary>Bytes that can ever be allocated here (length minus superblock copies).</summary>
    public ulong Capacity { get; set; }
    /// <summary>Bytes of live extents (the BLOCK_GROUP_ITEM's used field after commit).</summary>
    public ulong Used { get; set; }
    /// <summary>Data allocated but not yet in the extent tree (see <see cref="SpaceInfo"/>).</summary>
    public ulong Reserved { get; set; }
    public ulong Pinned { get; set; }
    public FreeSpaceMap Free { get; } = new();
    /// <summary>Used changed since the item was last written, or the item does not exist yet.</summary>
    public bool Dirty { get; set; }
    public bool OnDisk { get; set; }
    public ulong Cursor { get; set; } = start;
    /// <summary>The host has given the whole slot its room (SpaceManager.HostRoom.cs): a
    /// reservation may count this group's free space.</summary>
    public bool HasRoom { get; set; } = true;

    public bool IsData => Flags == BlockGroupFlags.Data;
    public bool Contains(ulong bytenr) => bytenr >= Start && bytenr < End;
    public override string ToString() => $"{Flags} [{Start}, +{Length}) used {Used}";
}

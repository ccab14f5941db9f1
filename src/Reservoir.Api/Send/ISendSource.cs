using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>What a send needs of one inode: lstat's answer, with the birth time (statx's), which
/// with the inode number tells an inode from a later one that took its number.</summary>
public readonly record struct SendStat(ulong Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Rdev, ulong Size,
    Timespec Atime, Timespec Mtime, Timespec Ctime, Timespec Btime = default)
{
    public uint Type => Mode & 0xF000;
    public bool IsDir => Type == 0x4000;
    public bool IsReg => Type == 0x8000;
    public bool IsLnk => Type == 0xA000;
}

/// <summary>
/// A read-only subvolume to send, read by paths relative to its root ("" is the root): an
/// unmounted image through the embedded API, or a mounted one through the kernel. The send
/// reads it once, parents before children; the subvolume must not change meanwhile, which is
/// why only read-only subvolumes are sent (as btrfs requires).
/// </summary>
public interface ISendSource
{
    SendStat Lstat(string path);

    /// <summary>The names in a directory, without "." and "..", and without the roots of other
    /// subvolumes nested in it (a send carries one subvolume, as btrfs's does).</summary>
    IReadOnlyList<string> List(string dir);

    string ReadLink(string path);

    IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path);

    ISendFile Open(string path);
}

/// <summary>An open regular file of a <see cref="ISendSource"/>.</summary>
public interface ISendFile : IDisposable
{
    /// <summary>SEEK_DATA: the first offset at or after <paramref name="offset"/> holding data
    /// (not a hole, not a preallocated range), or -1 if none before the end.</summary>
    long NextData(long offset);

    /// <summary>SEEK_HOLE: the first hole at or after <paramref name="offset"/> (the end of the
    /// file if none before it).</summary>
    long NextHole(long offset);

    int Read(long offset, Span<byte> buffer);

    /// <summary>The file's extents in file order, holes left out, or null where the source cannot
    /// tell. A range that two files map to the same place of one extent holds the same bytes
    /// (extents a snapshot shares are never written in place), so an incremental send skips it
    /// unread.</summary>
    IReadOnlyList<Engine.ExtentMapping>? Extents();
}

/// <summary>
/// A source that can say which inodes may differ from an earlier snapshot of the same
/// filesystem, and where an inode is, so that an incremental send reads what changed and
/// nothing else (btrfs's send compares the two trees the same way). Inode numbers are those
/// within the subvolume (<see cref="SendStat.Ino"/>); the root is
/// <see cref="Engine.Filesystem.RootIno"/>.
/// </summary>
public interface IChangeTrackingSource : ISendSource
{
    /// <summary>Every inode whose attributes, names, entries, data or xattrs may differ between
    /// <paramref name="parent"/> and this subvolume (a superset is fine; one left out is not), or
    /// null when this source cannot tell for that parent (another filesystem, say).</summary>
    IReadOnlyCollection<ulong>? ChangedSince(ISendSource parent);

    /// <summary>Every name of the inode as (directory inode, name): none when it has none (or
    /// does not exist), and none for the subvolume's root.</summary>
    IReadOnlyList<(ulong Dir, string Name)> NamesOf(ulong ino);

    /// <summary>The inode numbers the back-references of the data extent at
    /// <paramref name="bytenr"/> name, in any subvolume (snapshots keep inode numbers, so a file
    /// of this one that holds the extent is among them; others may be too), or null when the
    /// source cannot tell.</summary>
    IReadOnlyCollection<ulong>? InodesReferencing(ulong bytenr);
}

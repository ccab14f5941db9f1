using Reservoir.Format;

namespace Reservoir.Engine;

/// <summary>What stat(2) reports for an inode.</summary>
public readonly record struct InodeAttr(
    ulong Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Rdev, ulong Size, ulong Blocks,
    uint BlockSize, Timespec Atime, Timespec Mtime, Timespec Ctime, Timespec Btime, ulong Generation, ulong Flags)
{
    public bool IsDir => (Mode & 0xF000) == 0x4000;
    public bool IsReg => (Mode & 0xF000) == 0x8000;
    public bool IsLnk => (Mode & 0xF000) == 0xA000;
}

[Flags]
public enum SetAttrMask
{
    None = 0,
    Mode = 1,
    Uid = 2,
    Gid = 4,
    Size = 8,
    Atime = 16,
    Mtime = 32,
    AtimeNow = 64,
    MtimeNow = 128,
    Ctime = 256,
}

public struct SetAttrRequest
{
    public SetAttrMask Mask;
    public uint Mode, Uid, Gid;
    public ulong Size;
    public Timespec Atime, Mtime, Ctime;
}

/// <summary>One readdir entry. <see cref="Cookie"/> resumes after this entry.</summary>
public readonly record struct DirEntryInfo(string Name, byte[] NameBytes, ulong Ino, byte Type, ulong Cookie);

[Flags]
public enum RenameFlags : uint
{
    None = 0,
    NoReplace = 1, // RENAME_NOREPLACE
    Exchange = 2,  // RENAME_EXCHANGE
    Whiteout = 4,  // RENAME_WHITEOUT: a whiteout (character device 0:0) is left at the old name
}

public enum XattrSetFlags
{
    Any = 0,
    Create = 1,  // XATTR_CREATE
    Replace = 2, // XATTR_REPLACE
}

public readonly record struct StatFsInfo(
    uint BlockSize, ulong Blocks, ulong BlocksFree, ulong BlocksAvail, ulong Files, ulong FilesFree, uint NameMax, Guid Fsid);

/// <summary>Space counters for tests, `inspect` and `filesystem usage` (bytes). DeviceSlack:
/// how much of the device (an image file's length now) lies past the filesystem, which
/// `reservoir filesystem resize max` would take in.</summary>
public readonly record struct SpaceReport(
    ulong DeviceBytes, ulong DataTotal, ulong DataUsed, ulong DataPinned, ulong DataMayUse,
    ulong MetaTotal, ulong MetaUsed, ulong MetaPinned, ulong MetaMayUse, ulong Unallocated, ulong GlobalReserve, long Underflows,
    ulong DeviceSlack = 0);

/// <summary>One mapped range of a file (FIEMAP-like). Holes are not listed.</summary>
public readonly record struct ExtentMapping(ulong FileOffset, ulong Length, ulong DiskBytenr, ulong DiskLength, ulong ExtentOffset, string Type, ulong Generation);

public readonly record struct BlockGroupInfo(ulong Start, ulong Length, string Type, ulong Used, ulong Capacity);

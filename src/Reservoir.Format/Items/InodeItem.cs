using System.Buffers.Binary;

namespace Reservoir.Format.Items;

[Flags]
public enum InodeFlags : ulong
{
    None = 0,
    /// <summary>Data is overwritten in place rather than copied on write (chattr +C).</summary>
    NoDataCow = 1,
    /// <summary>No data checksums are kept (implied by NoDataCow, as in btrfs).</summary>
    NoDataSum = 2,
    Immutable = 4,
    Append = 8,
}

/// <summary>INODE_ITEM (objectid = inode number, offset 0), 160 bytes. SPEC.md §5.1.</summary>
public struct InodeItem
{
    public const int Size = 160;
    public ulong Generation;   // 0x00 transaction that created the inode
    public ulong Transid;      // 0x08 transaction that last changed it
    public ulong FileSize;     // 0x10 i_size
    public ulong Nbytes;       // 0x18 bytes of data extents referenced (st_blocks * 512)
    public uint Nlink;         // 0x20
    public uint Uid;           // 0x24
    public uint Gid;           // 0x28
    public uint Mode;          // 0x2C type and permission bits, as st_mode
    public ulong Rdev;         // 0x30 device number for block/char nodes
    public InodeFlags Flags;   // 0x38
    public ulong Sequence;     // 0x40 bumped on every change (NFS change attribute)
    public Timespec Atime;     // 0x48
    public Timespec Ctime;     // 0x54
    public Timespec Mtime;     // 0x60
    public Timespec Otime;     // 0x6C birth time
                               // 0x78..0xA0 reserved, zero

    public static InodeItem Read(ReadOnlySpan<byte> s) => new()
    {
        Generation = BinaryPrimitives.ReadUInt64LittleEndian(s),
        Transid = BinaryPrimitives.ReadUInt64LittleEndian(s[0x08..]),
        FileSize = BinaryPrimitives.ReadUInt64LittleEndian(s[0x10..]),
        Nbytes = BinaryPrimitives.ReadUInt64LittleEndian(s[0x18..]),
        Nlink = BinaryPrimitives.ReadUInt32LittleEndian(s[0x20..]),
        Uid = BinaryPrimitives.ReadUInt32LittleEndian(s[0x24..]),
        Gid = BinaryPrimitives.ReadUInt32LittleEndian(s[0x28..]),
        Mode = BinaryPrimitives.ReadUInt32LittleEndian(s[0x2C..]),
        Rdev = BinaryPrimitives.ReadUInt64LittleEndian(s[0x30..]),
        Flags = (InodeFlags)BinaryPrimitives.ReadUInt64LittleEndian(s[0x38..]),
        Sequence = BinaryPrimitives.ReadUInt64LittleEndian(s[0x40..]),
        Atime = Timespec.Read(s[0x48..]),
        Ctime = Timespec.Read(s[0x54..]),
        Mtime = Timespec.Read(s[0x60..]),
        Otime = Timespec.Read(s[0x6C..]),
    };

    public readonly void Write(Span<byte> s)
    {
        s[..Size].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s, Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x08..], Transid);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x10..], FileSize);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x18..], Nbytes);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x20..], Nlink);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x24..], Uid);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x28..], Gid);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x2C..], Mode);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x30..], Rdev);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x38..], (ulong)Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x40..], Sequence);
        Atime.Write(s[0x48..]);
        Ctime.Write(s[0x54..]);
        Mtime.Write(s[0x60..]);
        Otime.Write(s[0x6C..]);
    }
}

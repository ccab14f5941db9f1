using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>ROOT_ITEM (objectid = tree id, offset 0) in the root tree, 160 bytes, SPEC.md §4.1:
/// where a tree's root node is and what the tree is.</summary>
public struct RootItem
{
    public const int Size = 160;
    public const ulong FlagReadOnly = 1;
    public ulong Bytenr;       // 0x00 root node address
    public ulong Generation;   // 0x08 generation of the root node
    public ulong RootDirId;    // 0x10 root directory inode (fs trees), else 0
    public ulong Flags;        // 0x18
    public ulong BytesUsed;    // 0x20 bytes of tree nodes owned
    public uint Refs;          // 0x28 1 while the tree is live
    public byte Level;         // 0x2C level of the root node
    public ulong Ctransid;     // 0x30 transaction of the last change
    public ulong Otransid;     // 0x38 transaction that created the tree
    public Timespec Ctime;     // 0x40
    public Timespec Otime;     // 0x4C
    public Guid Uuid;          // 0x58
    public Guid ParentUuid;    // 0x68 snapshot source, zero if none
    public ulong LastSnapshot; // 0x78 last transaction in which a snapshot shared this tree's root
    public Guid ReceivedUuid;  // 0x80 the sent subvolume's uuid, for a subvolume made by receive; zero if none
    public ulong Stransid;     // 0x90 the sent subvolume's ctransid (on the sending filesystem)
    public ulong Rtransid;     // 0x98 transaction that recorded the receive

    public static RootItem Read(ReadOnlySpan<byte> s) => new()
    {
        Bytenr = BinaryPrimitives.ReadUInt64LittleEndian(s),
        Generation = BinaryPrimitives.ReadUInt64LittleEndian(s[0x08..]),
        RootDirId = BinaryPrimitives.ReadUInt64LittleEndian(s[0x10..]),
        Flags = BinaryPrimitives.ReadUInt64LittleEndian(s[0x18..]),
        BytesUsed = BinaryPrimitives.ReadUInt64LittleEndian(s[0x20..]),
        Refs = BinaryPrimitives.ReadUInt32LittleEndian(s[0x28..]),
        Level = s[0x2C],
        Ctransid = BinaryPrimitives.ReadUInt64LittleEndian(s[0x30..]),
        Otransid = BinaryPrimitives.ReadUInt64LittleEndian(s[0x38..]),
        Ctime = Timespec.Read(s[0x40..]),
        Otime = Timespec.Read(s[0x4C..]),
        Uuid = new Guid(s.Slice(0x58, 16)),
        ParentUuid = new Guid(s.Slice(0x68, 16)),
        LastSnapshot = BinaryPrimitives.ReadUInt64LittleEndian(s[0x78..]),
        ReceivedUuid = new Guid(s.Slice(0x80, 16)),
        Stransid = BinaryPrimitives.ReadUInt64LittleEndian(s[0x90..]),
        Rtransid = BinaryPrimitives.ReadUInt64LittleEndian(s[0x98..]),
    };

    public readonly void Write(Span<byte> s)
    {
        s[..Size].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s, Bytenr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x08..], Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x10..], RootDirId);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x18..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x20..], BytesUsed);
        BinaryPrimitives.WriteUInt32LittleEndian(s[0x28..], Refs);
        s[0x2C] = Level;
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x30..], Ctransid);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x38..], Otransid);
        Ctime.Write(s[0x40..]);
        Otime.Write(s[0x4C..]);
        Uuid.TryWriteBytes(s[0x58..]);
        ParentUuid.TryWriteBytes(s[0x68..]);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x78..], LastSnapshot);
        ReceivedUuid.TryWriteBytes(s[0x80..]);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x90..], Stransid);
        BinaryPrimitives.WriteUInt64LittleEndian(s[0x98..], Rtransid);
    }
}

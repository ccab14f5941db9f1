using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>
/// EXTENT_ITEM (objectid = disk bytenr, offset = length) for data extents and
/// METADATA_ITEM (objectid = bytenr, offset = level) for tree blocks, in the extent tree,
/// SPEC.md §4.2. 32 bytes: refs u64, generation u64, flags u64, owner u64. For data the owner is
/// the tree that allocated the extent (what simple quotas charge); its back-references are
/// EXTENT_DATA_REF items. For tree blocks the owner is the tree the block belongs to.
/// </summary>
public struct ExtentItem
{
    public const int Size = 32;
    public ulong Refs;
    public ulong Generation;
    public ExtentFlags Flags;
    public ulong Owner;

    public static bool TryRead(ReadOnlySpan<byte> s, out ExtentItem e)
    {
        e = default;
        if (s.Length != Size) return false;
        e.Refs = BinaryPrimitives.ReadUInt64LittleEndian(s);
        e.Generation = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        e.Flags = (ExtentFlags)BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        e.Owner = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]);
        return true;
    }

    public readonly void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Refs);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], (ulong)Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], Owner);
    }
}

/// <summary>
/// EXTENT_DATA_REF (objectid = disk bytenr, offset = hash of root/inode/offset), 28 bytes:
/// root u64, inode u64, offset u64 (file offset minus the extent offset, so every file extent
/// item cut from one write maps to the same ref), count u32 (how many file extent items).
/// On a hash collision the next free offset is used (open addressing).
/// </summary>
public struct ExtentDataRef
{
    public const int Size = 28;
    public ulong Root;
    public ulong Inode;
    public ulong Offset;
    public uint Count;

    public static ulong Hash(ulong root, ulong inode, ulong offset)
    {
        Span<byte> b = stackalloc byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(b, root);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], inode);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], offset);
        uint hi = Common.Crc32C.Compute(b[..8], 0xFFFFFFFF);
        uint lo = Common.Crc32C.Compute(b[8..], 0xFFFFFFFF);
        return ((ulong)hi << 31) ^ lo;
    }

    public static bool TryRead(ReadOnlySpan<byte> s, out ExtentDataRef r)
    {
        r = default;
        if (s.Length != Size) return false;
        r.Root = BinaryPrimitives.ReadUInt64LittleEndian(s);
        r.Inode = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        r.Offset = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        r.Count = BinaryPrimitives.ReadUInt32LittleEndian(s[24..]);
        return true;
    }

    public readonly void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Root);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Inode);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], Count);
    }
}

/// <summary>BLOCK_GROUP_ITEM (objectid = start, offset = length) in the extent tree, 16 bytes:
/// used u64, flags u64 (<see cref="BlockGroupFlags"/>). SPEC.md §4.3.</summary>
public struct BlockGroupItem
{
    public const int Size = 16;
    public ulong Used;
    public BlockGroupFlags Flags;

    public static bool TryRead(ReadOnlySpan<byte> s, out BlockGroupItem b)
    {
        b = default;
        if (s.Length != Size) return false;
        b.Used = BinaryPrimitives.ReadUInt64LittleEndian(s);
        b.Flags = (BlockGroupFlags)BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        return b.Flags is BlockGroupFlags.Data or BlockGroupFlags.Metadata;
    }

    public readonly void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Used);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], (ulong)Flags);
    }
}

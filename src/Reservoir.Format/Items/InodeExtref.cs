using System.Buffers.Binary;
using Reservoir.Common;

namespace Reservoir.Format.Items;

/// <summary>
/// INODE_EXTREF (objectid = inode, offset = <see cref="Hash"/> of the parent and the name),
/// SPEC.md §5.2: one or more (parent u64, index u64, name_len u16, name) records, names of the
/// inode that did not fit the INODE_REF item of their directory. All names of one inode in one
/// directory share that item, which must fit a leaf (about 1,100 names of 8 bytes in a 16 KiB
/// node); btrfs lifted the same limit with the same item. Records whose hashes collide share an
/// item.
/// </summary>
public readonly ref struct InodeExtref
{
    public const int HeaderSize = 18;
    public readonly ulong Parent;
    public readonly ulong Index;
    public readonly ReadOnlySpan<byte> Name;

    public InodeExtref(ulong parent, ulong index, ReadOnlySpan<byte> name) { Parent = parent; Index = index; Name = name; }

    public int EncodedSize => HeaderSize + Name.Length;

    /// <summary>The key offset: CRC32C of the parent's number (8 bytes, little-endian) in the
    /// high half and CRC32C of the name in the low half, both seeded as the name hash of
    /// DIR_ITEMs (<see cref="NameHash"/>).</summary>
    public static ulong Hash(ulong parent, ReadOnlySpan<byte> name)
    {
        Span<byte> p = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(p, parent);
        return (ulong)Crc32C.Compute(p, 0xFFFFFFFE) << 32 | NameHash.Of(name);
    }

    public void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Parent);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Index);
        BinaryPrimitives.WriteUInt16LittleEndian(s[16..], (ushort)Name.Length);
        Name.CopyTo(s[HeaderSize..]);
    }

    public static bool TryRead(ReadOnlySpan<byte> s, out InodeExtref r, out int size)
    {
        r = default; size = 0;
        if (s.Length < HeaderSize) return false;
        int n = BinaryPrimitives.ReadUInt16LittleEndian(s[16..]);
        size = HeaderSize + n;
        if (size > s.Length || n == 0) return false;
        r = new InodeExtref(BinaryPrimitives.ReadUInt64LittleEndian(s), BinaryPrimitives.ReadUInt64LittleEndian(s[8..]), s.Slice(HeaderSize, n));
        return true;
    }
}

using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>
/// INODE_REF (objectid = inode, offset = parent directory), SPEC.md §5.2: one or more
/// (index u64, name_len u16, name) records, one per hard link of the inode in that directory.
/// It lets fsck and link-count checks find every name of an inode without scanning directories.
/// </summary>
public readonly ref struct InodeRef
{
    public const int HeaderSize = 10;
    public readonly ulong Index;
    public readonly ReadOnlySpan<byte> Name;

    public InodeRef(ulong index, ReadOnlySpan<byte> name) { Index = index; Name = name; }

    public int EncodedSize => HeaderSize + Name.Length;

    public void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Index);
        BinaryPrimitives.WriteUInt16LittleEndian(s[8..], (ushort)Name.Length);
        Name.CopyTo(s[HeaderSize..]);
    }

    public static bool TryRead(ReadOnlySpan<byte> s, out InodeRef r, out int size)
    {
        r = default; size = 0;
        if (s.Length < HeaderSize) return false;
        int n = BinaryPrimitives.ReadUInt16LittleEndian(s[8..]);
        size = HeaderSize + n;
        if (size > s.Length || n == 0) return false;
        r = new InodeRef(BinaryPrimitives.ReadUInt64LittleEndian(s), s.Slice(HeaderSize, n));
        return true;
    }
}

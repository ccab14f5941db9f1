using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>
/// ROOT_REF (root tree; key (parent tree, 156, child tree)) and ROOT_BACKREF (key (child tree,
/// 144, parent tree)), SPEC.md §4.4: where a subvolume is linked into its parent, as
/// (dirid u64, sequence u64, name_len u16, name): the directory inode in the parent tree, the
/// DIR_INDEX of the entry and its name. The same payload in both items, as in btrfs.
/// </summary>
public readonly ref struct RootRef
{
    public const int HeaderSize = 18;
    public readonly ulong DirId;
    public readonly ulong Sequence;
    public readonly ReadOnlySpan<byte> Name;

    public RootRef(ulong dirId, ulong sequence, ReadOnlySpan<byte> name) { DirId = dirId; Sequence = sequence; Name = name; }

    public int EncodedSize => HeaderSize + Name.Length;

    public void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, DirId);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Sequence);
        BinaryPrimitives.WriteUInt16LittleEndian(s[16..], (ushort)Name.Length);
        Name.CopyTo(s[HeaderSize..]);
    }

    public byte[] ToArray()
    {
        var b = new byte[EncodedSize];
        Write(b);
        return b;
    }

    public static bool TryRead(ReadOnlySpan<byte> s, out RootRef r)
    {
        r = default;
        if (s.Length < HeaderSize) return false;
        int n = BinaryPrimitives.ReadUInt16LittleEndian(s[16..]);
        if (n == 0 || HeaderSize + n != s.Length) return false;
        r = new RootRef(BinaryPrimitives.ReadUInt64LittleEndian(s), BinaryPrimitives.ReadUInt64LittleEndian(s[8..]), s.Slice(HeaderSize, n));
        return true;
    }
}

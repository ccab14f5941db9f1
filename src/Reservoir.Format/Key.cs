using System.Buffers.Binary;

namespace Reservoir.Format;

/// <summary>
/// The 17-byte key every tree is sorted by: (objectid u64, type u8, offset u64), compared in
/// that order, little-endian on disk. What objectid and offset mean depends on the type.
/// </summary>
public readonly record struct Key(ulong ObjectId, byte Type, ulong Offset) : IComparable<Key>
{
    public const int Size = 17;
    public static readonly Key Min = new(0, 0, 0);
    public static readonly Key Max = new(ulong.MaxValue, byte.MaxValue, ulong.MaxValue);

    public int CompareTo(Key o)
    {
        int c = ObjectId.CompareTo(o.ObjectId);
        if (c != 0) return c;
        c = Type.CompareTo(o.Type);
        return c != 0 ? c : Offset.CompareTo(o.Offset);
    }

    public static bool operator <(Key a, Key b) => a.CompareTo(b) < 0;
    public static bool operator >(Key a, Key b) => a.CompareTo(b) > 0;
    public static bool operator <=(Key a, Key b) => a.CompareTo(b) <= 0;
    public static bool operator >=(Key a, Key b) => a.CompareTo(b) >= 0;

    public static Key Read(ReadOnlySpan<byte> s) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(s),
        s[8],
        BinaryPrimitives.ReadUInt64LittleEndian(s[9..]));

    public void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, ObjectId);
        s[8] = Type;
        BinaryPrimitives.WriteUInt64LittleEndian(s[9..], Offset);
    }

    /// <summary>The smallest key after this one.</summary>
    public Key Next() => Offset != ulong.MaxValue ? this with { Offset = Offset + 1 }
        : Type != byte.MaxValue ? new Key(ObjectId, (byte)(Type + 1), 0)
        : new Key(ObjectId + 1, 0, 0);

    public override string ToString() => $"({ObjectId} {KeyTypes.Name(Type)} {Offset})";
}

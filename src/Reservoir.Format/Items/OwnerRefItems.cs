using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>EXTENT_OWNER_REF (−4, 186, extent address) in an fs tree, 16 bytes, SPEC.md §5.9:
/// count u64 (file extent items of this subvolume naming the extent, ≥ 1), num_bytes u64 (the
/// extent's length). Kept while quotas are on; a snapshot inherits them with its tree.</summary>
public struct ExtentOwnerRefItem
{
    public const int Size = 16;
    public ulong Count, NumBytes;

    public static bool TryRead(ReadOnlySpan<byte> s, out ExtentOwnerRefItem r)
    {
        r = default;
        if (s.Length != Size) return false;
        r.Count = BinaryPrimitives.ReadUInt64LittleEndian(s);
        r.NumBytes = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        return r.Count > 0 && r.NumBytes > 0;
    }

    public readonly void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Count);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], NumBytes);
    }
}

/// <summary>A one-u64 item: SHARED_ROOT_REF (extent address, 188, subvolume) holds the
/// transaction in which the subvolume started referencing the extent; SNAPSHOT_LINEAGE
/// (subvolume, 190, source) the transaction that created the snapshot. SPEC.md §5.9.</summary>
public static class U64Item
{
    public const int Size = 8;

    public static bool TryRead(ReadOnlySpan<byte> s, out ulong v)
    {
        v = 0;
        if (s.Length != Size) return false;
        v = BinaryPrimitives.ReadUInt64LittleEndian(s);
        return true;
    }

    public static void Write(Span<byte> s, ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(s, v);
}

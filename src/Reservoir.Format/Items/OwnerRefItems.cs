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

/// <summary>
/// REFERRER_ENTRY (extent address, 191, 0) in the extent tree, SPEC.md §5.9. A header of 32
/// bytes: owner u64 and generation u64 (the extent's writer and birth transaction, as its
/// EXTENT_ITEM says), cursor u64 (every subvolume with an id up to it that references the extent
/// is listed), count u32, side_count u32; then count subvolume ids u64 (referrers, in no order;
/// some may be above the cursor); then side_count group sides, each a header of 32 bytes —
/// group u64 (qgroup id), epoch u64 (the membership epoch it was made in), cursor u64, flags u32
/// (bit 0: the members' side; clear: the others'), count u32 — and count subvolume ids u64 (the
/// referrers on that side). Counts are at most <see cref="MaxIds"/>.
/// </summary>
public static class ReferrerEntryItem
{
    public const int HeaderSize = 32, SideHeaderSize = 32, MaxIds = 64;
    public const uint SideInside = 1;

    public static int SizeFor(int count) => HeaderSize + 8 * count;
    public static int SideSizeFor(int count) => SideHeaderSize + 8 * count;

    /// <summary>The header and whether the whole item is well formed (every count within
    /// bounds, every side's flags known, the length exactly what the counts say); the ids are
    /// read with <see cref="Id"/> and the sides with <see cref="Side"/>, starting at
    /// <see cref="SizeFor"/>(count).</summary>
    public static bool TryRead(ReadOnlySpan<byte> s, out ulong owner, out ulong generation, out ulong cursor, out int count, out int sides)
    {
        owner = generation = cursor = 0;
        count = sides = 0;
        if (s.Length < HeaderSize) return false;
        owner = BinaryPrimitives.ReadUInt64LittleEndian(s);
        generation = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        cursor = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(s[24..]);
        uint ns = BinaryPrimitives.ReadUInt32LittleEndian(s[28..]);
        if (n > MaxIds || ns > MaxIds) return false;
        int at = SizeFor((int)n);
        for (int i = 0; i < ns; i++)
        {
            if (!Side(s, at, out _, out _, out _, out uint flags, out int c, out int next) || (flags & ~SideInside) != 0) return false;
            at = next;
        }
        if (at != s.Length) return false;
        (count, sides) = ((int)n, (int)ns);
        return true;
    }

    public static ulong Id(ReadOnlySpan<byte> s, int i) => BinaryPrimitives.ReadUInt64LittleEndian(s[(HeaderSize + 8 * i)..]);

    /// <summary>The <paramref name="i"/>-th id of the side whose header is at <paramref name="at"/>.</summary>
    public static ulong SideId(ReadOnlySpan<byte> s, int at, int i) => BinaryPrimitives.ReadUInt64LittleEndian(s[(at + SideHeaderSize + 8 * i)..]);

    /// <summary>The side whose header is at <paramref name="at"/>: its ids are the u64s from
    /// <paramref name="at"/> + <see cref="SideHeaderSize"/>; <paramref name="next"/> is where the
    /// next side starts. False if it does not fit the item.</summary>
    public static bool Side(ReadOnlySpan<byte> s, int at, out ulong group, out ulong epoch, out ulong cursor, out uint flags, out int count, out int next)
    {
        group = epoch = cursor = 0;
        flags = 0;
        count = 0;
        next = at;
        if (at < 0 || at + SideHeaderSize > s.Length) return false;
        group = BinaryPrimitives.ReadUInt64LittleEndian(s[at..]);
        epoch = BinaryPrimitives.ReadUInt64LittleEndian(s[(at + 8)..]);
        cursor = BinaryPrimitives.ReadUInt64LittleEndian(s[(at + 16)..]);
        flags = BinaryPrimitives.ReadUInt32LittleEndian(s[(at + 24)..]);
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(s[(at + 28)..]);
        if (n > MaxIds || at + SideSizeFor((int)n) > s.Length) return false;
        count = (int)n;
        next = at + SideSizeFor(count);
        return true;
    }

    /// <summary>The referrer ids of an item <see cref="TryRead"/> accepted.</summary>
    public static ulong[] Ids(ReadOnlySpan<byte> s, int count)
    {
        var ids = new ulong[count];
        for (int i = 0; i < count; i++) ids[i] = Id(s, i);
        return ids;
    }

    /// <summary>One group side as read (<see cref="Sides"/>).</summary>
    public readonly record struct SideView(ulong Group, ulong Epoch, ulong Cursor, bool Inside, ulong[] Ids);

    /// <summary>The group sides of an item <see cref="TryRead"/> accepted (with its
    /// <paramref name="count"/> and <paramref name="sides"/>), in the order written.</summary>
    public static List<SideView> Sides(ReadOnlySpan<byte> s, int count, int sides)
    {
        var list = new List<SideView>(sides);
        for (int i = 0, at = SizeFor(count); i < sides; i++)
        {
            Side(s, at, out ulong group, out ulong epoch, out ulong cursor, out uint flags, out int n, out int next);
            var ids = new ulong[n];
            for (int j = 0; j < n; j++) ids[j] = SideId(s, at, j);
            list.Add(new SideView(group, epoch, cursor, (flags & SideInside) != 0, ids));
            at = next;
        }
        return list;
    }

    /// <summary>Writes the header and ids; returns where the sides start.</summary>
    public static int Write(Span<byte> s, ulong owner, ulong generation, ulong cursor, ReadOnlySpan<ulong> ids, int sides = 0)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, owner);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], cursor);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], (uint)ids.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(s[28..], (uint)sides);
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteUInt64LittleEndian(s[(HeaderSize + 8 * i)..], ids[i]);
        return SizeFor(ids.Length);
    }

    /// <summary>Writes one side at <paramref name="at"/>; returns where the next starts.</summary>
    public static int WriteSide(Span<byte> s, int at, ulong group, ulong epoch, ulong cursor, bool inside, ReadOnlySpan<ulong> ids)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s[at..], group);
        BinaryPrimitives.WriteUInt64LittleEndian(s[(at + 8)..], epoch);
        BinaryPrimitives.WriteUInt64LittleEndian(s[(at + 16)..], cursor);
        BinaryPrimitives.WriteUInt32LittleEndian(s[(at + 24)..], inside ? SideInside : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(s[(at + 28)..], (uint)ids.Length);
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteUInt64LittleEndian(s[(at + SideHeaderSize + 8 * i)..], ids[i]);
        return at + SideSizeFor(ids.Length);
    }
}

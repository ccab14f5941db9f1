using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>Quota group ids: level in the top 16 bits, subvolume (or group number) below.</summary>
public static class QgroupId
{
    public static ulong Of(ushort level, ulong id) => ((ulong)level << 48) | id;
    public static ushort Level(ulong q) => (ushort)(q >> 48);
    public static ulong Id(ulong q) => q & 0xFFFF_FFFF_FFFF;
    public static string Show(ulong q) => $"{Level(q)}/{Id(q)}";

    /// <summary>The distinct level-0 groups at or below <paramref name="q"/>, following
    /// <paramref name="members"/> (a group's direct members; relations form a DAG ordered by
    /// level, so each is reached once however many paths lead to it).</summary>
    public static HashSet<ulong> Level0Below(ulong q, Func<ulong, IEnumerable<ulong>?> members)
    {
        var leaves = new HashSet<ulong>();
        var seen = new HashSet<ulong>();
        var stack = new Stack<ulong>();
        stack.Push(q);
        while (stack.Count > 0)
        {
            ulong x = stack.Pop();
            if (!seen.Add(x)) continue;
            if (Level(x) == 0) { leaves.Add(x); continue; }
            if (members(x) is { } ms) foreach (var m in ms) stack.Push(m);
        }
        return leaves;
    }
}

/// <summary>QGROUP_STATUS (0, 240, 0) in the quota tree, 32 bytes: version u64,
/// generation u64 (the commit that last wrote it), flags u64 (bit 0 ON), subvolume_ids_up_to
/// u64 (version 5; reserved, 0, before), and from version 5 membership_epoch u64 (40 bytes).
/// SPEC.md §7. Version 2 says the fs trees carry
/// EXTENT_OWNER_REF items; version 3, also that level-0 usage is in SUBVOL_QGROUP_INFO items of
/// the root tree; version 4, also that the extent tree may hold ORIGIN_DROP items; version 5
/// (current), also REFERRER_ENTRY items, and that no subvolume id up to subvolume_ids_up_to is
/// handed out again while quotas are on.</summary>
public struct QgroupStatusItem
{
    /// <summary>40 bytes from version 5 (membership_epoch u64 added); 32 before.</summary>
    public const int Size = 40, SizeBefore5 = 32;
    public const ulong FlagOn = 1;
    /// <summary>2: every subvolume tree carries EXTENT_OWNER_REF items (SPEC.md §5.9). An image
    /// of version 1 gets them at its first read-write mount.</summary>
    public const ulong OwnerRefsVersion = 2;
    /// <summary>3: a level-0 group's usage is kept beside its subvolume's ROOT_ITEM
    /// (<see cref="KeyTypes.SubvolQgroupInfo"/>), not in the quota tree. An image of version 2
    /// has its items moved at its first read-write mount.</summary>
    public const ulong Level0BesideRootVersion = 3;
    /// <summary>4: the extent tree may hold ORIGIN_DROP items (<see cref="KeyTypes.OriginDrop"/>),
    /// which a version that does not know them would leave behind with a freed extent (then
    /// misread for the next extent at that address); an older version refuses the image. An
    /// image of version 3 says 4 from its first read-write mount on.</summary>
    public const ulong OriginDropVersion = 4;
    /// <summary>5: the extent tree may hold REFERRER_ENTRY items (<see cref="KeyTypes.ReferrerEntry"/>),
    /// which every change of the extent's referrers must keep right (a version that does not
    /// know them would leave them stale); an older version refuses the image. An image of
    /// version 4 says 5 from its first read-write mount on (it has none yet).</summary>
    public const ulong ReferrerEntryVersion = 5;
    public const ulong CurrentVersion = ReferrerEntryVersion;
    public ulong Version, Generation, Flags, SubvolumeIdsUpTo, MembershipEpoch;

    /// <summary>The item's length for its version.</summary>
    public readonly int Length => Version >= ReferrerEntryVersion ? Size : SizeBefore5;

    public static bool TryRead(ReadOnlySpan<byte> s, out QgroupStatusItem q)
    {
        q = default;
        if (s.Length != Size && s.Length != SizeBefore5) return false;
        q.Version = BinaryPrimitives.ReadUInt64LittleEndian(s);
        if (s.Length != q.Length) return false;
        q.Generation = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        q.Flags = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        q.SubvolumeIdsUpTo = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]);
        if (s.Length == Size) q.MembershipEpoch = BinaryPrimitives.ReadUInt64LittleEndian(s[32..]);
        return q.Version is >= 1 and <= CurrentVersion;
    }

    /// <summary>Writes <see cref="Length"/> bytes.</summary>
    public readonly void Write(Span<byte> s)
    {
        s[..Length].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s, Version);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], SubvolumeIdsUpTo);
        if (Length == Size) BinaryPrimitives.WriteUInt64LittleEndian(s[32..], MembershipEpoch);
    }
}

/// <summary>QGROUP_INFO (0, 242, qgroupid), 40 bytes: generation u64, referenced u64,
/// referenced_compressed u64, exclusive u64, exclusive_compressed u64 (compressed = plain in v1).</summary>
public struct QgroupInfoItem
{
    public const int Size = 40;
    public ulong Generation, Referenced, Exclusive;

    public static bool TryRead(ReadOnlySpan<byte> s, out QgroupInfoItem q)
    {
        q = default;
        if (s.Length != Size) return false;
        q.Generation = BinaryPrimitives.ReadUInt64LittleEndian(s);
        q.Referenced = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        q.Exclusive = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]);
        return true;
    }

    public readonly void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], Referenced);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Referenced);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], Exclusive);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], Exclusive);
    }
}

/// <summary>QGROUP_LIMIT (0, 244, qgroupid), 40 bytes: flags u64 (bit 0 max_referenced set,
/// bit 1 max_exclusive set), max_referenced u64, max_exclusive u64, two reserved u64.</summary>
public struct QgroupLimitItem
{
    public const int Size = 40;
    public const ulong FlagMaxRfer = 1, FlagMaxExcl = 2;
    public ulong Flags, MaxReferenced, MaxExclusive;

    public static bool TryRead(ReadOnlySpan<byte> s, out QgroupLimitItem q)
    {
        q = default;
        if (s.Length != Size) return false;
        q.Flags = BinaryPrimitives.ReadUInt64LittleEndian(s);
        q.MaxReferenced = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        q.MaxExclusive = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]);
        return true;
    }

    public readonly void Write(Span<byte> s)
    {
        s[..Size].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s, Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], MaxReferenced);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], MaxExclusive);
    }
}

using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;

namespace Reservoir.Format;

/// <summary>
/// The superblock (SPEC.md §2). 4096 bytes, written at every offset of
/// <see cref="FormatConstants.SuperblockOffsets"/> that fits, last in each commit.
/// </summary>
public sealed class Superblock
{
    // Offsets: SPEC.md §2 table. Bytes [0,32) are the checksum field (crc32c in the first 4,
    // zero after) and the checksum covers [32, 4096).
    public const int OffCsum = 0x000;
    public const int OffMagic = 0x020;
    public const int OffBytenr = 0x028;
    public const int OffVersion = 0x030;
    public const int OffBlockSize = 0x034;
    public const int OffNodeSize = 0x038;
    public const int OffCsumType = 0x03C;
    public const int OffCompat = 0x040;
    public const int OffCompatRo = 0x048;
    public const int OffIncompat = 0x050;
    public const int OffGeneration = 0x058;
    public const int OffRootTree = 0x060;
    public const int OffRootLevel = 0x068;
    public const int OffTotalBytes = 0x070;
    public const int OffBytesUsed = 0x078;
    public const int OffFsid = 0x080;
    public const int OffCreated = 0x090;
    public const int OffDefaultSubvol = 0x0A0;
    public const int OffFlags = 0x0A8;
    public const int OffLogStart = 0x0B0;
    public const int OffOriginDropsMissingSince = 0x0B8;
    public const int OffGroupSize = 0x0C0;
    public const int OffLabel = 0x100;
    public const int ChecksumStart = 0x20;

    public ulong Bytenr;
    public uint Version = FormatConstants.FormatVersion;
    public uint BlockSize;
    public uint NodeSize;
    public uint CsumType;
    public ulong Compat, CompatRo, Incompat;
    public ulong Generation;
    public ulong RootTreeBytenr;
    public byte RootTreeLevel;
    public ulong TotalBytes;
    public ulong BytesUsed;
    public Guid Fsid;
    public Timespec Created;
    public ulong DefaultSubvolume = TreeIds.FsTree;
    /// <summary>Bit 0: the filesystem was marked with an error (mount read-only until fsck).</summary>
    public ulong Flags;
    /// <summary>First block of the fsync log that follows this commit (SPEC.md §9), 0 when
    /// there is none (a clean unmount, or an image no commit of this version wrote).</summary>
    public ulong LogStart;
    /// <summary>The earliest transaction of an ORIGIN_DROP that a commit up to this one noted
    /// and did not write yet (SPEC.md §5.9), 0 for none: a mount that finds it non-zero after
    /// a crash notes them again from the trees. Advisory: zero is always safe.</summary>
    public ulong OriginDropsMissingSince;
    /// <summary>The block group size (SPEC.md §1): authoritative with incompat GROUP_SIZE (a
    /// resized filesystem, whose size no longer gives it); otherwise 0 (images before it was
    /// written) or equal to the size derived from total_bytes.</summary>
    public ulong GroupSize;
    public string Label = "";

    public const ulong FlagError = 1;

    /// <summary>The block group size the slots are cut with (SPEC.md §1).</summary>
    public ulong EffectiveGroupSize =>
        (Incompat & Features.IncompatGroupSize) != 0 ? GroupSize : Geometry.DerivedGroupSize(TotalBytes, (int)NodeSize);

    public Superblock Clone() => (Superblock)MemberwiseClone();

    public void Write(Span<byte> s)
    {
        s[..FormatConstants.SuperblockSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffMagic..], FormatConstants.Magic);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffBytenr..], Bytenr);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffVersion..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffBlockSize..], BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffNodeSize..], NodeSize);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffCsumType..], CsumType);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffCompat..], Compat);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffCompatRo..], CompatRo);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffIncompat..], Incompat);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffGeneration..], Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffRootTree..], RootTreeBytenr);
        s[OffRootLevel] = RootTreeLevel;
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffTotalBytes..], TotalBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffBytesUsed..], BytesUsed);
        Fsid.TryWriteBytes(s[OffFsid..]);
        Created.Write(s[OffCreated..]);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffDefaultSubvol..], DefaultSubvolume);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffFlags..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffLogStart..], LogStart);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffOriginDropsMissingSince..], OriginDropsMissingSince);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffGroupSize..], GroupSize);
        int n = Encoding.UTF8.GetBytes(Label, s.Slice(OffLabel, FormatConstants.LabelSize - 1));
        s[OffLabel + n] = 0;
        uint crc = Crc32C.Compute(s[ChecksumStart..FormatConstants.SuperblockSize]);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffCsum..], crc);
    }

    /// <summary>Decodes and validates one copy. Returns null with a reason when the bytes are not
    /// a valid superblock; never throws on bad input.</summary>
    public static Superblock? TryRead(ReadOnlySpan<byte> s, ulong expectedBytenr, out string error)
    {
        error = "";
        if (s.Length < FormatConstants.SuperblockSize) { error = "short read"; return null; }
        if (BinaryPrimitives.ReadUInt64LittleEndian(s[OffMagic..]) != FormatConstants.Magic)
        {
            error = "bad magic (not a Reservoir image)";
            return null;
        }
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(s[OffCsum..]);
        uint crc = Crc32C.Compute(s[ChecksumStart..FormatConstants.SuperblockSize]);
        if (stored != crc) { error = $"checksum mismatch (stored {stored:x8}, computed {crc:x8})"; return null; }
        if (s[4..ChecksumStart].ContainsAnyExcept((byte)0)) { error = "non-zero bytes in the unused part of the checksum field"; return null; }
        var sb = new Superblock
        {
            Bytenr = BinaryPrimitives.ReadUInt64LittleEndian(s[OffBytenr..]),
            Version = BinaryPrimitives.ReadUInt32LittleEndian(s[OffVersion..]),
            BlockSize = BinaryPrimitives.ReadUInt32LittleEndian(s[OffBlockSize..]),
            NodeSize = BinaryPrimitives.ReadUInt32LittleEndian(s[OffNodeSize..]),
            CsumType = BinaryPrimitives.ReadUInt32LittleEndian(s[OffCsumType..]),
            Compat = BinaryPrimitives.ReadUInt64LittleEndian(s[OffCompat..]),
            CompatRo = BinaryPrimitives.ReadUInt64LittleEndian(s[OffCompatRo..]),
            Incompat = BinaryPrimitives.ReadUInt64LittleEndian(s[OffIncompat..]),
            Generation = BinaryPrimitives.ReadUInt64LittleEndian(s[OffGeneration..]),
            RootTreeBytenr = BinaryPrimitives.ReadUInt64LittleEndian(s[OffRootTree..]),
            RootTreeLevel = s[OffRootLevel],
            TotalBytes = BinaryPrimitives.ReadUInt64LittleEndian(s[OffTotalBytes..]),
            BytesUsed = BinaryPrimitives.ReadUInt64LittleEndian(s[OffBytesUsed..]),
            Fsid = new Guid(s.Slice(OffFsid, 16)),
            Created = Timespec.Read(s[OffCreated..]),
            DefaultSubvolume = BinaryPrimitives.ReadUInt64LittleEndian(s[OffDefaultSubvol..]),
            Flags = BinaryPrimitives.ReadUInt64LittleEndian(s[OffFlags..]),
            LogStart = BinaryPrimitives.ReadUInt64LittleEndian(s[OffLogStart..]),
            OriginDropsMissingSince = BinaryPrimitives.ReadUInt64LittleEndian(s[OffOriginDropsMissingSince..]),
            GroupSize = BinaryPrimitives.ReadUInt64LittleEndian(s[OffGroupSize..]),
        };
        var label = s.Slice(OffLabel, FormatConstants.LabelSize);
        int z = label.IndexOf((byte)0);
        sb.Label = Encoding.UTF8.GetString(z < 0 ? label : label[..z]);
        if (sb.Bytenr != expectedBytenr) { error = $"copy claims to live at {sb.Bytenr}, found at {expectedBytenr}"; return null; }
        if (sb.Version != FormatConstants.FormatVersion) { error = $"unsupported format version {sb.Version}"; return null; }
        if (!IsPow2InRange(sb.BlockSize, FormatConstants.MinBlockSize, FormatConstants.MaxBlockSize)) { error = $"invalid block size {sb.BlockSize}"; return null; }
        if (!IsPow2InRange(sb.NodeSize, FormatConstants.MinNodeSize, FormatConstants.MaxNodeSize) || sb.NodeSize < sb.BlockSize) { error = $"invalid node size {sb.NodeSize}"; return null; }
        if (sb.CsumType != 0) { error = $"unknown checksum type {sb.CsumType}"; return null; }
        if (sb.RootTreeLevel >= FormatConstants.MaxLevel) { error = $"root tree level {sb.RootTreeLevel} too deep"; return null; }
        if (sb.RootTreeBytenr % sb.NodeSize != 0 || sb.RootTreeBytenr + sb.NodeSize > sb.TotalBytes) { error = $"root tree address {sb.RootTreeBytenr} outside the device"; return null; }
        if (sb.LogStart != 0 && (sb.LogStart % sb.NodeSize != 0 || sb.LogStart < FormatConstants.ReservedPrefix || sb.LogStart + sb.NodeSize > sb.TotalBytes))
        { error = $"fsync log address {sb.LogStart} outside the device"; return null; }
        if (sb.TotalBytes % sb.NodeSize != 0 || sb.TotalBytes < FormatConstants.MinDeviceSize) { error = $"invalid filesystem size {sb.TotalBytes}"; return null; }
        if ((sb.Incompat & Features.IncompatGroupSize) != 0
            ? !Geometry.ValidGroupSize(sb.GroupSize, (int)sb.NodeSize)
            : sb.GroupSize != 0 && sb.GroupSize != Geometry.DerivedGroupSize(sb.TotalBytes, (int)sb.NodeSize))
        { error = $"block group size {sb.GroupSize} invalid for a {sb.TotalBytes}-byte filesystem"; return null; }
        return sb;
    }

    private static bool IsPow2InRange(uint v, int lo, int hi) => v >= lo && v <= hi && (v & (v - 1)) == 0;
}

using System.Buffers.Binary;
using Reservoir.Common;

namespace Reservoir.Format;

/// <summary>
/// Tree node layout (SPEC.md §3). A node is one nodesize block:
/// header (96 bytes), then for a leaf an array of item headers growing up and item data
/// growing down from the end of the node; for an internal node an array of key pointers.
/// </summary>
public static class NodeLayout
{
    public const int OffCsum = 0x00;
    public const int OffFsid = 0x20;
    public const int OffBytenr = 0x30;
    public const int OffFlags = 0x38;
    public const int OffGeneration = 0x40;
    public const int OffOwner = 0x48;
    public const int OffNrItems = 0x50;
    public const int OffLevel = 0x54;
    public const int HeaderSize = 0x60;
    public const int ChecksumStart = 0x20;

    /// <summary>Leaf item header: key (17), data offset u32 (from the end of the header),
    /// data size u32.</summary>
    public const int ItemSize = Key.Size + 8;
    /// <summary>Internal node key pointer: key (17), child bytenr u64, child generation u64.</summary>
    public const int KeyPtrSize = Key.Size + 16;

    public static uint ComputeChecksum(ReadOnlySpan<byte> node) => Crc32C.Compute(node[ChecksumStart..]);
    public static uint StoredChecksum(ReadOnlySpan<byte> node) => BinaryPrimitives.ReadUInt32LittleEndian(node);
    public static void WriteChecksum(Span<byte> node) => BinaryPrimitives.WriteUInt32LittleEndian(node, ComputeChecksum(node));

    public static ulong Bytenr(ReadOnlySpan<byte> n) => BinaryPrimitives.ReadUInt64LittleEndian(n[OffBytenr..]);
    public static ulong Generation(ReadOnlySpan<byte> n) => BinaryPrimitives.ReadUInt64LittleEndian(n[OffGeneration..]);
    public static ulong Owner(ReadOnlySpan<byte> n) => BinaryPrimitives.ReadUInt64LittleEndian(n[OffOwner..]);
    public static int NrItems(ReadOnlySpan<byte> n) => (int)BinaryPrimitives.ReadUInt32LittleEndian(n[OffNrItems..]);
    public static byte Level(ReadOnlySpan<byte> n) => n[OffLevel];
    public static Guid Fsid(ReadOnlySpan<byte> n) => new(n.Slice(OffFsid, 16));

    public static int MaxKeyPtrs(int nodeSize) => (nodeSize - HeaderSize) / KeyPtrSize;
    public static int LeafDataSize(int nodeSize) => nodeSize - HeaderSize;
    /// <summary>Largest item payload a leaf can hold alone.</summary>
    public static int MaxItemData(int nodeSize) => nodeSize - HeaderSize - ItemSize;
}

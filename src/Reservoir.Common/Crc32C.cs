using System.Buffers.Binary;
using System.Numerics;

namespace Reservoir.Common;

/// <summary>
/// CRC32C (Castagnoli), as btrfs and ext4 metadata_csum use. BitOperations.Crc32C uses the
/// SSE4.2/ARMv8 instruction where present and a table otherwise.
/// </summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data, uint seed = 0)
    {
        uint crc = ~seed;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data)
            crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}

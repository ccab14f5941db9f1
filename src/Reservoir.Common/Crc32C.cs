using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Reservoir.Common;

/// <summary>
/// CRC32C (Castagnoli), as btrfs and ext4 metadata_csum use. BitOperations.Crc32C uses the
/// SSE4.2/ARMv8 instruction where present and a table otherwise.
///
/// Speed: the crc32 instruction has a latency of three cycles and a throughput of one, so one
/// dependency chain uses a third of it. Buffers of at least 3 × <see cref="Lane"/> bytes are cut
/// into three lanes checksummed side by side, then joined: the register of A‖B equals the
/// register of A advanced over |B| zero bytes, XOR the register of B started from zero (CRCs
/// are linear over GF(2)). Advancing over a lane of zeros is a fixed linear map of the
/// 32-bit register, applied as four 256-entry tables (Mark Adler's crc32c.c does the same).
/// Data blocks are checksummed at every writeback, so this runs on every byte written.
/// </summary>
public static class Crc32C
{
    /// <summary>Lane length: 3 lanes fit a 4 KiB block with 16 bytes left over.</summary>
    private const int Lane = 1360;
    private static readonly uint[] Shift = BuildShiftTable(Lane);

    public static uint Compute(ReadOnlySpan<byte> data, uint seed = 0)
    {
        uint crc = ~seed;
        ref byte p = ref MemoryMarshal.GetReference(data);
        int len = data.Length, at = 0;
        while (len - at >= 3 * Lane)
        {
            uint c1 = 0, c2 = 0;
            int end = at + Lane;
            for (; at < end; at += 8)
            {
                crc = BitOperations.Crc32C(crc, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, at)));
                c1 = BitOperations.Crc32C(c1, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, at + Lane)));
                c2 = BitOperations.Crc32C(c2, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, at + 2 * Lane)));
            }
            crc = Advance(crc) ^ c1;
            crc = Advance(crc) ^ c2;
            at += 2 * Lane;
        }
        for (; len - at >= 8; at += 8)
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(at, 8)));
        for (; at < len; at++)
            crc = BitOperations.Crc32C(crc, data[at]);
        return ~crc;
    }

    /// <summary>The register after <see cref="Lane"/> more zero bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Advance(uint crc)
    {
        var t = Shift;
        return t[crc & 0xFF] ^ t[256 + ((crc >> 8) & 0xFF)] ^ t[512 + ((crc >> 16) & 0xFF)] ^ t[768 + (crc >> 24)];
    }

    /// <summary>Four tables, one per register byte: the image, after <paramref name="zeros"/> zero
    /// bytes, of every value of that byte (by linearity, from the images of single bits).</summary>
    private static uint[] BuildShiftTable(int zeros)
    {
        var bit = new uint[32];
        for (int b = 0; b < 32; b++)
        {
            uint r = 1u << b;
            for (int i = 0; i < zeros; i++) r = BitOperations.Crc32C(r, (byte)0);
            bit[b] = r;
        }
        var t = new uint[1024];
        for (int k = 0; k < 4; k++)
            for (int v = 0; v < 256; v++)
            {
                uint img = 0;
                for (int j = 0; j < 8; j++)
                    if ((v & (1 << j)) != 0) img ^= bit[k * 8 + j];
                t[k * 256 + v] = img;
            }
        return t;
    }
}

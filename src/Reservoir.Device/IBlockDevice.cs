namespace Reservoir.Device;

/// <summary>
/// A byte-addressed device. Writes are not durable until <see cref="Flush"/> returns; until then
/// the device may persist any subset of them, in any order (the crash model of SPEC.md §1).
/// Implementations are thread-safe for non-overlapping ranges.
/// </summary>
public interface IBlockDevice : IDisposable
{
    ulong Size { get; }
    bool ReadOnly { get; }
    /// <summary>Reads exactly buffer.Length bytes; throws DeviceIOException on failure.</summary>
    void Read(ulong offset, Span<byte> buffer);
    void Write(ulong offset, ReadOnlySpan<byte> data);
    /// <summary>Makes every completed write durable (fsync / FLUSH+FUA).</summary>
    void Flush();
}

using Reservoir.Common;

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

    /// <summary>Writes the buffers back to back from <paramref name="offset"/> as one write
    /// (pwritev): writeback hands page frames over without copying them into one buffer. The
    /// default copies them into one buffer and calls <see cref="Write"/>, so devices that model
    /// each write (the crash simulator) see one write, as with a gathered bio. With
    /// <paramref name="startWriteOut"/> a device that buffers writes (an image file in the
    /// host's page cache) starts writing them out at once, as a kernel filesystem's writeback
    /// submits its bios; without it they wait for the next <see cref="Flush"/>, which is what
    /// an fsync about to flush wants (one IO submission less).</summary>
    void WriteGather(ulong offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers, bool startWriteOut = true) => GatherByCopy(this, offset, buffers);

    /// <summary>Makes every completed write durable (fsync / FLUSH+FUA).</summary>
    void Flush();

    /// <summary>Tells the device the range holds nothing anyone needs (FITRIM, BLKDISCARD): its
    /// bytes become unspecified. An image file punches a hole there, giving the host its space
    /// back (and reads zeros). Returns the bytes discarded: 0 where the device cannot (the
    /// default; a device that models crashes loses nothing by keeping the bytes).</summary>
    ulong Discard(ulong offset, ulong length) => 0;

    /// <summary>Whether the host has given every byte of the range its room: always, but for an
    /// image file with a hole there (a sparse image, whose host allocates at the first write
    /// and may then refuse it). The space manager promises writes only space that has its
    /// room (SpaceManager.HostRoom.cs).</summary>
    bool HasRoom(ulong offset, ulong length) => true;

    /// <summary>Has the host give the range its room now (an image file: fallocate): OK, or
    /// ENOSPC when the host has not that much.</summary>
    Errno MakeRoom(ulong offset, ulong length) => Errno.OK;

    /// <summary>Whether <see cref="Resize"/> can change the size: an image file opened for
    /// writing (a block device's size is the kernel's).</summary>
    bool CanResize => false;

    /// <summary>Makes the device <paramref name="newSize"/> bytes, durably (the resize that
    /// follows commits a superblock that relies on it): an image file is extended (sparse) or
    /// truncated. Bytes past the old end read zeros.</summary>
    void Resize(ulong newSize) => throw new FsException(Errno.EOPNOTSUPP, "the device's size cannot be changed");

    /// <summary>Looks at the device's size again (an image file someone extended with
    /// `truncate -s` while it was open) and returns it.</summary>
    ulong ProbeSize() => Size;

    /// <summary>A gathered write as one <see cref="Write"/> of the buffers copied together.</summary>
    protected static void GatherByCopy(IBlockDevice dev, ulong offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers)
    {
        int total = 0;
        foreach (var b in buffers) total += b.Length;
        var one = System.Buffers.ArrayPool<byte>.Shared.Rent(total);
        try
        {
            int at = 0;
            foreach (var b in buffers) { b.Span.CopyTo(one.AsSpan(at)); at += b.Length; }
            dev.Write(offset, one.AsSpan(0, total));
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(one); }
    }
}

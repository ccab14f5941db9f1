using Reservoir.Common;

namespace Reservoir.Device;

/// <summary>
/// A sparse in-memory device for tests: 64 KiB chunks allocated on first write, zeros elsewhere.
/// Flush does nothing; everything written is "durable" as long as the object lives.
/// </summary>
public sealed class MemoryBlockDevice : IBlockDevice
{
    private const int ChunkShift = 16;
    private const int ChunkSize = 1 << ChunkShift;
    private readonly Dictionary<ulong, byte[]> _chunks = new();
    private readonly object _lock = new(); // guards _chunks, and changes of _size; never held across a scheduling point
    private ulong _size;
    public ulong Size => Volatile.Read(ref _size); // every access checks it: read without the lock
    public bool ReadOnly { get; set; }
    public bool CanResize => !ReadOnly;

    public MemoryBlockDevice(ulong size) => _size = size;

    /// <summary>As ftruncate of a sparse file: past the old end reads zeros, and what a shrink
    /// cuts is gone (a later growth reads zeros there too).</summary>
    public void Resize(ulong newSize)
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "device is read-only");
        lock (_lock)
        {
            if (newSize < _size)
            {
                foreach (var idx in _chunks.Keys.Where(i => (i << ChunkShift) >= newSize).ToList()) _chunks.Remove(idx);
                ulong within = newSize & (ChunkSize - 1);
                if (within != 0 && _chunks.TryGetValue(newSize >> ChunkShift, out var c)) c.AsSpan((int)within).Clear();
            }
            Volatile.Write(ref _size, newSize);
        }
    }

    public void Read(ulong offset, Span<byte> buffer)
    {
        Check(offset, buffer.Length);
        lock (_lock)
        {
            while (buffer.Length > 0)
            {
                ulong idx = offset >> ChunkShift;
                int within = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(buffer.Length, ChunkSize - within);
                if (_chunks.TryGetValue(idx, out var c)) c.AsSpan(within, n).CopyTo(buffer);
                else buffer[..n].Clear();
                buffer = buffer[n..];
                offset += (ulong)n;
            }
        }
    }

    /// <summary>Zeroes the range, dropping whole chunks (as a hole in a sparse image).</summary>
    public ulong Discard(ulong offset, ulong length)
    {
        Check(offset, 0);
        ulong end = Math.Min(Size, offset + length);
        lock (_lock)
            for (ulong at = offset; at < end;)
            {
                ulong idx = at >> ChunkShift;
                int within = (int)(at & (ChunkSize - 1));
                int n = (int)Math.Min((ulong)(ChunkSize - within), end - at);
                if (within == 0 && n == ChunkSize) _chunks.Remove(idx);
                else if (_chunks.TryGetValue(idx, out var c)) c.AsSpan(within, n).Clear();
                at += (ulong)n;
            }
        return end - offset;
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (ReadOnly) throw new FsException(Errno.EROFS, "device is read-only");
        Check(offset, data.Length);
        lock (_lock)
        {
            while (data.Length > 0)
            {
                ulong idx = offset >> ChunkShift;
                int within = (int)(offset & (ChunkSize - 1));
                int n = Math.Min(data.Length, ChunkSize - within);
                if (!_chunks.TryGetValue(idx, out var c)) _chunks[idx] = c = new byte[ChunkSize];
                data[..n].CopyTo(c.AsSpan(within));
                data = data[n..];
                offset += (ulong)n;
            }
        }
    }

    public void Flush() { }

    /// <summary>A deep copy, for tests that mutate an image and keep the original.</summary>
    public MemoryBlockDevice Clone()
    {
        var d = new MemoryBlockDevice(Size);
        lock (_lock)
            foreach (var (k, v) in _chunks) d._chunks[k] = (byte[])v.Clone();
        return d;
    }

    private void Check(ulong offset, int len)
    {
        if (offset + (ulong)len > Size || offset + (ulong)len < offset)
            throw new DeviceIOException($"access of {len} bytes beyond the end of the {Size}-byte device", offset);
    }

    public void Dispose() { }
}

using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir;

/// <summary>
/// A writable shared mapping of a file's existing bytes (as mmap(MAP_SHARED, PROT_WRITE) gives a
/// process). Each store goes through the engine's page-fault path (page_mkwrite: the page is
/// locked, reserved and dirtied, without the inode lock) and reaches the file like a store into
/// a mapped page; <see cref="Flush"/> is msync. Stores cannot grow the file: beyond its end they
/// fail like a SIGBUS would.
/// </summary>
public sealed class MappedRegion : IDisposable
{
    private readonly Filesystem _fs;
    private readonly ulong _ino;
    private bool _closed;
    public long Offset { get; }
    public long Length { get; }

    internal MappedRegion(Filesystem fs, ulong ino, long offset, long length)
    {
        _fs = fs; _ino = ino; Offset = offset; Length = length;
    }

    /// <summary>Stores <paramref name="data"/> at <paramref name="at"/> (relative to the region).</summary>
    public void Write(long at, ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (at < 0 || at + data.Length > Length) throw new ArgumentOutOfRangeException(nameof(at), "store outside the mapped region");
        var e = _fs.MappedWrite(_ino, (ulong)(Offset + at), data);
        if (e != Errno.OK) throw ReservoirFileSystem.ToException(e, $"mapped region of inode {_ino}");
    }

    /// <summary>Reads back through the page cache (what a load from the mapping sees).</summary>
    public int Read(long at, Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        var e = _fs.Read(_ino, (ulong)(Offset + at), buffer[..(int)Math.Min(buffer.Length, Length - at)], out int n);
        if (e != Errno.OK) throw ReservoirFileSystem.ToException(e, $"mapped region of inode {_ino}");
        return n;
    }

    /// <summary>msync(MS_SYNC): the stores are durable when this returns.</summary>
    public void Flush()
    {
        var e = _fs.Fsync(_ino);
        if (e != Errno.OK) throw ReservoirFileSystem.ToException(e, $"mapped region of inode {_ino}");
    }

    public void Dispose()
    {
        if (_closed) return;
        _closed = true;
        _fs.Release(_ino);
    }
}

using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir;

/// <summary>A seekable stream over one open file of a Reservoir filesystem. Writes go to the
/// engine at once; <see cref="Flush"/> makes them durable (fsync).</summary>
public sealed class ReservoirFileStream : Stream
{
    private readonly Filesystem _fs;
    private readonly ulong _ino;
    private readonly bool _read, _write, _append;
    private long _pos;
    private bool _closed;

    internal ReservoirFileStream(Filesystem fs, ulong ino, bool read, bool write, bool append)
    {
        _fs = fs; _ino = ino; _read = read; _write = write; _append = append;
    }

    public ulong Inode => _ino;
    public override bool CanRead => !_closed && _read;
    public override bool CanWrite => !_closed && _write;
    public override bool CanSeek => !_closed;

    public override long Length
    {
        get
        {
            Check(_fs.GetAttr(_ino, out var a));
            return (long)a.Size;
        }
    }

    public override long Position
    {
        get => _pos;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _pos = value;
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (!_read) throw new NotSupportedException("stream was not opened for reading");
        Check(_fs.Read(_ino, (ulong)_pos, buffer, out int n));
        _pos += n;
        return n;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        if (!_write) throw new NotSupportedException("stream was not opened for writing");
        if (_append) _pos = Length;
        Check(_fs.Write(_ino, (ulong)_pos, buffer, out int n));
        _pos += n;
        if (n < buffer.Length) throw new FsException(Errno.ENOSPC, $"short write: {n} of {buffer.Length} bytes");
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        long p = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _pos + offset,
            _ => Length + offset,
        };
        if (p < 0) throw new IOException("seek before the start of the file");
        return _pos = p;
    }

    public override void SetLength(long value)
    {
        if (!_write) throw new NotSupportedException("stream was not opened for writing");
        Check(_fs.Truncate(_ino, (ulong)value));
    }

    /// <summary>Makes everything written durable (a filesystem commit).</summary>
    public override void Flush()
    {
        if (_write && !_closed) Check(_fs.Fsync(_ino));
    }

    private void Check(Errno e)
    {
        if (e != Errno.OK) throw ReservoirFileSystem.ToException(e, $"inode {_ino}");
    }

    protected override void Dispose(bool disposing)
    {
        if (!_closed)
        {
            _closed = true;
            _fs.Release(_ino);
        }
        base.Dispose(disposing);
    }
}

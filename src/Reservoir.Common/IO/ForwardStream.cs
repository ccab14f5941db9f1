namespace Reservoir.Common.IO;

/// <summary>
/// A stream read or written once, front to back (a pipe, a stream's prefix, a stream cut at a
/// command): no length, no position, no seeking. A subclass overrides the one direction it
/// has; the other throws.
/// </summary>
public abstract class ForwardStream : Stream
{
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

using System.Diagnostics.CodeAnalysis;

namespace Reservoir.Common;

/// <summary>
/// An engine failure that carries its errno and where it happened. POSIX outcomes that callers
/// expect (ENOENT, EEXIST, ENOSPC…) are returned as <see cref="Errno"/> values instead; this type
/// is for corruption, device failure and outcomes deep inside a layer that cannot return a value.
/// </summary>
public class FsException : IOException
{
    public Errno Errno { get; }
    /// <summary>Inode number the failure concerns, or 0.</summary>
    public ulong Inode { get; init; }
    /// <summary>Byte address on the device the failure concerns, or ulong.MaxValue.</summary>
    public ulong Block { get; init; } = ulong.MaxValue;
    /// <summary>The message without the errno that <see cref="Exception.Message"/> adds: what
    /// crosses a process boundary with the errno beside it (a daemon's send or receive).</summary>
    public string Reason { get; }

    public FsException(Errno errno, string message, Exception? inner = null)
        : base($"{message} ({errno}: {errno.Describe()})", inner)
    {
        Errno = errno;
        Reason = message;
        HResult = (int)errno;
    }

    [DoesNotReturn]
    public static void Throw(Errno errno, string message) => throw new FsException(errno, message);
}

/// <summary>The image contradicts its own format: bad checksum, key order, level, owner…</summary>
public sealed class CorruptionException : FsException
{
    public CorruptionException(string message, ulong block = ulong.MaxValue, ulong inode = 0)
        : base(Errno.EUCLEAN, block != ulong.MaxValue ? $"{message} at byte {block}" : message)
    {
        Block = block;
        Inode = inode;
    }
}

/// <summary>The device failed a read, write or flush.</summary>
public sealed class DeviceIOException : FsException
{
    public DeviceIOException(string message, ulong block = ulong.MaxValue, Exception? inner = null)
        : base(Errno.EIO, message, inner)
    {
        Block = block;
    }
}

public static class ThrowHelper
{
    [DoesNotReturn]
    public static void Corrupt(string message, ulong block = ulong.MaxValue, ulong inode = 0)
        => throw new CorruptionException(message, block, inode);

    /// <summary>A broken internal invariant: a bug, never bad input.</summary>
    [DoesNotReturn]
    public static void Invariant(string message) => throw new InvalidOperationException("invariant violated: " + message);
}

using Reservoir.Common;

namespace Reservoir.Engine;

/// <summary>
/// fstrim (FITRIM): free space handed back to the device. For an image file that punches holes
/// in it, so an image shrinks on the host after its files are deleted, as an ext4 image on a
/// loop device does after fstrim. Offline, online (the FITRIM ioctl through the mount) and in the
/// embedded API.
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>
    /// Discards the free ranges of at least <paramref name="minLen"/> bytes within
    /// [<paramref name="from"/>, <paramref name="from"/> + <paramref name="length"/>) of the
    /// device (<see cref="Alloc.SpaceManager.Trim"/>). Commits first, so that what was just
    /// deleted (pinned until its commit is durable) is free to discard. <paramref name="trimmed"/>:
    /// the bytes discarded (0 where the device cannot discard). EROFS on a read-only mount.
    /// </summary>
    public Errno Trim(ulong from, ulong length, ulong minLen, out ulong trimmed) =>
        Trim(from, length, minLen, Alloc.SpaceManager.TrimPiece, out trimmed);

    /// <summary><see cref="Trim(ulong, ulong, ulong, out ulong)"/> discarding at most
    /// <paramref name="piece"/> bytes per hold of the space lock (tests: more interleavings).</summary>
    internal Errno Trim(ulong from, ulong length, ulong minLen, ulong piece, out ulong trimmed)
    {
        trimmed = 0;
        if (Fs.ReadOnly) return Errno.EROFS;
        var e = Sync();
        if (e != Errno.OK) return e;
        ulong to = length > ulong.MaxValue - from ? ulong.MaxValue : from + length;
        ulong done = 0;
        e = Guard(0, () =>
        {
            done = Fs.Space.Trim((at, n) => Fs.Device.Discard(at, n), from, to, minLen, piece);
            return Errno.OK;
        });
        trimmed = done;
        return e;
    }
}

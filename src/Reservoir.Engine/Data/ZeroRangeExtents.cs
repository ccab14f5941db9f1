using Reservoir.Common;
using Reservoir.Engine.Alloc;

namespace Reservoir.Engine.Data;

/// <summary>
/// The data extents of a ZERO_RANGE, allocated before it punches anything. Zeroing punches the
/// range, then preallocates it; if the preallocation could still run out of data space, a zero
/// range on a full filesystem would answer ENOSPC with the file's data already punched away.
/// The reservation taken first does not quite promise the allocation: an unreserved metadata
/// allocation (a deletion's, from the global reserve) may take the unallocated slot the
/// reservation counted on (the stress runner on a full image caught a zero range that answered
/// ENOSPC with the range zeroed). Allocated first, the extents either all exist before the
/// file changes or the zero range fails with nothing changed. Used by one call, not shared.
/// </summary>
internal sealed class ZeroRangeExtents
{
    private readonly List<(ulong Disk, ulong Len)> _pieces = new();
    private int _next; // the first piece not wholly taken

    /// <summary>Allocates <paramref name="bytes"/> of data from the caller's reservation.
    /// <paramref name="consumed"/> is how much of the reservation it used, in either outcome;
    /// on ENOSPC the pieces it got are freed again and it returns null.</summary>
    public static ZeroRangeExtents? Allocate(SpaceManager space, ulong bytes, out ulong consumed)
    {
        var x = new ZeroRangeExtents();
        consumed = 0;
        try
        {
            while (consumed < bytes)
            {
                var (disk, len) = space.AllocData(Math.Min(bytes - consumed, space.MaxDataExtent), fromReservation: true);
                x._pieces.Add((disk, len));
                consumed += len;
            }
            return x;
        }
        catch (FsException ex) when (ex.Errno == Errno.ENOSPC)
        {
            x.FreeUnused(space);
            return null;
        }
    }

    /// <summary>Up to <paramref name="want"/> bytes (block-aligned) of the next piece, which
    /// the caller references from a file extent item.</summary>
    public (ulong Disk, ulong Len) Take(ulong want)
    {
        if (_next >= _pieces.Count) ThrowHelper.Invariant("a zero range used more data than it allocated");
        var p = _pieces[_next];
        if (p.Len <= want) { _next++; return p; }
        _pieces[_next] = (p.Disk + want, p.Len - want);
        return (p.Disk, want);
    }

    /// <summary>Frees the pieces no file extent took (the range's delalloc blocks need none);
    /// returns their bytes, whose qgroup reservation the caller frees.</summary>
    public ulong FreeUnused(SpaceManager space)
    {
        ulong n = 0;
        for (; _next < _pieces.Count; _next++)
        {
            var p = _pieces[_next];
            space.FreeReserved(p.Disk, p.Len);
            n += p.Len;
        }
        return n;
    }
}

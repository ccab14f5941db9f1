namespace Reservoir.Api.Send;

/// <summary>
/// Questions to a file's extent map (file order, holes left out): which extent holds a byte, and
/// whether two files hold a range at the same place of the same extent, which then holds the
/// same bytes in both (extents a snapshot or a clone shares are never written in place).
/// </summary>
internal static class ExtentMaps
{
    /// <summary>The last extent starting at or before <paramref name="pos"/>, or -1.</summary>
    private static int IndexAt(IReadOnlyList<Engine.ExtentMapping> map, long pos)
    {
        int lo = 0, hi = map.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if ((long)map[mid].FileOffset <= pos) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    /// <summary>The extent piece of a file from <paramref name="off"/>: which extent, where in it,
    /// and where the piece ends (at <paramref name="limit"/> at most); null in a hole or an inline
    /// or preallocated extent (nothing to share).</summary>
    public static (ulong Bytenr, ulong ExtentOffset, long FileStart, long End)? Piece(IReadOnlyList<Engine.ExtentMapping> map, long off, long limit)
    {
        int i = IndexAt(map, off);
        if (i < 0) return null;
        var m = map[i];
        long start = (long)m.FileOffset, stop = start + (long)m.Length;
        if (stop <= off || m.Type != "regular" || m.DiskBytenr == 0) return null;
        return (m.DiskBytenr, m.ExtentOffset + (ulong)(off - start), off, Math.Min(stop, limit));
    }

    /// <summary>The first range at or after <paramref name="pos"/> (below <paramref name="size"/>)
    /// that holds data by the map, as SEEK_DATA and SEEK_HOLE would give it: written extents and
    /// inline data, adjacent ones joined; preallocated extents and explicit holes are holes.
    /// Null when there is none.</summary>
    public static (long Data, long Hole)? NextData(IReadOnlyList<Engine.ExtentMapping> map, long pos, long size)
    {
        static bool IsData(Engine.ExtentMapping m) => m.Type == "inline" || (m.Type == "regular" && m.DiskBytenr != 0);
        int i = Math.Max(IndexAt(map, pos), 0);
        for (; i < map.Count; i++)
        {
            var m = map[i];
            long start = (long)m.FileOffset, stop = start + (long)m.Length;
            if (stop <= pos || !IsData(m)) continue;
            long data = Math.Max(start, pos);
            if (data >= size) return null;
            while (i + 1 < map.Count && IsData(map[i + 1]) && (long)map[i + 1].FileOffset == stop)
                stop += (long)map[++i].Length;
            return (data, Math.Min(stop, size));
        }
        return null;
    }

    /// <summary>Whether every byte of [off, off + len) is at the same place of the same extent in
    /// both maps (or a hole in both). Inline extents live in tree leaves, not extents: unknown.</summary>
    public static bool Same(IReadOnlyList<Engine.ExtentMapping> a, IReadOnlyList<Engine.ExtentMapping> b, long off, long len)
    {
        for (long pos = off, end = off + len; pos < end;)
        {
            var (ka, na) = At(a, pos);
            var (kb, nb) = At(b, pos);
            if (ka.Type == "inline" || kb.Type == "inline" || ka != kb) return false;
            pos = Math.Min(na, nb);
        }
        return true;
    }

    /// <summary>What is at file offset <paramref name="pos"/>: the extent's device address, the
    /// offset into it and its type (all zero for a hole), and where that stops.</summary>
    private static ((ulong Bytenr, ulong Offset, string Type) Key, long Next) At(IReadOnlyList<Engine.ExtentMapping> map, long pos)
    {
        int found = IndexAt(map, pos);
        if (found >= 0 && pos < (long)(map[found].FileOffset + map[found].Length))
        {
            var m = map[found];
            long next = (long)(m.FileOffset + m.Length);
            if (m.Type == "regular" && m.DiskBytenr == 0) return ((0, 0, ""), next); // an explicit hole
            return ((m.DiskBytenr, m.ExtentOffset + (ulong)(pos - (long)m.FileOffset), m.Type), next);
        }
        long hole = found + 1 < map.Count ? (long)map[found + 1].FileOffset : long.MaxValue;
        return ((0, 0, ""), hole);
    }
}

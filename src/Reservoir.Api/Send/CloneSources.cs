namespace Reservoir.Api.Send;

/// <summary>
/// The extent ranges a receiver will have when a range comes to be sent, by extent: which file
/// (a path in the stream's subvolume, or in the parent of an incremental stream, with that
/// subvolume's uuid and ctransid) holds those bytes at which offset. A later range of the same
/// extent is sent as a CLONE from there. Only ranges wholly inside one known range are cloned;
/// the rest is written. <see cref="LoadMore"/>, when set, is asked once per extent not found
/// for more sources (an incremental send's parent files that reference that extent, found only
/// when a new file has an extent the stream has not written).
/// </summary>
internal sealed class CloneSources(Guid uuid, ulong ctransid)
{
    private readonly Dictionary<ulong, List<(ulong ExtentOffset, long Length, Guid Uuid, ulong Ctransid, string Path, long FileOffset)>> _known = new();
    /// <summary>Adds the sources it can find for an extent (by its address); false when it
    /// added none.</summary>
    public Func<CloneSources, ulong, bool>? LoadMore;
    private readonly HashSet<ulong> _asked = new();

    public (Guid Uuid, ulong Ctransid, string Path, long Offset)? Find(ulong bytenr, ulong extentOffset, long length)
    {
        if (Lookup(bytenr, extentOffset, length) is { } hit) return hit;
        return LoadMore != null && _asked.Add(bytenr) && LoadMore(this, bytenr) ? Lookup(bytenr, extentOffset, length) : null;
    }

    private (Guid, ulong, string, long)? Lookup(ulong bytenr, ulong extentOffset, long length)
    {
        if (!_known.TryGetValue(bytenr, out var list)) return null;
        foreach (var w in list)
            if (extentOffset >= w.ExtentOffset && extentOffset + (ulong)length <= w.ExtentOffset + (ulong)w.Length)
                return (w.Uuid, w.Ctransid, w.Path, w.FileOffset + (long)(extentOffset - w.ExtentOffset));
        return null;
    }

    /// <summary>A range this stream wrote, at <paramref name="path"/> in its own subvolume.</summary>
    public void Add(ulong bytenr, ulong extentOffset, long length, string path, long fileOffset) =>
        Add(uuid, ctransid, bytenr, extentOffset, length, path, fileOffset);

    public void Add(Guid fromUuid, ulong fromCtransid, ulong bytenr, ulong extentOffset, long length, string path, long fileOffset)
    {
        if (length <= 0) return;
        if (!_known.TryGetValue(bytenr, out var list)) _known[bytenr] = list = new();
        list.Add((extentOffset, length, fromUuid, fromCtransid, path, fileOffset));
    }

    /// <summary>Every regular extent range of a file of <paramref name="size"/> bytes whose
    /// extent map is <paramref name="map"/>, as a source in subvolume <paramref name="fromUuid"/>
    /// (cut at the end of the file: a clone may not read past it).</summary>
    public void AddFile(Guid fromUuid, ulong fromCtransid, string path, long size, IReadOnlyList<Engine.ExtentMapping> map)
    {
        foreach (var m in map)
        {
            if (m.Type != "regular" || m.DiskBytenr == 0 || (long)m.FileOffset >= size) continue;
            long len = Math.Min((long)m.Length, size - (long)m.FileOffset);
            Add(fromUuid, fromCtransid, m.DiskBytenr, m.ExtentOffset, len, path, (long)m.FileOffset);
        }
    }
}

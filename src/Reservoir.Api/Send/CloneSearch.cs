namespace Reservoir.Api.Send;

/// <summary>A read-only subvolume the receiving side has, as a send names it: an incremental
/// stream's parent, or a clone source (`send -c`).</summary>
public readonly record struct SendSubvolume(ISendSource Source, Guid Uuid, ulong Ctransid);

/// <summary>
/// Where an extent a new file holds may already be on the receiving side: in the files of the
/// subvolumes it has (an incremental stream's parent first, then the clone sources), so that
/// the range goes as a CLONE of it rather than as data. Asked once per extent the stream has not
/// written itself (<see cref="CloneSources.LoadMore"/>). From a source that can say where its
/// inodes are, the files the extent's back-references name are indexed, each checked against its
/// own extent map (an inode number may name another file there); any other source is indexed
/// whole, at the first such extent.
/// </summary>
internal sealed class CloneSearch
{
    private sealed class Candidate(SendSubvolume sv, InodeLocator? at)
    {
        public readonly SendSubvolume Sv = sv;
        public readonly InodeLocator? At = at;
        public readonly HashSet<ulong> Indexed = new();
        public bool IndexedWhole;
    }

    private readonly List<Candidate> _in = new();

    /// <param name="at">the source's locator, if the caller has one already</param>
    public void Add(SendSubvolume sv, InodeLocator? at = null) =>
        _in.Add(new Candidate(sv, at ?? (sv.Source is IChangeTrackingSource t ? new InodeLocator(t) : null)));

    public bool IsEmpty => _in.Count == 0;

    /// <summary>Adds the sources found for the extent at <paramref name="bytenr"/>; false when
    /// none was added.</summary>
    public bool Load(CloneSources into, ulong bytenr)
    {
        bool added = false;
        foreach (var c in _in)
        {
            if (c.At != null && c.At.Source.InodesReferencing(bytenr) is { } inodes)
            {
                foreach (ulong ino in inodes)
                {
                    if (!c.Indexed.Add(ino) || c.At.PathOf(ino) is not { } path) continue;
                    var st = c.At.Stat(ino);
                    if (st.IsReg && st.Size > 0) added |= AddFile(into, c, path, st);
                }
            }
            else if (!c.IndexedWhole)
            {
                c.IndexedWhole = true;
                added |= IndexWhole(into, c);
            }
        }
        return added;
    }

    private static bool AddFile(CloneSources into, Candidate c, string path, SendStat st)
    {
        using var f = c.Sv.Source.Open(path);
        if (f.Extents() is not { } map) return false;
        into.AddFile(c.Sv.Uuid, c.Sv.Ctransid, path, (long)st.Size, map);
        return true;
    }

    /// <summary>Every regular file of the source, walked from its root.</summary>
    private static bool IndexWhole(CloneSources into, Candidate c)
    {
        var src = c.Sv.Source;
        var seen = new HashSet<ulong>();
        var dirs = new Stack<string>();
        dirs.Push("");
        bool added = false;
        while (dirs.Count > 0)
        {
            string dir = dirs.Pop();
            foreach (var name in src.List(dir))
            {
                string p = FullSend.Child(dir, name);
                var st = src.Lstat(p);
                if (st.IsDir) dirs.Push(p);
                else if (st.IsReg && st.Size > 0 && seen.Add(st.Ino))
                {
                    if (!AddFile(into, c, p, st)) return added; // the source cannot say where its extents are
                    added = true;
                }
            }
        }
        return added;
    }
}

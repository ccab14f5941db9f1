using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>
/// Where the inodes of a <see cref="IChangeTrackingSource"/> are: each inode's names, a path
/// to it (the least of its paths in ordinal order, so the choice does not depend on the order
/// names were made) and its lstat, each asked of the source once. An incremental send that
/// knows which inodes changed looks up those and the directories above them, nothing else.
/// </summary>
internal sealed class InodeLocator(IChangeTrackingSource source)
{
    private const ulong RootIno = Engine.Filesystem.RootIno;
    private readonly Dictionary<ulong, IReadOnlyList<(ulong Dir, string Name)>> _names = new();
    private readonly Dictionary<ulong, string?> _paths = new();
    private readonly Dictionary<ulong, SendStat> _stats = new();

    public IChangeTrackingSource Source => source;

    public IReadOnlyList<(ulong Dir, string Name)> Names(ulong ino) =>
        _names.TryGetValue(ino, out var n) ? n : _names[ino] = source.NamesOf(ino);

    /// <summary>A path to the inode, "" for the root; null when it has no name.</summary>
    public string? PathOf(ulong ino)
    {
        if (ino == RootIno) return "";
        if (_paths.TryGetValue(ino, out var known)) return known;
        _paths[ino] = null; // a directory loop in a damaged tree ends here instead of recursing
        string? best = null;
        foreach (var (dir, name) in Names(ino))
        {
            if (PathOf(dir) is not { } d) continue;
            string full = FullSend.Child(d, name);
            if (best == null || string.CompareOrdinal(full, best) < 0) best = full;
        }
        return _paths[ino] = best;
    }

    public SendStat Stat(ulong ino)
    {
        if (_stats.TryGetValue(ino, out var st)) return st;
        string path = PathOf(ino) ?? throw new FsException(Errno.EUCLEAN, $"send: inode {ino} has no path from the subvolume's root");
        st = source.Lstat(path);
        if (ino != RootIno && st.Ino != ino)
            throw new FsException(Errno.EUCLEAN, $"send: '{path}' is inode {st.Ino}, its names say inode {ino}") { Inode = ino };
        return _stats[ino] = st;
    }
}

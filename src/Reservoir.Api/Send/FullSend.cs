using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>What a send wrote: commands, stream bytes, inodes sent, data written and cloned,
/// and (incremental) how many inodes of the two snapshots it looked at: those that changed and
/// the directories above them when the sources could say what changed, every one otherwise.</summary>
public readonly record struct SendSummary(long Commands, long StreamBytes, long Inodes, long DataBytes, long CloneBytes = 0, long InodesExamined = 0, long HoleBytes = 0);

/// <summary>How a send writes its stream: <see cref="Version"/> 1 (btrfs send's default) or 2
/// (`--proto 2`: 128 KiB writes, holes a changed file gained punched instead of sent as zeros;
/// btrfs-progs 6.0 and later receive it); <see cref="NoData"/> (`--no-data`): the data's places
/// as UPDATE_EXTENT commands instead of the data (a stream that says what changed, for `receive
/// --dump`; received, its files have their sizes but no data, as btrfs receive leaves them).
/// <see cref="OmitStreamHeader"/> and <see cref="OmitEnd"/> make several subvolumes one stream
/// (`send -e`, as btrfs's): every one but the first without the header, every one but the last
/// without the END.</summary>
public sealed record SendOptions(int Version = 1, bool NoData = false)
{
    public bool OmitStreamHeader { get; init; }
    public bool OmitEnd { get; init; }
}

/// <summary>
/// A full send: the whole subvolume as a stream that `btrfs receive` or `reservoir receive`
/// turns into an equal subvolume. Directories are walked parents first, so every command's
/// path exists on the receiving side when it arrives, and a second name of an inode becomes a
/// LINK to the first. What each inode's commands are, and in which order, is
/// <see cref="InodeEmitter"/>'s.
/// </summary>
public sealed class FullSend
{
    private readonly ISendSource _src;
    private readonly InodeEmitter _e;
    private readonly Dictionary<ulong, string> _linked = new();

    private FullSend(ISendSource src, Stream output, SendOptions options)
    {
        _src = src;
        _e = new InodeEmitter(new SendStreamWriter(output, options.Version, !options.OmitStreamHeader)) { NoData = options.NoData };
    }

    /// <summary>Sends <paramref name="src"/> as subvolume <paramref name="name"/> with the identity
    /// the receiver records (the source's uuid and ctransid), so that later incremental streams
    /// find it. Data the receiver has already in <paramref name="cloneSources"/> (`send -c`:
    /// read-only subvolumes it received before) goes as CLONEs of their files.</summary>
    public static SendSummary Run(ISendSource src, string name, Guid uuid, ulong ctransid, Stream output, IReadOnlyList<SendSubvolume>? cloneSources = null, SendOptions? options = null)
    {
        CheckName(name);
        options ??= new SendOptions();
        var s = new FullSend(src, output, options);
        var search = new CloneSearch();
        foreach (var c in cloneSources ?? []) search.Add(c);
        s._e.Clones = new CloneSources(uuid, ctransid) { LoadMore = search.IsEmpty ? null : search.Load };
        s._e.W.Begin(SendCommand.Subvol).Path(SendAttr.Path, name).Uuid(SendAttr.Uuid, uuid).U64(SendAttr.Ctransid, ctransid).Finish();
        var root = src.Lstat("");
        if (!root.IsDir) throw new FsException(Errno.ENOTDIR, "send: the subvolume's root is not a directory");
        s._e.Inodes++;
        s.Directory("", root);
        if (!options.OmitEnd) s._e.W.Begin(SendCommand.End).Finish();
        return new SendSummary(s._e.W.CommandsWritten, s._e.W.BytesWritten, s._e.Inodes, s._e.DataBytes, s._e.CloneBytes);
    }

    internal static void CheckName(string name)
    {
        if (!SendStreamFormat.IsSubvolumeName(name)) throw new FsException(Errno.EINVAL, $"send: '{name}' is not a subvolume name");
    }

    internal static string Child(string dir, string name) => dir.Length == 0 ? name : dir + "/" + name;

    private void Directory(string path, SendStat st)
    {
        var names = _src.List(path).ToList();
        names.Sort(string.CompareOrdinal); // the same stream for the same subvolume, whatever the directory order
        foreach (var name in names)
        {
            string p = Child(path, name);
            var c = _src.Lstat(p);
            if (!c.IsDir && c.Nlink > 1)
            {
                if (_linked.TryGetValue(c.Ino, out var first))
                {
                    _e.W.Begin(SendCommand.Link).Path(SendAttr.Path, p).Path(SendAttr.PathLink, first).Finish();
                    continue;
                }
                _linked[c.Ino] = p;
            }
            _e.Create(_src, p, p, c);
            if (c.IsDir) { Directory(p, c); continue; }
            if (c.IsReg) _e.Data(_src, p, p, c);
            _e.Attributes(_src, p, p, c);
        }
        _e.Attributes(_src, path, path, st);
    }
}

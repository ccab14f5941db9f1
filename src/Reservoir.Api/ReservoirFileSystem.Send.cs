using Reservoir.Api.Send;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir;

public sealed partial class ReservoirFileSystem
{
    /// <summary>
    /// Writes the read-only subvolume at <paramref name="subvolume"/> to <paramref name="output"/>
    /// as a send stream in btrfs's format (version 1), as `btrfs send` does: whole, or with
    /// <paramref name="parent"/> (an earlier read-only snapshot the receiving side has) only the
    /// changes since it. <see cref="Receive"/> here, `reservoir receive` or `btrfs receive` make
    /// it a subvolume again. <paramref name="cloneSources"/> (`send -c`) are read-only subvolumes
    /// the receiving side has too: data they hold goes as clones of their files.
    /// <paramref name="options"/>: the stream's version and whether data is left out
    /// (<see cref="SendOptions"/>).
    /// </summary>
    public SendSummary Send(string subvolume, Stream output, string? parent = null, IEnumerable<string>? cloneSources = null, SendOptions? options = null)
    {
        var info = SendableSubvolume(subvolume, "");
        string name = System.IO.Path.GetFileName(info.Path);
        var clones = (cloneSources ?? []).Select(c =>
        {
            var ci = SendableSubvolume(c, "the clone source ");
            return new SendSubvolume(new ImageSendSource(this, c), SendIdentity(ci), ci.Generation);
        }).ToList();
        if (parent == null) return FullSend.Run(new ImageSendSource(this, subvolume), name, SendIdentity(info), info.Generation, output, clones, options);
        var p = SendableSubvolume(parent, "the parent ");
        return IncrementalSend.Run(new ImageSendSource(this, subvolume), name, SendIdentity(info), info.Generation,
            new ImageSendSource(this, parent), SendIdentity(p), p.Generation, output, clones, options);
    }

    /// <summary>
    /// The parent btrfs's `send -c` picks when no `-p` is given (btrfs-progs' find_good_parent):
    /// among <paramref name="candidates"/>, the subvolume <paramref name="subvolume"/> is a
    /// snapshot of, else the snapshot of the same source whose ctransid is nearest; null when
    /// none is related (the send is then a full one, cloning from the candidates).
    /// </summary>
    public static SubvolumeInfo? GoodParent(SubvolumeInfo subvolume, IEnumerable<SubvolumeInfo> candidates)
    {
        var list = candidates.Where(c => c.Id != subvolume.Id).ToList();
        if (subvolume.ParentUuid == Guid.Empty) return null;
        foreach (var c in list)
            if (c.Uuid == subvolume.ParentUuid) return c;
        SubvolumeInfo? best = null;
        foreach (var c in list)
        {
            if (c.ParentUuid != subvolume.ParentUuid) continue;
            ulong d = Distance(c.Generation, subvolume.Generation);
            if (best is not { } b || d < Distance(b.Generation, subvolume.Generation)) best = c;
        }
        return best;
        static ulong Distance(ulong a, ulong b) => a > b ? a - b : b - a;
    }

    /// <summary>
    /// Makes read-only subvolumes in <paramref name="directory"/> from the send streams on
    /// <paramref name="input"/> (from <see cref="Send"/>, `reservoir send` or `btrfs send`, whole
    /// or incremental, one after another), then commits. A stream that fails leaves nothing of
    /// its subvolume behind and throws an <see cref="FsException"/> saying why.
    /// </summary>
    public IReadOnlyList<ReceivedSubvolume> Receive(Stream input, string directory)
    {
        var got = Receiver.Run(input, new ImageReceiveTarget(this, directory));
        Sync();
        return got;
    }

    private static Guid SendIdentity(SubvolumeInfo s) => StreamIdentity.Of(s.Uuid, s.ReceivedUuid);

    /// <summary>The subvolume whose root is <paramref name="path"/>, if a send may read it: not
    /// the top level, and read-only (it must not change while it is read).</summary>
    public SubvolumeInfo SendableSubvolume(string path, string what = "")
    {
        var e = Posix.Lstat(path, out var a);
        if (e != Errno.OK) throw new FsException(e, $"send: {what}'{path}' not found");
        var (tree, ino) = NodeIds.Decode(a.Ino);
        if (ino != Filesystem.RootIno || !a.IsDir) throw new FsException(Errno.EINVAL, $"send: {what}'{path}' is not a subvolume (give the path of its root)");
        if (tree == Format.TreeIds.FsTree) throw new FsException(Errno.EINVAL, SendChecks.TopLevel);
        var info = ListSubvolumes().FirstOrDefault(s => s.Id == tree);
        if (info.Id != tree) throw new FsException(Errno.ENOENT, $"send: subvolume {tree} is not listed");
        if (!info.ReadOnly) throw new FsException(Errno.EINVAL, SendChecks.NotReadOnly(what, path));
        return info;
    }
}

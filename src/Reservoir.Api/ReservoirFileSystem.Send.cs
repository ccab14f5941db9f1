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
    /// it a subvolume again.
    /// </summary>
    public SendSummary Send(string subvolume, Stream output, string? parent = null)
    {
        var info = SendableSubvolume(subvolume, "");
        string name = System.IO.Path.GetFileName(info.Path);
        if (parent == null) return FullSend.Run(new ImageSendSource(this, subvolume), name, SendIdentity(info), info.Generation, output);
        var p = SendableSubvolume(parent, "the parent ");
        return IncrementalSend.Run(new ImageSendSource(this, subvolume), name, SendIdentity(info), info.Generation,
            new ImageSendSource(this, parent), SendIdentity(p), p.Generation, output);
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
        if (tree == Format.TreeIds.FsTree) throw new FsException(Errno.EINVAL, "send: the top-level subvolume cannot be sent (it is never read-only): snapshot it with -r and send the snapshot");
        var info = ListSubvolumes().FirstOrDefault(s => s.Id == tree);
        if (info.Id != tree) throw new FsException(Errno.ENOENT, $"send: subvolume {tree} is not listed");
        if (!info.ReadOnly) throw new FsException(Errno.EINVAL, $"send: {what}'{path}' is not read-only (send needs a subvolume that cannot change: `subvolume snapshot -r` makes one)");
        return info;
    }
}

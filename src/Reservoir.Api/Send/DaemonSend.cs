using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir.Api.Send;

/// <summary>
/// A send written straight from the engine of a mounted filesystem, by the daemon serving the
/// mount (the FUSE bridge's 'R' 17 hands it the caller's pipe): the same stream a send that
/// walks the mount writes, byte for byte, without a FUSE round trip per file. Subvolumes are
/// named by id, as the caller found them through the mount.
/// </summary>
public static class DaemonSend
{
    /// <summary>Sends read-only subvolume <paramref name="subvolume"/> as <paramref name="name"/>:
    /// whole when <paramref name="parent"/> is 0, else the changes since that read-only subvolume;
    /// data held by <paramref name="cloneSources"/> as clones of their files.</summary>
    public static SendSummary Run(Filesystem fs, ulong subvolume, ulong parent, IReadOnlyList<ulong> cloneSources, string name, SendOptions options, Stream output)
    {
        var (src, info) = Open(fs, subvolume, "");
        var clones = cloneSources.Select(id =>
        {
            var (c, ci) = Open(fs, id, "the clone source ");
            return new SendSubvolume(c, StreamIdentity.Of(ci.Uuid, ci.ReceivedUuid), ci.Generation);
        }).ToList();
        var uuid = StreamIdentity.Of(info.Uuid, info.ReceivedUuid);
        if (parent == 0) return FullSend.Run(src, name, uuid, info.Generation, output, clones, options);
        var (p, pi) = Open(fs, parent, "the parent ");
        return IncrementalSend.Run(src, name, uuid, info.Generation, p, StreamIdentity.Of(pi.Uuid, pi.ReceivedUuid), pi.Generation, output, clones, options);
    }

    private static (ImageSendSource, SubvolumeInfo) Open(Filesystem fs, ulong id, string what)
    {
        ulong root = NodeIds.Encode(id, Filesystem.RootIno);
        if (id == Format.TreeIds.FsTree) throw new FsException(Errno.EINVAL, SendChecks.TopLevel);
        var e = fs.ShowSubvolume(root, out var info);
        if (e != Errno.OK) throw new FsException(e, $"send: {what}subvolume {id} not found");
        if (!info.ReadOnly) throw new FsException(Errno.EINVAL, SendChecks.NotReadOnly(what, "/" + info.Path));
        return (new ImageSendSource(fs, root, "/" + info.Path), info);
    }
}

/// <summary>Why a subvolume cannot be sent, in the words every way of sending uses.</summary>
internal static class SendChecks
{
    public const string TopLevel = "send: the top-level subvolume cannot be sent (it is never read-only): snapshot it with -r and send the snapshot";

    public static string NotReadOnly(string what, string path) =>
        $"send: {what}'{path}' is not read-only (send needs a subvolume that cannot change: `subvolume snapshot -r` makes one)";
}

using Reservoir.Engine;

namespace Reservoir.Api.Send;

/// <summary>
/// A receive applied straight to the engine of a mounted filesystem, by the daemon serving the
/// mount (the FUSE bridge's 'R' 19 hands it the caller's pipe): what `receive` through the mount
/// would make, without a FUSE round trip per command. The destination is a directory's node id,
/// as the caller's ioctl named it.
/// </summary>
public static class DaemonReceive
{
    /// <summary>Receives every stream on <paramref name="input"/> into directory
    /// <paramref name="destination"/>; what `receive` says of each ("At subvol NAME", "At
    /// snapshot NAME", and with <paramref name="detail"/> what each stream names), for the caller
    /// to print. <paramref name="made"/> gets the names of the
    /// subvolumes made there, kept or (after a failure) deleted.</summary>
    public static IReadOnlyList<string> Run(Filesystem fs, ulong destination, Stream input, List<string> made, bool detail = false)
    {
        var target = new ImageReceiveTarget(fs, destination, "");
        var said = new List<string>();
        try
        {
            Receiver.Run(input, target, said.Add, detail: detail);
            return said;
        }
        finally { made.AddRange(target.Made); }
    }
}

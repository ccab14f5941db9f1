namespace Reservoir.Fuse.Session;

/// <summary>
/// The kernel's FUSE control filesystem (fusectl, /sys/fs/fuse/connections): one directory per
/// connection, named by the connection's device number in the kernel's encoding (major &lt;&lt; 20 |
/// minor; for a fuseblk mount that is its loop device, for a plain fuse mount an anonymous
/// device of major 0). Writing its <c>abort</c> file ends the connection as a daemon's exit
/// would: every waiting request is answered ENOTCONN, every read of /dev/fuse ENODEV, and an
/// unmount waiting for FUSE_DESTROY returns. The file belongs to the user who mounted.
/// </summary>
internal static class FuseControl
{
    private const string Connections = "/sys/fs/fuse/connections";

    /// <summary>The directory name of the connection whose mount showed <paramref name="device"/>.</summary>
    public static string ConnectionName((uint Major, uint Minor) device) => ((device.Major << 20) | device.Minor).ToString();

    /// <summary>Aborts the connection of the mount that showed <paramref name="device"/>; null
    /// when done, else why not (no fusectl, no such connection, not allowed).</summary>
    public static string? Abort((uint Major, uint Minor) device)
    {
        string dir = Path.Combine(Connections, ConnectionName(device));
        // Mounted on almost every system (systemd mounts it); root mounts it when it is not.
        if (!Directory.Exists(dir) && Directory.Exists(Connections) && Libc.Geteuid() == 0)
            Libc.Mount("fusectl", Connections, "fusectl", 0, "");
        if (!Directory.Exists(dir)) return $"no FUSE connection {ConnectionName(device)} under {Connections} (is fusectl mounted?)";
        try
        {
            File.WriteAllText(Path.Combine(dir, "abort"), "1");
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot abort FUSE connection {ConnectionName(device)}: {e.Message}";
        }
    }
}

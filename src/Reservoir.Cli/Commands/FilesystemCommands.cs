using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir filesystem …`: usage, trim, resize, show, df, label, sync, du, each on an
/// unmounted image or through a mount, shaped like btrfs-progs' commands of those names.</summary>
internal static class FilesystemCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Filesystem(ctx)];

    /// <summary>The argument every `filesystem` command takes: an image, or a path on a mount.</summary>
    internal static Argument<string> ImageOrMount() => new("image") { Description = "An unmounted image, or a directory on a mounted Reservoir" };

    /// <summary>The filesystem's one device as btrfs-progs names it in `filesystem show` and
    /// `usage`: on a mount, the mount's source (the loop device of a fuseblk mount, else the
    /// image), from the mount table; offline, the image's full path.</summary>
    internal static string DevicePath(string at)
    {
        string full = Path.GetFullPath(at);
        if (!Directory.Exists(full)) return full;
        try
        {
            // The mount holding the path: the longest mount point it is under (the last such
            // in mount order, which is the one on top).
            Fuse.Session.MountInfo? holding = null;
            foreach (var m in Fuse.Session.MountInfo.Read())
            {
                bool under = full == m.MountPoint || full.StartsWith(m.MountPoint.EndsWith('/') ? m.MountPoint : m.MountPoint + "/", StringComparison.Ordinal);
                if (under && (holding == null || m.MountPoint.Length >= holding.MountPoint.Length)) holding = m;
            }
            return holding?.Source ?? full;
        }
        catch (IOException) { return full; }
    }

    /// <summary>Says why `filesystem WHAT` failed at <paramref name="at"/> (ENOTTY: the path is
    /// not on a Reservoir mount; else <paramref name="why"/> or the errno) and returns exit 1.</summary>
    internal static int Failed(CliContext ctx, string what, string at, Errno e, string? why = null)
    {
        ctx.Err.WriteLine($"reservoir filesystem {what}: {at}: {(e == Errno.ENOTTY ? "not on a mounted Reservoir" : why ?? e.Describe())}");
        return 1;
    }

    /// <summary>`reservoir filesystem trim IMAGE|PATH`: fstrim for an image (punches holes in
    /// the image file where the filesystem has free space, so the host gets it back) or, on a
    /// mounted path, the FITRIM ioctl fstrim(8) sends.</summary>
    private static Command Trim(CliContext ctx)
    {
        var image = ImageOrMount();
        var minimum = new Option<string>("--minimum", "-m") { Description = "Discard only free ranges at least this long (e.g. 1M)", DefaultValueFactory = _ => "0" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Print how much was discarded" };
        var cmd = new Command("trim", "Give the image's free space back to the host (fstrim)") { image, minimum, verbose };
        cmd.SetAction(pr =>
        {
            string at = pr.GetValue(image)!;
            if (!Units.TryParseSize(pr.GetValue(minimum)!, out ulong minLen))
            {
                ctx.Err.WriteLine($"reservoir filesystem trim: '{pr.GetValue(minimum)}' is not a size");
                return 2;
            }
            ulong trimmed;
            Errno e;
            if (Directory.Exists(at)) e = OnlineSubvolume.Trim(at, minLen, out trimmed);
            else
            {
                using var mounted = QuotaCommands.MountRw(at);
                e = mounted.Fs.Trim(0, ulong.MaxValue, minLen, out trimmed);
            }
            if (e != Errno.OK)
            {
                return Failed(ctx, "trim", at, e);
            }
            if (pr.GetValue(verbose)) ctx.Out.WriteLine($"{at}: {Units.Human(trimmed)} ({trimmed} bytes) trimmed");
            return 0;
        });
        return cmd;
    }

    /// <summary>`reservoir filesystem resize [1:][+|-]SIZE|max IMAGE|PATH`, as `btrfs filesystem
    /// resize`: on an unmounted image (the file grows with the filesystem and is cut after it
    /// shrinks; `max` takes the file's length, after `truncate -s`) or through the mount.</summary>
    private static Command Resize(CliContext ctx)
    {
        var amount = new Argument<string>("size") { Description = "[1:][+|-]SIZE[kKmMgGtTpPeE], [1:]max or cancel: the new size, a change of it, the whole device (an image file's length), or stop the shrink under way (on a mount)" };
        var image = ImageOrMount();
        var format = CommonOptions.Format();
        var cmd = new Command("resize", "Grow or shrink the filesystem (the image file with it)") { amount, image, format };
        cmd.SetAction(pr =>
        {
            string spec = pr.GetValue(amount)!, at = pr.GetValue(image)!;
            Errno e;
            ulong oldSize, newSize;
            string? why;
            Engine.Tx.RelocationResult moved;
            if (Directory.Exists(at)) e = OnlineSubvolume.Resize(at, spec, out oldSize, out newSize, out why, out moved);
            else
            {
                using var mounted = QuotaCommands.MountRw(at);
                e = mounted.Fs.Resize(spec, out var r, out why);
                (oldSize, newSize) = (r.OldSize, r.NewSize);
                moved = e == Errno.OK && newSize < oldSize ? mounted.Fs.LastRelocation : default;
            }
            if (e != Errno.OK)
            {
                return Failed(ctx, "resize", at, e, why);
            }
            if (spec.Trim().EndsWith("cancel", StringComparison.OrdinalIgnoreCase))
            {
                if (CommonOptions.IsJson(pr, format)) ctx.Json(new { device_id = 1, cancelled = true });
                else ctx.Out.WriteLine($"Resize of {at}: {why}");
                return 0;
            }
            if (CommonOptions.IsJson(pr, format))
                ctx.Json(new { device_id = 1, old_size = oldSize, new_size = newSize, moved_data_extents = moved.DataExtents, moved_data_bytes = moved.DataBytes, moved_tree_blocks = moved.TreeBlocks });
            else
            {
                if (newSize == oldSize) ctx.Out.WriteLine($"Resize device id 1 ({at}): already {Units.Human(newSize)}");
                else ctx.Out.WriteLine($"Resize device id 1 ({at}) from {Units.Human(oldSize)} to {Units.Human(newSize)}");
                // btrfs prints the line above alone; what a shrink moved is Reservoir's addition.
                if (moved.DataExtents + moved.TreeBlocks > 0)
                    ctx.Out.WriteLine($"Moved {moved.DataExtents} data extents ({Units.Human(moved.DataBytes)}) and {moved.TreeBlocks} tree blocks below the new end");
            }
            return 0;
        });
        return cmd;
    }

    private static Command Filesystem(CliContext ctx)
    {
        var cmd = new Command("filesystem", "Filesystem-wide information");
        cmd.Subcommands.Add(FilesystemUsageCommand.Build(ctx));
        cmd.Subcommands.Add(Trim(ctx));
        cmd.Subcommands.Add(Resize(ctx));
        foreach (var c in FilesystemInfoCommands.Build(ctx)) cmd.Subcommands.Add(c);
        cmd.Subcommands.Add(DiskUsageCommand.Build(ctx));
        return cmd;
    }
}

using System.CommandLine;
using Reservoir.Fuse.Session;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir umount [-l] DIR|IMAGE…`: unmounts a mounted image together with its subvolumes'
/// own mounts (-o submounts), deepest first (<see cref="MountTreeUnmount"/>). install.sh makes it
/// umount(8)'s helper for Reservoir mounts (src/Reservoir.Cli/umount.reservoir, installed as
/// umount.fuse and umount.fuse[blk].reservoir), so plain `umount DIR` does the same as root. Exit status as umount(8): 0, or 32 when a mount
/// could not be unmounted.</summary>
internal static class UmountCommand
{
    public static Command Build(CliContext ctx)
    {
        var dirs = new Argument<string[]>("mountpoint") { Arity = ArgumentArity.OneOrMore, Description = "A Reservoir mount point, or a mounted image" };
        var lazy = new Option<bool>("-l", "--lazy") { Description = "Detach now; each mount ends when nothing uses it any more (as umount -l)" };
        var cmd = new Command("umount", "Unmount a Reservoir mount, with its subvolumes' own mounts (-o submounts)") { dirs, lazy };
        cmd.SetAction(pr =>
        {
            int rc = 0;
            foreach (var d in pr.GetValue(dirs)!)
                if (MountTreeUnmount.Unmount(d, pr.GetValue(lazy)) is { } why)
                {
                    ctx.Err.WriteLine($"reservoir umount: {why}");
                    rc = 32;
                }
            return rc;
        });
        return cmd;
    }
}

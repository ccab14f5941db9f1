using System.CommandLine;
using Reservoir.Common;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir qgroup clear-stale IMAGE|PATH`, for scripts written for btrfs, which runs it after
/// deleting subvolumes: btrfs can keep a deleted subvolume's level-0 group (`&lt;stale&gt;` in
/// its qgroup show) and this deletes those. Here a subvolume's group goes with the subvolume, in
/// the same transaction, so there is never one to clear: the command checks that every level-0
/// group has its subvolume, prints nothing and succeeds, as btrfs-progs does with nothing
/// stale. One without its subvolume would be damage (fsck reports it): it is named, and the
/// command fails.
/// </summary>
internal static class QgroupClearStale
{
    public static Command Build(CliContext ctx)
    {
        var at = new Argument<string>("image") { Description = "An unmounted image, or a directory on a mounted Reservoir" };
        var cmd = new Command("clear-stale", "Clear level-0 qgroups whose subvolume is gone (as btrfs qgroup clear-stale): here none are ever left, and this checks it") { at };
        cmd.SetAction(pr =>
        {
            string where = pr.GetValue(at)!;
            List<ulong> groups;
            HashSet<ulong> subvolumes = [5];
            if (Directory.Exists(where))
            {
                var qe = OnlineSubvolume.Qgroups(where, out var online);
                if (qe != Errno.OK) return Fail(ctx, where, qe);
                var le = OnlineSubvolume.List(where, out var list);
                if (le != Errno.OK) return Fail(ctx, where, le);
                groups = online.Select(g => g.Id).ToList();
                foreach (var s in list) subvolumes.Add(s.Id);
            }
            else
            {
                if (!File.Exists(where)) { ctx.Err.WriteLine($"reservoir qgroup clear-stale: {where}: no such image or directory"); return 1; }
                using var fs = FileCommands.Open(where, write: false);
                if (!fs.Engine.QuotaEnabled) return Fail(ctx, where, Errno.ENOTCONN);
                groups = fs.Engine.Qgroups().Select(g => g.Id).ToList();
                foreach (var s in fs.ListSubvolumes()) subvolumes.Add(s.Id);
            }
            var stale = groups.Where(id => QgroupId.Level(id) == 0 && !subvolumes.Contains(QgroupId.Id(id))).ToList();
            if (stale.Count == 0) return 0;
            foreach (var id in stale)
                ctx.Err.WriteLine($"reservoir qgroup clear-stale: qgroup 0/{QgroupId.Id(id)} has no subvolume: groups go with their subvolumes here, so the image is damaged (run reservoir fsck)");
            return 1;
        });
        return cmd;
    }

    private static int Fail(CliContext ctx, string where, Errno e)
    {
        ctx.Err.WriteLine($"reservoir qgroup clear-stale: {where}: " + e switch
        {
            Errno.ENOTCONN => "quotas are not enabled",
            Errno.ENOTTY => "not on a mounted Reservoir",
            _ => e.Describe(),
        });
        return 1;
    }
}

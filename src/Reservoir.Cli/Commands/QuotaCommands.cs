using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir quota enable|status IMAGE` and `reservoir qgroup show|limit`, on an
/// unmounted image, with output shaped like btrfs-progs'.</summary>
internal static class QuotaCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Quota(ctx), Qgroup(ctx)];

    internal static ImageMount MountRw(string path)
    {
        var dev = Device.FileBlockDevice.Open(path);
        try { return new ImageMount(Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }), dev); }
        catch { dev.Dispose(); throw; }
    }

    private static Command Quota(CliContext ctx)
    {
        var cmd = new Command("quota", "Enable or inspect quota groups");
        cmd.Subcommands.Add(Switch(ctx, "enable", "Turn quota groups on (counts existing data once)", OnlineSubvolume.QuotaOp.Enable, fs => fs.EnableQuota()));
        cmd.Subcommands.Add(Switch(ctx, "disable", "Turn quota groups off: limits stop holding, and every qgroup, relation and limit is deleted", OnlineSubvolume.QuotaOp.Disable,
            fs => fs.DisableQuota()));
        var image2 = new Argument<string>("image") { Description = ImageOrMount };
        var format = CommonOptions.Format();
        var isEnabled = new Option<bool>("--is-enabled") { Description = "Print nothing: exit 0 if quotas are on, 1 if not" };
        var status = new Command("status", "Show whether quota groups are on, and how many there are (as btrfs quota status)") { image2, format, isEnabled };
        status.SetAction(pr =>
        {
            string at = pr.GetValue(image2)!;
            bool on;
            List<ulong> ids;
            if (Directory.Exists(at))
            {
                var oe = OnlineSubvolume.Qgroups(at, out var online);
                if (oe is not (Errno.OK or Errno.ENOTCONN)) { ctx.Err.WriteLine($"reservoir quota status: {at}: {(oe == Errno.ENOTTY ? "not on a mounted Reservoir" : oe.Describe())}"); return 1; }
                (on, ids) = (oe == Errno.OK, online.Select(g => g.Id).ToList());
            }
            else
            {
                using var mounted = InspectCommand.MountRo(at);
                var fs = mounted.Fs;
                (on, ids) = (fs.QuotaEnabled, fs.Qgroups().Select(g => g.Id).ToList());
            }
            if (pr.GetValue(isEnabled)) return on ? 0 : 1;
            int level0 = ids.Count(id => QgroupId.Level(id) == 0);
            // Never inconsistent: every group equals a recount after every commit, and no state
            // turns limits off (btrfs's "override limits").
            if (CommonOptions.IsJson(pr, format))
            {
                if (on) ctx.Json(new { enabled = true, mode = "qgroup", inconsistent = false, override_limits = false, total_count = ids.Count, level0, qgroups = ids.Count });
                else ctx.Json(new { enabled = false, qgroups = 0 });
                return 0;
            }
            ctx.Out.WriteLine($"Quotas on {at}:");
            if (!on)
            {
                ctx.Out.WriteLine("  Enabled:                 no");
                return 0;
            }
            ctx.Out.WriteLine("  Enabled:                 yes");
            ctx.Out.WriteLine("  Mode:                    qgroup (full accounting)");
            ctx.Out.WriteLine("  Inconsistent:            no");
            ctx.Out.WriteLine("  Override limits:         no");
            ctx.Out.WriteLine($"  Total count:             {ids.Count}");
            ctx.Out.WriteLine($"  Level 0:                 {level0}");
            return 0;
        });
        cmd.Subcommands.Add(status);
        cmd.Subcommands.Add(Rescan(ctx));
        return cmd;
    }

    /// <summary>`quota rescan [-s|-w|-W] IMAGE|PATH`, as btrfs-progs takes it. Reservoir's numbers
    /// equal a recount after every commit, so a rescan checks that and runs to its end before it
    /// answers (limits hold throughout): -w and -W have nothing to wait for, and -s finds no
    /// rescan running.</summary>
    private static Command Rescan(CliContext ctx)
    {
        var at = new Argument<string>("image") { Description = ImageOrMount };
        var status = new Option<bool>("-s", "--status") { Description = "Show the status of a running rescan (there never is one: a rescan finishes before the command returns)" };
        var wait = new Option<bool>("-w", "--wait") { Description = "Rescan and wait for it to finish (it always does)" };
        var waitOnly = new Option<bool>("-W", "--wait-norescan") { Description = "Wait for a running rescan without starting one (there is none)" };
        var cmd = new Command("rescan", "Recount every qgroup from the trees (the numbers already equal a recount after every commit: this checks it)") { at, status, wait, waitOnly };
        cmd.SetAction(pr =>
        {
            string where = pr.GetValue(at)!;
            if (pr.GetValue(status) || pr.GetValue(waitOnly))
            {
                if (pr.GetValue(status)) ctx.Out.WriteLine("no rescan operation in progress");
                return 0;
            }
            int corrected = 0;
            int code = Run(ctx, "quota rescan", where, OnlineSubvolume.QuotaOp.Rescan, 0, 0, fs => fs.RescanQuota(out corrected));
            if (code != 0) return code;
            if (Directory.Exists(where)) ctx.Out.WriteLine("quota rescan finished (a qgroup whose numbers it changed is reported in the daemon's log)");
            else if (corrected > 0) ctx.Out.WriteLine($"quota rescan finished: the recount changed the numbers of {corrected} qgroup(s) (the accounting had drifted: please report it)");
            else ctx.Out.WriteLine("quota rescan finished: every qgroup equals the recount");
            return 0;
        });
        return cmd;
    }

    private const string ImageOrMount = "An unmounted image, or a directory on a mounted Reservoir";

    /// <summary>`quota enable|disable IMAGE|PATH`.</summary>
    private static Command Switch(CliContext ctx, string verb, string description, OnlineSubvolume.QuotaOp op, Func<Filesystem, Errno> offline)
    {
        var image = new Argument<string>("image") { Description = ImageOrMount };
        var cmd = new Command(verb, description) { image };
        // btrfs 6.7's simple quotas (-s) trade the exclusive numbers for a cheap commit; here the
        // full accounting costs what they would (its cost follows the extents changed, not the
        // snapshots), so -s is taken, and full accounting enabled, saying so.
        var simple = new Option<bool>("--simple", "-s") { Description = "Accepted for btrfs-progs' scripts: full accounting is enabled, which here costs what simple quotas do" };
        if (op == OnlineSubvolume.QuotaOp.Enable) cmd.Options.Add(simple);
        cmd.SetAction(pr =>
        {
            int rc = Run(ctx, $"quota {verb}", pr.GetValue(image)!, op, 0, 0, offline);
            if (rc == 0 && op == OnlineSubvolume.QuotaOp.Enable && pr.GetValue(simple))
                ctx.Err.WriteLine("reservoir quota enable: note: -s: full accounting enabled (its commit costs what simple quotas' would; exclusive numbers are kept)");
            return rc;
        });
        return cmd;
    }

    /// <summary>A quota change on a mounted Reservoir (through its quota ioctl, root only) when
    /// <paramref name="at"/> is a directory, else on the unmounted image.</summary>
    private static int Run(CliContext ctx, string what, string at, OnlineSubvolume.QuotaOp op, ulong a, ulong b, Func<Filesystem, Errno> offline, Func<Errno, string?>? explain = null)
    {
        Errno e;
        if (Directory.Exists(at)) e = OnlineSubvolume.QuotaCtl(at, op, a, b);
        else
        {
            using var mounted = MountRw(at);
            var fs = mounted.Fs;
            e = offline(fs);
        }
        if (e == Errno.OK || (op == OnlineSubvolume.QuotaOp.Disable && e == Errno.ENOTCONN)) return 0; // already off: done, as btrfs
        ctx.Err.WriteLine($"reservoir {what}: " + (explain?.Invoke(e) ?? e switch
        {
            Errno.ENOTCONN => "quotas are not enabled (reservoir quota enable IMAGE|PATH)",
            Errno.ENOTTY => $"{at}: not on a mounted Reservoir",
            Errno.EPERM => "only root may change quotas on a mounted filesystem",
            Errno.EBUSY when op is OnlineSubvolume.QuotaOp.Enable or OnlineSubvolume.QuotaOp.Disable =>
                "a deleted subvolume keeps its space until files of it are closed; try again after (reservoir subvolume sync waits for them)",
            _ => e.Describe(),
        }));
        return 1;
    }

    private static Command Qgroup(CliContext ctx)
    {
        var cmd = new Command("qgroup", "Show, limit and group quota groups");
        var show = QgroupShowCommand.Build(ctx, ImageOrMount);
        var size = new Argument<string>("size") { Description = "The limit (e.g. 10G), or 'none'" };
        var first = new Argument<string>("qgroupid|image") { Description = "btrfs-progs' order: the qgroup id (0/<id>, 1/<n>, …), then PATH. Or an unmounted image, or a subvolume on a mounted Reservoir" };
        var second = new Argument<string?>("path") { Description = "With a qgroup id first: the image or a directory on the mount. With an image first: a subvolume inside it (its qgroup 0/<id>) or a qgroup id; default the top level (0/5). With a mounted subvolume first: a qgroup id; default that subvolume's", DefaultValueFactory = _ => null, Arity = ArgumentArity.ZeroOrOne };
        var exclusive = new Option<bool>("-e", "--exclusive") { Description = "Limit exclusive bytes (what no one outside the group references) instead of referenced, as btrfs's -e; the other limit stays" };
        var limit = new Command("limit", "Limit a qgroup: writes past it answer EDQUOT, and df inside a limited subvolume shows the limit") { size, first, second, exclusive };
        limit.SetAction(pr =>
        {
            string sz = pr.GetValue(size)!;
            ulong max = sz == "none" ? ulong.MaxValue : MkfsCommand.ParseSize(sz, "size");
            bool excl = pr.GetValue(exclusive);
            var op = excl ? OnlineSubvolume.QuotaOp.LimitExclusive : OnlineSubvolume.QuotaOp.Limit;
            string a1 = pr.GetValue(first)!;
            string? a2 = pr.GetValue(second);
            // btrfs-progs writes `qgroup limit SIZE [QGROUPID] PATH`; Reservoir's offline form
            // puts the image first and what to limit after it. A qgroup id first is btrfs's.
            var (at, what) = a2 != null && TryParseQgroup(a1, out _) && !TryParseQgroup(a2, out _) ? (a2, (string?)a1) : (a1, a2);
            if (a2 != null && at == a1 && !File.Exists(a1) && !Directory.Exists(a1) && (File.Exists(a2) || Directory.Exists(a2)))
            {
                ctx.Err.WriteLine($"reservoir qgroup limit: {a1}: not a qgroup id (level/id, e.g. 1/100)");
                return 1;
            }
            ulong qid = 0;
            string? problem = null;
            string NoSuchGroup() => $"{what ?? QgroupId.Show(qid)}: no such qgroup";
            if (Directory.Exists(at))
            {
                if (what != null)
                {
                    if (!TryParseQgroup(what, out qid)) { ctx.Err.WriteLine($"reservoir qgroup limit: {what}: not a qgroup id (level/id, e.g. 1/100)"); return 1; }
                }
                else if (OnlineSubvolume.SubvolumeIdOf(at) is { } sid) qid = QgroupId.Of(0, sid);
                else { ctx.Err.WriteLine($"reservoir qgroup limit: {at}: not a subvolume on a mounted Reservoir"); return 1; }
                return Run(ctx, "qgroup limit", at, op, qid, max, _ => Errno.EINVAL, e => e == Errno.ENOENT ? NoSuchGroup() : null);
            }
            return Run(ctx, "qgroup limit", at, op, 0, 0, fs =>
            {
                string t = what ?? "/";
                if (!TryParseQgroup(t, out qid))
                {
                    var le = fs.ResolveMountRoot(t, null, out ulong node);
                    if (le != Errno.OK) { problem = $"{t}: {(le == Errno.EINVAL ? "not a subvolume" : le.Describe())}"; return le; }
                    qid = QgroupId.Of(0, Reservoir.Engine.Inodes.NodeIds.Decode(node).TreeId);
                }
                return fs.LimitQgroup(qid, max, excl);
            }, e => problem ?? (e == Errno.ENOENT ? NoSuchGroup() : null));
        });
        cmd.Subcommands.Add(show);
        cmd.Subcommands.Add(limit);
        cmd.Subcommands.Add(Hierarchy(ctx, "create", "Create a qgroup of level 1 or above (e.g. 1/100)", 1, (fs, a) => fs.CreateQgroup(a[0])));
        cmd.Subcommands.Add(Hierarchy(ctx, "destroy", "Destroy a qgroup of level 1 or above (it must have no members)", 1, (fs, a) => fs.DestroyQgroup(a[0])));
        cmd.Subcommands.Add(Hierarchy(ctx, "assign", "Make qgroup SRC a member of DST (a higher level): DST's limits then hold for SRC's writes too", 2, (fs, a) => fs.AssignQgroup(a[0], a[1])));
        cmd.Subcommands.Add(Hierarchy(ctx, "remove", "End SRC's membership of DST", 2, (fs, a) => fs.RemoveQgroupRelation(a[0], a[1])));
        cmd.Subcommands.Add(QgroupClearStale.Build(ctx));
        return cmd;
    }

    /// <summary>"level/id", as btrfs-progs writes qgroup ids.</summary>
    internal static bool TryParseQgroup(string s, out ulong id)
    {
        id = 0;
        var parts = s.Split('/');
        if (parts.Length != 2 || !ushort.TryParse(parts[0], out ushort level) || !ulong.TryParse(parts[1], out ulong n) || n > 0xFFFF_FFFF_FFFF) return false;
        id = QgroupId.Of(level, n);
        return true;
    }

    /// <summary>`qgroup create|destroy QGROUP IMAGE|PATH` and `qgroup assign|remove SRC DST
    /// IMAGE|PATH` (btrfs-progs' argument order; a directory on a mount: online).</summary>
    private static Command Hierarchy(CliContext ctx, string verb, string description, int ids, Func<Filesystem, ulong[], Errno> change)
    {
        var qgroups = (ids == 1 ? new[] { "qgroupid" } : new[] { "src", "dst" })
            .Select(n => new Argument<string>(n) { Description = "a qgroup id, level/id (e.g. 1/100)" }).ToArray();
        var image = new Argument<string>("image") { Description = ImageOrMount };
        var cmd = new Command(verb, description);
        foreach (var q in qgroups) cmd.Arguments.Add(q);
        cmd.Arguments.Add(image);
        if (ids == 2)
        {
            // btrfs schedules a rescan after a relation change that leaves its numbers unknown;
            // here the commit works out the new parent's numbers itself (they equal a recount
            // after every commit), so there is never one to schedule or to skip.
            cmd.Options.Add(new Option<bool>("--rescan") { Description = "Accepted for btrfs-progs' scripts: no rescan is ever needed" });
            cmd.Options.Add(new Option<bool>("--no-rescan") { Description = "Accepted for btrfs-progs' scripts: no rescan is ever needed" });
        }
        cmd.SetAction(pr =>
        {
            var a = qgroups.Select(q => pr.GetValue(q)!).ToArray();
            var parsed = new ulong[a.Length];
            for (int i = 0; i < a.Length; i++)
                if (!TryParseQgroup(a[i], out parsed[i])) { ctx.Err.WriteLine($"reservoir qgroup {verb}: {a[i]}: not a qgroup id (level/id, e.g. 1/100)"); return 1; }
            var op = verb switch { "create" => OnlineSubvolume.QuotaOp.Create, "destroy" => OnlineSubvolume.QuotaOp.Destroy, "assign" => OnlineSubvolume.QuotaOp.Assign, _ => OnlineSubvolume.QuotaOp.Remove };
            return Run(ctx, $"qgroup {verb}", pr.GetValue(image)!, op, parsed[0], parsed.Length > 1 ? parsed[1] : 0,
                fs => fs.QuotaEnabled ? change(fs, parsed) : Errno.ENOTCONN,
                e => e switch
                {
                    Errno.EINVAL when verb is "assign" => $"{string.Join(" ", a)}: the parent must be of a higher level than the member",
                    Errno.EINVAL => $"{string.Join(" ", a)}: level-0 qgroups come and go with their subvolumes",
                    Errno.EBUSY => $"{string.Join(" ", a)}: it still has members",
                    Errno.ENOENT or Errno.EEXIST => $"{string.Join(" ", a)}: {e.Describe()}",
                    _ => null,
                });
        });
        return cmd;
    }
}

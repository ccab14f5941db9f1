using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir subvolume show`: a subvolume by its path (on a mount, or IMAGE PATH), or by
/// -r ID / -u UUID looked up on the filesystem the path is on (as btrfs-progs'); an image alone
/// shows its top level. The quota group's numbers print in btrfs-progs' units (-b/--raw,
/// -h, -H/--si, --iec, -k/-m/-g/-t).
/// </summary>
internal static class SubvolumeShowCommand
{
    public static Command Build(CliContext ctx)
    {
        var target = new Argument<string>("target") { Description = "A subvolume on a mounted Reservoir (with -r/-u: any path on it), or an unmounted image (then the path inside it; none: the top level)" };
        var path = new Argument<string>("path") { Description = "A subvolume, inside the image", Arity = ArgumentArity.ZeroOrOne };
        var rootId = new Option<ulong?>("--rootid", "-r") { Description = "Show the subvolume with this id instead (5 = the top level)" };
        var uuid = new Option<string?>("--uuid", "-u") { Description = "Show the subvolume with this uuid instead" };
        var format = CommonOptions.Format();
        var sizes = new SizeFormat.Options();
        sizes.Raw.Aliases.Add("-b");
        sizes.SiBase.Aliases.Add("-H");
        string[] shortUnits = ["-k", "-m", "-g", "-t"];
        for (int i = 0; i < shortUnits.Length; i++) sizes.Units[i].Aliases.Add(shortUnits[i]);
        var cmd = new Command("show", "Show a subvolume: ids, uuids, generation, creation time, flags, quota group") { target, path, rootId, uuid, format };
        sizes.AddTo(cmd);
        cmd.SetAction(pr =>
        {
            SizeFormat units;
            try { units = sizes.Read(pr); }
            catch (ArgumentException ex) { ctx.Err.WriteLine($"reservoir subvolume show: {ex.Message}"); return 2; }
            ulong? id = pr.GetValue(rootId);
            Guid? byUuid = null;
            if (pr.GetValue(uuid) is { } u)
            {
                if (!UuidText.TryParse(u, out var g)) { ctx.Err.WriteLine($"reservoir subvolume show: {u}: not a uuid"); return 2; }
                byUuid = g;
            }
            if (id != null && byUuid != null) { ctx.Err.WriteLine("reservoir subvolume show: -r and -u each name the subvolume: give one"); return 2; }
            string at = pr.GetValue(target)!;
            string? inside = pr.GetValue(path);
            SubvolumeShow? shown = File.Exists(at) ? Offline(ctx, at, inside, id, byUuid) : inside == null ? Online(ctx, at, id, byUuid) : null;
            if (shown == null)
            {
                if (!File.Exists(at) && inside != null) ctx.Err.WriteLine($"reservoir subvolume show: {at}: no such image");
                return 1;
            }
            if (CommonOptions.IsJson(pr, format)) ctx.Json(shown.ToJson());
            else shown.Print(ctx.Out, units);
            return 0;
        });
        return cmd;
    }

    private static string Which(ulong? id, Guid? uuid) => id is { } i ? $"no subvolume has id {i}" : $"no subvolume has uuid {UuidText.Of(uuid!.Value)}";

    private static SubvolumeShow? Online(CliContext ctx, string at, ulong? id, Guid? uuid)
    {
        var le = OnlineSubvolume.List(at, out var online);
        if (le != Errno.OK)
        {
            ctx.Err.WriteLine($"reservoir subvolume show: {at}: {(le == Errno.ENOTTY ? "not on a mounted Reservoir (give IMAGE PATH for an unmounted image)" : le.Describe())}");
            return null;
        }
        ulong sid;
        if (id is { } i) sid = i;
        else if (uuid is { } g)
        {
            var hit = online.FirstOrDefault(x => x.Uuid == g);
            if (hit.Id == 0) { ctx.Err.WriteLine($"reservoir subvolume show: {Which(null, g)}"); return null; }
            sid = hit.Id;
        }
        else if (OnlineSubvolume.SubvolumeIdOf(at) is { } own) sid = own;
        else { ctx.Err.WriteLine($"reservoir subvolume show: {at}: not a subvolume (give -r ID or -u UUID to show one by id or uuid)"); return null; }
        var rec = online.FirstOrDefault(x => x.Id == sid);
        if (sid != 5 && rec.Id != sid) { ctx.Err.WriteLine($"reservoir subvolume show: {(id != null ? Which(id, null) : $"{at}: subvolume {sid} is not listed")}"); return null; }
        // Quotas off answers ENOTCONN: no quota group section, as btrfs prints none.
        (ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive)? group = null;
        if (OnlineSubvolume.Qgroups(at, out var groups) == Errno.OK)
            group = groups.Where(q => q.Id == QgroupId.Of(0, sid)).Select(q => ((ulong, ulong, ulong, ulong, ulong)?)q).FirstOrDefault();
        return new SubvolumeShow(sid, sid == 5 ? "" : rec.Path, sid == 5 ? null : rec.Uuid, rec.ParentUuid,
            sid == 5 ? null : DateTimeOffset.FromUnixTimeSeconds(rec.Otime), rec.Generation, rec.Otransid, rec.Parent, rec.ReadOnly,
            online.Where(x => sid != 5 && x.ParentUuid == rec.Uuid).Select(x => x.Path).ToList(), group, rec.ReceivedUuid, rec.Stransid);
    }

    private static SubvolumeShow? Offline(CliContext ctx, string image, string? inside, ulong? id, Guid? uuid)
    {
        using var fs = FileCommands.Open(image, write: false);
        ulong node;
        string named = inside ?? "/";
        if (id is { } i) node = NodeIds.Encode(i, Filesystem.RootIno);
        else if (uuid is { } g)
        {
            var hit = fs.ListSubvolumes().FirstOrDefault(x => x.Uuid == g);
            if (hit.Id == 0) { ctx.Err.WriteLine($"reservoir subvolume show: {Which(null, g)}"); return null; }
            node = NodeIds.Encode(hit.Id, Filesystem.RootIno);
        }
        else
        {
            try { node = fs.GetInfo(named, followLinks: true).Attr.Ino; }
            catch (IOException ex) { ctx.Err.WriteLine($"reservoir subvolume show: {named}: {ex.Message}"); return null; }
        }
        var e = fs.Engine.ShowSubvolume(node, out var s);
        if (e != Errno.OK)
        {
            ctx.Err.WriteLine($"reservoir subvolume show: " + (id != null && e == Errno.ENOENT ? Which(id, null) : $"{named}: {(e == Errno.EINVAL ? "not a subvolume" : e.Describe())}"));
            return null;
        }
        var group = fs.Engine.QuotaEnabled
            ? fs.Engine.Qgroups().Where(q => q.Id == QgroupId.Of(0, s.Id)).Select(q => ((ulong, ulong, ulong, ulong, ulong)?)(q.Id, q.Referenced, q.Exclusive, q.MaxReferenced, q.MaxExclusive)).FirstOrDefault()
            : null;
        var snapshots = s.Uuid == Guid.Empty ? [] : fs.ListSubvolumes().Where(x => x.ParentUuid == s.Uuid).Select(x => x.Path).ToList();
        return new SubvolumeShow(s.Id, s.Id == 5 ? "" : s.Path, s.Uuid, s.ParentUuid, s.Otime.ToDateTime(), s.Generation, s.Otransid, s.ParentId, s.ReadOnly, snapshots, group,
            s.ReceivedUuid, s.Stransid);
    }
}

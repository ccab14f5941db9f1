using System.CommandLine;
using Reservoir.Common;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir subvolume list [-p] [-c] [-g] [-u] [-q] [-R] [-s] [-r] [-d] [-o|-a] [-G N] [-C N] [-t] [--sort=…] IMAGE|PATH`, on an
/// unmounted image or through a mount, printed as btrfs-progs prints `btrfs subvolume list`:
/// "ID 256 gen 15 top level 5 path home", with cgen (-c), parent (-p), parent_uuid (-q) and
/// uuid (-u) added in btrfs's order, only snapshots (-s, which adds cgen and otime, as btrfs
/// does) or only read-only subvolumes (-r), deleted ones not dropped yet (-d, path DELETED),
/// those directly in the path's subvolume (-o) or all marking the others (-a, "&lt;FS_TREE&gt;/"),
/// generation filters (-G, -C: N, +N, -N),
/// a tab-separated table (-t), and --sort by gen,
/// ogen, rootid or path. `--format json` prints every field.
/// </summary>
internal static class SubvolumeListCommand
{
    private readonly record struct Row(ulong Id, ulong Generation, ulong Otransid, ulong Parent, Guid Uuid, Guid ParentUuid, string Path, DateTimeOffset Otime, bool ReadOnly, Guid ReceivedUuid);

    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("image") { Description = "An unmounted image, or a directory on a mounted Reservoir" };
        var format = CommonOptions.Format();
        var parent = new Option<bool>("-p") { Description = "Print the parent id" };
        var cgen = new Option<bool>("-c") { Description = "Print the generation at creation (cgen)" };
        var gen = new Option<bool>("-g") { Description = "Print the generation (always printed; accepted as btrfs-progs does)" };
        var uuid = new Option<bool>("-u") { Description = "Print the uuid" };
        var puuid = new Option<bool>("-q") { Description = "Print the parent uuid (the snapshot source's)" };
        var ruuid = new Option<bool>("-R") { Description = "Print the received uuid (the sent subvolume's, for one made by receive)" };
        var snapshots = new Option<bool>("-s") { Description = "List snapshots only" };
        var readOnly = new Option<bool>("-r") { Description = "List read-only subvolumes only" };
        var table = new Option<bool>("-t") { Description = "Print a table" };
        var deleted = new Option<bool>("-d") { Description = "List deleted subvolumes whose space is not free yet (being dropped, or waiting for files of them to be closed)" };
        var below = new Option<bool>("-o") { Description = "Only the subvolumes directly in the subvolume holding the path (on a mount)" };
        var all = new Option<bool>("-a") { Description = "Every subvolume, those outside the subvolume holding the path with <FS_TREE>/ before their path (on a mount)" };
        var genFilter = new Option<string>("-G") { Description = "Only generation = N, or >= N with +N, <= N with -N" };
        var cgenFilter = new Option<string>("-C") { Description = "Only creation generation (cgen) = N, or >= N with +N, <= N with -N" };
        var sort = new Option<string>("--sort") { Description = "Sort by gen, ogen, rootid or path, comma separated, each with + (ascending, the default) or - in front" };
        var list = new Command("list", "List subvolumes: id, generation, parent, path") { image, format, parent, cgen, gen, uuid, puuid, ruuid, snapshots, readOnly, table, deleted, below, all, genFilter, cgenFilter, sort };
        list.SetAction(pr =>
        {
            var order = SortSpec.Parse(pr.GetValue(sort), SortKeys, (a, b) => a.Id.CompareTo(b.Id));
            string at = pr.GetValue(image)!;
            List<Row> rows;
            bool dead = pr.GetValue(deleted);
            if (Directory.Exists(at))
            {
                var le = OnlineSubvolume.List(at, out var online, out _, dead);
                if (le != Errno.OK)
                {
                    ctx.Err.WriteLine(le == Errno.ENOTTY ? $"reservoir subvolume list: {at}: not on a mounted Reservoir" : $"reservoir subvolume list: {le.Describe()}");
                    return 1;
                }
                rows = online.Select(s => new Row(s.Id, s.Generation, s.Otransid, s.Parent, s.Uuid, s.ParentUuid, dead ? Deleted : s.Path, DateTimeOffset.FromUnixTimeSeconds(s.Otime), s.ReadOnly, s.ReceivedUuid)).ToList();
            }
            else
            {
                using var fs = FileCommands.Open(at, write: false);
                if (dead)
                {
                    var de = fs.Engine.ListDeletedSubvolumes(out var gone);
                    if (de != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume list: {de.Describe()}"); return 1; }
                    rows = gone.Select(g => new Row(g.Id, g.Generation, 0, 0, Guid.Empty, Guid.Empty, Deleted, DateTimeOffset.UnixEpoch, false, Guid.Empty)).ToList();
                }
                else rows = fs.ListSubvolumes().Select(s => new Row(s.Id, s.Generation, s.Otransid, s.ParentId, s.Uuid, s.ParentUuid, s.Path, s.Otime.ToDateTime(), s.ReadOnly, s.ReceivedUuid)).ToList();
            }
            // -o and -a are about the subvolume holding the path: a mount's only.
            if (pr.GetValue(below) || pr.GetValue(all))
            {
                if (!Directory.Exists(at) || OnlineSubvolume.SubvolumeHolding(at) is not { } holder)
                {
                    ctx.Err.WriteLine($"reservoir subvolume list: -o and -a need a directory on a mounted Reservoir");
                    return 1;
                }
                if (pr.GetValue(below)) rows.RemoveAll(r => r.Parent != holder);
                else rows = rows.Select(r => r.Parent == holder ? r : r with { Path = "<FS_TREE>/" + r.Path }).ToList();
            }
            foreach (var (opt, name, value) in new[] { (genFilter, "-G", (Func<Row, ulong>)(r => r.Generation)), (cgenFilter, "-C", r => r.Otransid) })
            {
                if (pr.GetValue(opt) is not { } spec) continue;
                if (GenFilter(spec) is not { } keep) { ctx.Err.WriteLine($"reservoir subvolume list: {name} wants N, +N or -N, not '{spec}'"); return 2; }
                rows.RemoveAll(r => !keep(value(r)));
            }
            bool onlySnapshots = pr.GetValue(snapshots);
            if (onlySnapshots) rows.RemoveAll(r => r.ParentUuid == Guid.Empty);
            if (pr.GetValue(readOnly)) rows.RemoveAll(r => !r.ReadOnly);
            rows.Sort(order);
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(rows.Select(s => new
                {
                    id = s.Id, generation = s.Generation, cgen = s.Otransid, parent = s.Parent, top_level = s.Parent, path = s.Path,
                    uuid = Common.UuidText.Of(s.Uuid), parent_uuid = Common.UuidText.OrNull(s.ParentUuid), received_uuid = Common.UuidText.OrNull(s.ReceivedUuid),
                    otime = s.Otime.ToString("yyyy-MM-dd HH:mm:ss"), @readonly = s.ReadOnly,
                }));
                return 0;
            }
            // The columns btrfs-progs prints, in its order; -s adds cgen and otime.
            bool wc = pr.GetValue(cgen) || onlySnapshots, wp = pr.GetValue(parent), wq = pr.GetValue(puuid), wu = pr.GetValue(uuid), wr = pr.GetValue(ruuid);
            static string Uuid(Guid g) => Common.UuidText.OrDash(g);
            var columns = new List<(string Name, Func<Row, string> Value)> { ("ID", r => r.Id.ToString()), ("gen", r => r.Generation.ToString()) };
            if (wc) columns.Add(("cgen", r => r.Otransid.ToString()));
            if (wp) columns.Add(("parent", r => r.Parent.ToString()));
            columns.Add(("top level", r => r.Parent.ToString()));
            if (onlySnapshots) columns.Add(("otime", r => r.Otime.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss")));
            if (wq) columns.Add(("parent_uuid", r => Uuid(r.ParentUuid).PadRight(36)));
            if (wr) columns.Add(("received_uuid", r => Uuid(r.ReceivedUuid).PadRight(36)));
            if (wu) columns.Add(("uuid", r => Uuid(r.Uuid)));
            columns.Add(("path", r => r.Path));
            if (pr.GetValue(table))
            {
                ctx.Out.WriteLine(string.Join('\t', columns.Select(c => c.Name)) + "\t");
                ctx.Out.WriteLine(string.Join('\t', columns.Select(c => new string('-', c.Name.Length))) + "\t");
                foreach (var r in rows) ctx.Out.WriteLine(string.Join('\t', columns.Select(c => c.Value(r))));
            }
            else
                foreach (var r in rows) ctx.Out.WriteLine(string.Join(' ', columns.Select(c => $"{c.Name} {c.Value(r)}")));
            return 0;
        });
        return list;
    }

    /// <summary>What -d prints as a deleted subvolume's path, as btrfs-progs does (its name is
    /// gone; its id, generation and "top level 0" stay until its tree is dropped).</summary>
    private const string Deleted = "DELETED";

    /// <summary>-G/-C's value as btrfs-progs reads it: N (equal), +N (at least), -N (at most).</summary>
    internal static Func<ulong, bool>? GenFilter(string spec)
    {
        char sign = spec.Length > 0 && spec[0] is '+' or '-' ? spec[0] : '=';
        if (!ulong.TryParse(sign == '=' ? spec : spec[1..], System.Globalization.NumberStyles.None, null, out ulong n)) return null;
        return sign switch { '+' => g => g >= n, '-' => g => g <= n, _ => g => g == n };
    }

    /// <summary>--sort's keys, as btrfs-progs names them.</summary>
    private static readonly Dictionary<string, Comparison<Row>> SortKeys = new()
    {
        ["gen"] = (a, b) => a.Generation.CompareTo(b.Generation),
        ["ogen"] = (a, b) => a.Otransid.CompareTo(b.Otransid),
        ["rootid"] = (a, b) => a.Id.CompareTo(b.Id),
        ["path"] = (a, b) => string.CompareOrdinal(a.Path, b.Path),
    };
}

using System.CommandLine;
using Reservoir.Common;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir qgroup show [-p] [-c] [-r] [-e] [-f|-F] [--raw|--human-readable|--iec|--si|--kbytes…]
/// [--sort=…] [--sync] IMAGE [PATH] | MOUNTED-PATH`, on an unmounted image or through a mount, printed as
/// btrfs-progs prints `btrfs qgroup show`: Qgroupid, Referenced and Exclusive, the limits only
/// with -r and -e, parents and members with -p and -c, and the Path column (the subvolume's
/// path, `<toplevel>`, `<under deletion>` for a deleted subvolume whose space the cleaner is
/// still giving back, `<N member qgroups>` for a higher group). `--format json` prints every
/// field, in bytes.
/// </summary>
internal static class QgroupShowCommand
{
    private readonly record struct Row(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive, string Path);

    public static Command Build(CliContext ctx, string imageOrMount)
    {
        var image = new Argument<string>("image") { Description = imageOrMount };
        var inside = new Argument<string>("path") { Description = "With -f or -F on an unmounted image: a path inside it (default /)", Arity = ArgumentArity.ZeroOrOne };
        var only = new Option<bool>("-f") { Description = "Only the qgroup of the subvolume holding the path (its level-0 group)" };
        var withAncestors = new Option<bool>("-F") { Description = "The qgroup of the subvolume holding the path and every group above it" };
        var format = CommonOptions.Format();
        var parents = new Option<bool>("-p") { Description = "Print each qgroup's parents" };
        var childs = new Option<bool>("-c") { Description = "Print each qgroup's members" };
        var maxRfer = new Option<bool>("-r") { Description = "Print the limit on referenced bytes" };
        var maxExcl = new Option<bool>("-e") { Description = "Print the limit on exclusive bytes" };
        var sort = new Option<string>("--sort") { Description = "Sort by qgroupid, rfer, excl, max_rfer, max_excl or path, comma separated, each with + (ascending, the default) or - in front" };
        var sync = new Option<bool>("--sync") { Description = "Commit before reading (Reservoir always does: the numbers are those of a commit made first)" };
        var sizes = new SizeFormat.Options();
        var show = new Command("show", "List quota groups with referenced and exclusive bytes, limits and paths") { image, inside, format, parents, childs, maxRfer, maxExcl, only, withAncestors, sort, sync };
        sizes.AddTo(show);
        show.SetAction(pr =>
        {
            var size = sizes.Read(pr);
            var order = SortSpec.Parse(pr.GetValue(sort), SortKeys, (a, b) => a.Id.CompareTo(b.Id));
            string at = pr.GetValue(image)!;
            List<Row> rows;
            IReadOnlyList<(ulong Child, ulong Parent)> relations;
            bool filter = pr.GetValue(only) || pr.GetValue(withAncestors);
            ulong holder = 5; // the subvolume holding the path, for -f and -F
            if (Directory.Exists(at))
            {
                if (filter && OnlineSubvolume.SubvolumeHolding(at) is { } h) holder = h;
                var oe = OnlineSubvolume.Qgroups(at, out var online);
                if (oe != Errno.OK)
                {
                    ctx.Err.WriteLine(oe switch { Errno.ENOTCONN => "reservoir qgroup show: quotas are not enabled", Errno.ENOTTY => $"reservoir qgroup show: {at}: not on a mounted Reservoir", _ => $"reservoir qgroup show: {oe.Describe()}" });
                    return 1;
                }
                var le = OnlineSubvolume.QgroupRelations(at, out var rel);
                if (le != Errno.OK) { ctx.Err.WriteLine($"reservoir qgroup show: {le.Describe()}"); return 1; }
                relations = rel;
                var se = OnlineSubvolume.List(at, out var subvolumes);
                if (se != Errno.OK) { ctx.Err.WriteLine($"reservoir qgroup show: {se.Describe()}"); return 1; }
                var paths = subvolumes.ToDictionary(s => s.Id, s => s.Path);
                rows = online.Select(g => new Row(g.Id, g.Referenced, g.Exclusive, g.MaxReferenced, g.MaxExclusive, PathOf(g.Id, paths, relations))).ToList();
            }
            else
            {
                using var api = FileCommands.Open(at, write: false);
                var fs = api.Engine;
                if (!fs.QuotaEnabled) { ctx.Err.WriteLine("reservoir qgroup show: quotas are not enabled"); return 1; }
                if (filter) holder = Reservoir.Engine.Inodes.NodeIds.Decode(api.GetInfo(pr.GetValue(inside) ?? "/", followLinks: true).Attr.Ino).TreeId;
                relations = fs.QgroupRelations();
                var le = fs.ListSubvolumes(out var subvolumes);
                if (le != Errno.OK) { ctx.Err.WriteLine($"reservoir qgroup show: {le.Describe()}"); return 1; }
                var paths = subvolumes.ToDictionary(s => s.Id, s => s.Path);
                rows = fs.Qgroups().Select(g => new Row(g.Id, g.Referenced, g.Exclusive, g.MaxReferenced, g.MaxExclusive, PathOf(g.Id, paths, relations))).ToList();
            }
            if (filter)
            {
                // -f: the holder's own group; -F: it and every group above it, as btrfs-progs.
                var keep = new HashSet<ulong> { QgroupId.Of(0, holder) };
                if (pr.GetValue(withAncestors))
                    for (var frontier = new List<ulong>(keep); frontier.Count > 0;)
                        frontier = relations.Where(r => frontier.Contains(r.Child) && keep.Add(r.Parent)).Select(r => r.Parent).ToList();
                rows.RemoveAll(r => !keep.Contains(r.Id));
            }
            rows.Sort(order);
            string[] ParentsOf(ulong id) => relations.Where(r => r.Child == id).Select(r => QgroupId.Show(r.Parent)).ToArray();
            string[] ChildrenOf(ulong id) => relations.Where(r => r.Parent == id).Select(r => QgroupId.Show(r.Child)).ToArray();
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(rows.Select(g => new
                {
                    qgroupid = QgroupId.Show(g.Id), referenced = g.Referenced, exclusive = g.Exclusive,
                    max_referenced = g.MaxReferenced == ulong.MaxValue ? (ulong?)null : g.MaxReferenced,
                    max_exclusive = g.MaxExclusive == ulong.MaxValue ? (ulong?)null : g.MaxExclusive,
                    path = g.Path,
                    parents = ParentsOf(g.Id),
                    children = ChildrenOf(g.Id),
                }));
                return 0;
            }
            bool wr = pr.GetValue(maxRfer), we = pr.GetValue(maxExcl), wp = pr.GetValue(parents), wc = pr.GetValue(childs);
            string Limit(ulong v) => v == ulong.MaxValue ? "none" : size.Format(v);
            string List(string[] ids) => ids.Length == 0 ? "-" : string.Join(",", ids);
            var table = new List<string[]> { Header(wr, we, wp, wc) };
            foreach (var g in rows)
            {
                var cells = new List<string> { QgroupId.Show(g.Id), size.Format(g.Referenced), size.Format(g.Exclusive) };
                if (wr) cells.Add(Limit(g.MaxReferenced));
                if (we) cells.Add(Limit(g.MaxExclusive));
                if (wp) cells.Add(List(ParentsOf(g.Id)));
                if (wc) cells.Add(List(ChildrenOf(g.Id)));
                cells.Add(g.Path);
                table.Add([.. cells]);
            }
            Print(ctx.Out, table);
            return 0;
        });
        return show;
    }

    private static string[] Header(bool wr, bool we, bool wp, bool wc)
    {
        var h = new List<string> { "Qgroupid", "Referenced", "Exclusive" };
        if (wr) h.Add("Max referenced");
        if (we) h.Add("Max exclusive");
        if (wp) h.Add("Parent");
        if (wc) h.Add("Child");
        h.Add("Path");
        return [.. h];
    }

    /// <summary>The table as btrfs-progs lays it out: the id, parents, members and path
    /// left-aligned, the sizes right-aligned, each column as wide as its widest cell, a dashed
    /// line under the header.</summary>
    private static void Print(TextWriter o, List<string[]> table)
    {
        var head = table[0];
        int n = head.Length;
        var width = new int[n];
        foreach (var row in table) for (int i = 0; i < n; i++) width[i] = Math.Max(width[i], row[i].Length);
        bool Left(int i) => i == 0 || head[i] is "Parent" or "Child" or "Path";
        string Line(string[] cells)
        {
            var parts = new string[n];
            for (int i = 0; i < n; i++)
                parts[i] = i == n - 1 ? cells[i] : Left(i) ? cells[i].PadRight(width[i]) : cells[i].PadLeft(width[i]);
            return string.Join("   ", parts).TrimEnd();
        }
        o.WriteLine(Line(head));
        o.WriteLine(Line(head.Select(h => new string('-', h.Length)).ToArray()));
        foreach (var row in table.Skip(1)) o.WriteLine(Line(row));
    }

    /// <summary>What the Path column says about a qgroup.</summary>
    private static string PathOf(ulong id, Dictionary<ulong, string> paths, IReadOnlyList<(ulong Child, ulong Parent)> relations)
    {
        if (QgroupId.Level(id) > 0)
        {
            int members = relations.Count(r => r.Parent == id);
            return members == 1 ? "<1 member qgroup>" : $"<{members} member qgroups>";
        }
        ulong subvolume = QgroupId.Id(id);
        if (subvolume == 5) return "<toplevel>";
        // Level-0 groups go with their subvolume's tree: one without a listed subvolume is of a
        // deleted subvolume the cleaner has not finished (its usage falls as it frees).
        return paths.TryGetValue(subvolume, out var p) ? p : "<under deletion>";
    }

    /// <summary>--sort's keys, as btrfs-progs names them.</summary>
    private static readonly Dictionary<string, Comparison<Row>> SortKeys = new()
    {
        ["qgroupid"] = (a, b) => a.Id.CompareTo(b.Id),
        ["rfer"] = (a, b) => a.Referenced.CompareTo(b.Referenced),
        ["excl"] = (a, b) => a.Exclusive.CompareTo(b.Exclusive),
        ["max_rfer"] = (a, b) => a.MaxReferenced.CompareTo(b.MaxReferenced),
        ["max_excl"] = (a, b) => a.MaxExclusive.CompareTo(b.MaxExclusive),
        ["path"] = (a, b) => string.CompareOrdinal(a.Path, b.Path),
    };
}

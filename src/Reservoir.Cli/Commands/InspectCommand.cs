using System.CommandLine;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tx;
using Reservoir.Format;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir inspect super|tree|inode|space IMAGE …`: read-only views of the on-disk
/// structures, as text or JSON.</summary>
internal static class InspectCommand
{
    public static Command Build(CliContext ctx)
    {
        var cmd = new Command("inspect", "Show on-disk structures of an unmounted image");
        cmd.Subcommands.Add(Super(ctx));
        cmd.Subcommands.Add(TreeCmd(ctx));
        cmd.Subcommands.Add(InodeCmd(ctx));
        cmd.Subcommands.Add(SpaceCmd(ctx));
        return cmd;
    }

    internal static ImageMount MountRo(string path)
    {
        var dev = FileBlockDevice.Open(path, readOnly: true);
        try { return new ImageMount(Filesystem.Mount(dev, new MountOptions { ReadOnly = true, CommitIntervalMs = 0 }), dev); }
        catch { dev.Dispose(); throw; }
    }

    private static Command Super(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var format = CommonOptions.Format();
        var c = new Command("super", "Print the superblock (the newest valid copy) and the state of every copy") { image, format };
        c.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            using var dev = FileBlockDevice.Open(pr.GetValue(image)!, readOnly: true);
            var (sb, notes) = Filesystem.ReadSuperblock(dev);
            var copies = FormatConstants.SuperblockOffsets.Where(o => o + FormatConstants.SuperblockSize <= dev.Size).ToList();
            if (json)
            {
                ctx.Json(new
                {
                    magic = "RSRVOIR1", version = sb.Version, fsid = sb.Fsid, label = sb.Label, generation = sb.Generation,
                    total_bytes = sb.TotalBytes, group_size = sb.EffectiveGroupSize, bytes_used = sb.BytesUsed, block_size = sb.BlockSize, node_size = sb.NodeSize,
                    root_tree = sb.RootTreeBytenr, root_level = sb.RootTreeLevel, compat = sb.Compat, compat_ro = sb.CompatRo, incompat = sb.Incompat,
                    created = sb.Created.ToDateTime(), default_subvolume = sb.DefaultSubvolume, flags = sb.Flags,
                    log_start = sb.LogStart, origin_drops_missing_since = sb.OriginDropsMissingSince, copies, notes,
                });
                return 0;
            }
            ctx.Out.WriteLine($"magic              RSRVOIR1 (format version {sb.Version})");
            ctx.Out.WriteLine($"fsid               {sb.Fsid}");
            ctx.Out.WriteLine($"label              {sb.Label}");
            ctx.Out.WriteLine($"generation         {sb.Generation}");
            ctx.Out.WriteLine($"total_bytes        {sb.TotalBytes} ({Units.Human(sb.TotalBytes)})");
            ctx.Out.WriteLine($"group_size         {sb.EffectiveGroupSize} ({Units.Human(sb.EffectiveGroupSize)}{((sb.Incompat & Features.IncompatGroupSize) != 0 ? ", stored: resized since mkfs" : "")})");
            ctx.Out.WriteLine($"bytes_used         {sb.BytesUsed} ({Units.Human(sb.BytesUsed)})");
            ctx.Out.WriteLine($"block_size         {sb.BlockSize}");
            ctx.Out.WriteLine($"node_size          {sb.NodeSize}");
            ctx.Out.WriteLine($"root_tree          {sb.RootTreeBytenr} level {sb.RootTreeLevel}");
            var named = Features.Names(sb.CompatRo, sb.Incompat).ToList();
            ctx.Out.WriteLine($"features           compat 0x{sb.Compat:x} compat_ro 0x{sb.CompatRo:x} incompat 0x{sb.Incompat:x}{(named.Count > 0 ? $" ({string.Join(", ", named)})" : "")}");
            ctx.Out.WriteLine($"log_start          {(sb.LogStart == 0 ? "none (no fsync log)" : sb.LogStart.ToString())}");
            if (sb.OriginDropsMissingSince != 0)
                ctx.Out.WriteLine($"origin_drops       pending since transaction {sb.OriginDropsMissingSince} (a read-write mount after a crash notes them again)");
            ctx.Out.WriteLine($"created            {sb.Created.ToDateTime():u}");
            ctx.Out.WriteLine($"superblock copies  {string.Join(", ", copies)}");
            foreach (var n in notes) ctx.Out.WriteLine($"warning            {n}");
            return 0;
        });
        return c;
    }

    private static Command TreeCmd(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var tree = new Option<string>("--tree", "-t") { Description = "root, extent, csum, fs, or a tree id", DefaultValueFactory = _ => "fs" };
        var nodes = new Option<bool>("--nodes") { Description = "List nodes instead of items" };
        var format = CommonOptions.Format();
        var c = new Command("tree", "Dump a tree's items (or nodes)") { image, tree, nodes, format };
        c.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            using var mounted = MountRo(pr.GetValue(image)!);
            var fs = mounted.Fs;
            ulong id = TreeDump.ParseTree(pr.GetValue(tree)!);
            if (pr.GetValue(nodes))
            {
                var list = TreeDump.Nodes(fs, id);
                if (json) ctx.Json(list);
                else foreach (var n in list) ctx.Out.WriteLine($"node {n.Bytenr} level {n.Level} items {n.Items} gen {n.Generation}");
                return 0;
            }
            var items = TreeDump.Items(fs, id);
            if (json) ctx.Json(items);
            else foreach (var i in items) ctx.Out.WriteLine($"({i.ObjectId} {i.Type} {i.Offset}) size {i.Size}: {i.Description}");
            return 0;
        });
        return c;
    }

    private static Command InodeCmd(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var target = new Argument<string>("path-or-inode");
        var format = CommonOptions.Format();
        var c = new Command("inode", "Show an inode and its extents") { image, target, format };
        c.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            using var rfs = ReservoirFileSystem.Open(pr.GetValue(image)!, new MountOptions { ReadOnly = true, CommitIntervalMs = 0 });
            string t = pr.GetValue(target)!;
            InodeAttr a;
            var e = ulong.TryParse(t, out var ino) ? rfs.Engine.GetAttr(ino, out a) : rfs.Posix.Lstat(t, out a);
            if (e != Errno.OK) { ctx.Err.WriteLine($"reservoir inspect: {t}: {e.Describe()}"); return 1; }
            List<ExtentMapping> map = new();
            if (a.IsReg || a.IsLnk) rfs.Engine.ExtentMap(a.Ino, out map);
            if (json) { ctx.Json(new { inode = a, extents = map }); return 0; }
            ctx.Out.WriteLine($"inode {a.Ino} mode {Convert.ToString(a.Mode, 8)} nlink {a.Nlink} uid {a.Uid} gid {a.Gid} size {a.Size} blocks {a.Blocks} generation {a.Generation}");
            ctx.Out.WriteLine($"  atime {a.Atime.ToDateTime():O}  mtime {a.Mtime.ToDateTime():O}  ctime {a.Ctime.ToDateTime():O}");
            foreach (var m in map)
                ctx.Out.WriteLine($"  [{m.FileOffset}, +{m.Length}) {m.Type} disk {m.DiskBytenr}+{m.ExtentOffset} (extent {m.DiskLength} bytes, gen {m.Generation})");
            return 0;
        });
        return c;
    }

    private static Command SpaceCmd(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var format = CommonOptions.Format();
        var c = new Command("space", "Show block groups and space counters") { image, format };
        c.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            using var mounted = MountRo(pr.GetValue(image)!);
            var fs = mounted.Fs;
            var s = fs.Space();
            var groups = fs.BlockGroups().Select(g => new { start = g.Start, length = g.Length, type = g.Type, used = g.Used, capacity = g.Capacity }).ToList();
            if (json) { ctx.Json(new { space = s, block_groups = groups }); return 0; }
            ctx.Out.WriteLine($"device        {Units.Human(s.DeviceBytes)}");
            ctx.Out.WriteLine($"data          {Units.Human(s.DataUsed)} used of {Units.Human(s.DataTotal)}");
            ctx.Out.WriteLine($"metadata      {Units.Human(s.MetaUsed)} used of {Units.Human(s.MetaTotal)} (global reserve {Units.Human(s.GlobalReserve)})");
            ctx.Out.WriteLine($"unallocated   {Units.Human(s.Unallocated)}");
            foreach (var g in groups) ctx.Out.WriteLine($"  block group {g.start,14} +{Units.Human(g.length),-9} {g.type,-9} used {Units.Human(g.used)}");
            return 0;
        });
        return c;
    }
}

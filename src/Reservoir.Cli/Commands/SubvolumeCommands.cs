using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir subvolume create|delete|list IMAGE …` on an unmounted image, with
/// output shaped like btrfs-progs' (`ID 256 gen 9 top level 5 path sv`). Paths are inside the
/// image, from the top-level subvolume's root.</summary>
internal static class SubvolumeCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Subvolume(ctx)];

    private static Command Subvolume(CliContext ctx)
    {
        var cmd = new Command("subvolume", "Create, delete and list subvolumes (independent file trees)");

        var image = new Argument<string>("image");
        var path = new Argument<string[]>("path") { Description = "Where to create it, inside the image (e.g. /home)", Arity = ArgumentArity.OneOrMore };
        var create = new Command("create", "Create empty subvolumes") { image, path };
        create.SetAction(pr => Each(ctx, "create", pr.GetValue(image)!, pr.GetValue(path)!, (fs, p) =>
        {
            fs.CreateSubvolume(p);
            ctx.Out.WriteLine($"Create subvolume '{p}'");
        }));

        var image2 = new Argument<string>("image");
        var path2 = new Argument<string[]>("path") { Description = "The subvolumes to delete, inside the image", Arity = ArgumentArity.OneOrMore };
        var delete = new Command("delete", "Delete subvolumes with everything in them (their space is free when the command returns)") { image2, path2 };
        delete.Aliases.Add("del");
        delete.SetAction(pr => Each(ctx, "delete", pr.GetValue(image2)!, pr.GetValue(path2)!, (fs, p) =>
        {
            fs.DeleteSubvolume(p);
            ctx.Out.WriteLine($"Delete subvolume '{p}'");
        }));

        var image3 = new Argument<string>("image");
        var format = CommonOptions.Format();
        var list = new Command("list", "List subvolumes: id, generation, parent, path") { image3, format };
        list.SetAction(pr =>
        {
            using var fs = ReservoirFileSystem.Open(pr.GetValue(image3)!, new Engine.Tx.MountOptions { ReadOnly = true, CommitIntervalMs = 0 });
            var all = fs.ListSubvolumes();
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(all.Select(s => new
                {
                    id = s.Id, generation = s.Generation, parent = s.ParentId, top_level = s.ParentId, path = s.Path, uuid = s.Uuid,
                    otime = s.Otime.ToDateTime().ToString("yyyy-MM-dd HH:mm:ss"), @readonly = s.ReadOnly,
                }));
                return 0;
            }
            foreach (var s in all) ctx.Out.WriteLine($"ID {s.Id} gen {s.Generation} top level {s.ParentId} path {s.Path}");
            return 0;
        });

        cmd.Subcommands.Add(create);
        cmd.Subcommands.Add(delete);
        cmd.Subcommands.Add(list);
        return cmd;
    }

    /// <summary>Runs an action per path on the image opened for writing; the first failure is
    /// reported (with the path) and ends the command with status 1, as btrfs-progs does.</summary>
    private static int Each(CliContext ctx, string verb, string image, string[] paths, Action<ReservoirFileSystem, string> act)
    {
        using var fs = ReservoirFileSystem.Open(image, new Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        foreach (var p in paths)
        {
            try { act(fs, p); }
            catch (IOException ex)
            {
                ctx.Err.WriteLine($"reservoir subvolume {verb}: {p}: {ex.Message}");
                return 1;
            }
        }
        return 0;
    }
}

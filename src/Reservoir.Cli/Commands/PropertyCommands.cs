using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir property get|set IMAGE PATH ro [true|false]`: the read-only property of
/// a subvolume, as `btrfs property` has it.</summary>
internal static class PropertyCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Property(ctx)];

    private static Command Property(CliContext ctx)
    {
        var cmd = new Command("property", "Get or set properties of a subvolume (ro)");
        var image = new Argument<string>("image");
        var path = new Argument<string>("path") { Description = "A subvolume, inside the image" };
        var name = new Argument<string>("name") { Description = "The property: ro", DefaultValueFactory = _ => "ro", Arity = ArgumentArity.ZeroOrOne };
        var get = new Command("get", "Show a property") { image, path, name };
        get.SetAction(pr =>
        {
            if (pr.GetValue(name) != "ro") { ctx.Err.WriteLine($"reservoir property get: unknown property '{pr.GetValue(name)}' (known: ro)"); return 1; }
            using var fs = FileCommands.Open(pr.GetValue(image)!, write: false);
            var node = fs.GetInfo(pr.GetValue(path)!, followLinks: true).Attr.Ino;
            var e = fs.Engine.GetSubvolumeReadOnly(node, out bool ro);
            if (e != Errno.OK) { ctx.Err.WriteLine($"reservoir property get: {pr.GetValue(path)}: {(e == Errno.EINVAL ? "not a subvolume" : e.Describe())}"); return 1; }
            ctx.Out.WriteLine($"ro={(ro ? "true" : "false")}");
            return 0;
        });
        var image2 = new Argument<string>("image") { Description = "An unmounted image, or a subvolume on a mounted Reservoir (then: PATH ro true|false)" };
        var path2 = new Argument<string>("path") { Description = "A subvolume, inside the image" };
        var name2 = new Argument<string>("name") { Description = "The property: ro" };
        var value = new Argument<string?>("value") { Description = "true or false", Arity = ArgumentArity.ZeroOrOne };
        var set = new Command("set", "Set a property") { image2, path2, name2, value };
        set.SetAction(pr =>
        {
            if (Directory.Exists(pr.GetValue(image2)) && pr.GetValue(value) == null)
            {
                // Online: PATH ro true|false, through the mount's ioctl (root only).
                string at = pr.GetValue(image2)!;
                if (pr.GetValue(path2) != "ro") { ctx.Err.WriteLine($"reservoir property set: unknown property '{pr.GetValue(path2)}' (known: ro)"); return 1; }
                bool on = pr.GetValue(name2) switch { "true" => true, "false" => false, var v => throw new ArgumentException($"value '{v}': expected true or false") };
                var oe = OnlineSubvolume.SetReadOnly(at, on);
                if (oe != Errno.OK) { ctx.Err.WriteLine($"reservoir property set: {at}: {(oe == Errno.EINVAL ? "not a subvolume" : oe == Errno.ENOTTY ? "not on a mounted Reservoir" : oe.Describe())}"); return 1; }
                return 0;
            }
            if (pr.GetValue(value) == null) { ctx.Err.WriteLine("reservoir property set: expected IMAGE PATH ro true|false, or PATH ro true|false on a mount"); return 1; }
            if (pr.GetValue(name2) != "ro") { ctx.Err.WriteLine($"reservoir property set: unknown property '{pr.GetValue(name2)}' (known: ro)"); return 1; }
            bool ro = pr.GetValue(value) switch { "true" => true, "false" => false, var v => throw new ArgumentException($"value '{v}': expected true or false") };
            using var fs = FileCommands.Open(pr.GetValue(image2)!, write: true);
            var node = fs.GetInfo(pr.GetValue(path2)!, followLinks: true).Attr.Ino;
            var e = fs.Engine.SetSubvolumeReadOnly(node, ro);
            if (e != Errno.OK) { ctx.Err.WriteLine($"reservoir property set: {pr.GetValue(path2)}: {(e == Errno.EINVAL ? "not a subvolume" : e.Describe())}"); return 1; }
            return 0;
        });
        cmd.Subcommands.Add(get);
        cmd.Subcommands.Add(set);
        return cmd;
    }
}

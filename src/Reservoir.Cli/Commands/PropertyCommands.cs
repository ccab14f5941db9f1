using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir property get|set|list`, as `btrfs property` has them, online (`get [-t TYPE]
/// OBJECT [NAME]`, `set OBJECT NAME VALUE`, `list OBJECT`, where OBJECT is a path on a mounted
/// Reservoir) and offline (the same with IMAGE PATH for OBJECT). Two properties: `ro` of a
/// subvolume (its root directory is the object) and `label` of the filesystem (a mount's root
/// online, "/" in an image offline). btrfs's answers are kept: `get` without a name prints
/// every property the object has (nothing, and success, for a plain directory); a name the
/// object does not have is "not compatible" and fails; an unknown name fails.
/// </summary>
internal static class PropertyCommands
{
    /// <summary>The properties, with btrfs-progs' descriptions (what `property list` prints).</summary>
    private static readonly (string Name, ObjectType Type, string Description)[] Known =
    [
        ("ro", ObjectType.Subvol, "read-only status of a subvolume"),
        ("label", ObjectType.Filesystem, "label of the filesystem"),
    ];

    [Flags]
    private enum ObjectType { None = 0, Subvol = 1, Filesystem = 2, Inode = 4, Device = 8 }

    public static IEnumerable<Command> Build(CliContext ctx) => [Property(ctx)];

    private static Command Property(CliContext ctx)
    {
        var cmd = new Command("property", "Get, set or list the properties of a subvolume (ro) or the filesystem (label)");
        cmd.Subcommands.Add(Get(ctx));
        cmd.Subcommands.Add(Set(ctx));
        cmd.Subcommands.Add(List(ctx));
        return cmd;
    }

    private static Option<string?> TypeOption() =>
        new("--type", "-t") { Description = "The object's type: subvol (s), filesystem (f), inode (i) or device (d); by default every type the object is" };

    private static Command Get(CliContext ctx)
    {
        var first = new Argument<string>("object") { Description = "A path on a mounted Reservoir; or an unmounted image, then the path inside it" };
        var second = new Argument<string?>("name-or-path") { Description = "Online: the property (ro, label); offline: the path inside the image", Arity = ArgumentArity.ZeroOrOne };
        var third = new Argument<string?>("name") { Description = "Offline: the property (ro, label)", Arity = ArgumentArity.ZeroOrOne };
        var type = TypeOption();
        var format = CommonOptions.Format();
        var get = new Command("get", "Print a property, or every property of the object") { first, second, third, type, format };
        get.SetAction(pr =>
        {
            var o = ObjectOf(ctx, "get", pr.GetValue(first)!, pr.GetValue(second), pr.GetValue(third), pr.GetValue(type), wantsValue: false, out string? name, out _);
            if (o == null) return 1;
            using (o)
            {
                // JSON: one object, each property the object has by its name (ro a boolean).
                if (name != null && Find(ctx, "get", name, o.Types) == null) return 1;
                var values = new Dictionary<string, object>();
                foreach (var p in Known)
                {
                    if ((name != null && p.Name != name) || (o.Types & p.Type) == 0) continue;
                    var v = Read(ctx, o, p.Name);
                    if (v == null) return 1;
                    values[p.Name] = v;
                }
                if (CommonOptions.IsJson(pr, format)) ctx.Json(values);
                else
                    foreach (var (k, v) in values) ctx.Out.WriteLine($"{k}={(v is bool b ? (b ? "true" : "false") : v)}");
                return 0;
            }
        });
        return get;
    }

    private static Command Set(CliContext ctx)
    {
        var first = new Argument<string>("object") { Description = "A path on a mounted Reservoir (then: NAME VALUE); or an unmounted image (then: PATH NAME VALUE)" };
        var rest = new Argument<string[]>("arguments") { Description = "NAME VALUE online; PATH NAME VALUE offline", Arity = new ArgumentArity(2, 3) };
        var type = TypeOption();
        var set = new Command("set", "Set a property: ro (true or false) of a subvolume, label of the filesystem") { first, rest, type };
        set.SetAction(pr =>
        {
            var a = pr.GetValue(rest)!;
            bool online = Directory.Exists(pr.GetValue(first));
            if (a.Length != (online ? 2 : 3))
            {
                ctx.Err.WriteLine("reservoir property set: expected PATH NAME VALUE on a mount, or IMAGE PATH NAME VALUE");
                return 1;
            }
            var o = ObjectOf(ctx, "set", pr.GetValue(first)!, a[0], online ? null : a[1], pr.GetValue(type), wantsValue: true, out string? name, out _);
            if (o == null) return 1;
            using (o)
            {
                var p = Find(ctx, "set", name!, o.Types);
                if (p == null) return 1;
                string value = a[^1];
                Errno e;
                if (p.Value.Name == "ro")
                {
                    bool? ro = value switch { "true" => true, "false" => false, _ => null };
                    if (ro == null) { ctx.Err.WriteLine($"reservoir property set: invalid value for property: {value} (true or false)"); return 1; }
                    e = o.Online ? OnlineSubvolume.SetReadOnly(o.Where, ro.Value) : o.Image!.Engine.SetSubvolumeReadOnly(o.Node, ro.Value);
                }
                else
                {
                    if (System.Text.Encoding.UTF8.GetByteCount(value) >= 256) { ctx.Err.WriteLine($"reservoir property set: label '{value}' is longer than 255 bytes"); return 1; }
                    e = o.Online ? OnlineSubvolume.SetLabel(o.Where, value) : o.Image!.Engine.SetLabel(value);
                }
                if (e == Errno.OK) return 0;
                ctx.Err.WriteLine($"reservoir property set: {o.Where}: {Describe(e)}");
                return 1;
            }
        });
        return set;
    }

    private static Command List(CliContext ctx)
    {
        var first = new Argument<string>("object") { Description = "A path on a mounted Reservoir; or an unmounted image, then the path inside it" };
        var second = new Argument<string?>("path") { Description = "Offline: the path inside the image", Arity = ArgumentArity.ZeroOrOne };
        var type = TypeOption();
        var format = CommonOptions.Format();
        var list = new Command("list", "List the properties the object has") { first, second, type, format };
        list.SetAction(pr =>
        {
            bool online = Directory.Exists(pr.GetValue(first));
            if (online && pr.GetValue(second) != null) { ctx.Err.WriteLine("reservoir property list: expected PATH on a mount, or IMAGE PATH"); return 1; }
            var o = ObjectOf(ctx, "list", pr.GetValue(first)!, online ? null : pr.GetValue(second), null, pr.GetValue(type), wantsValue: false, out _, out _);
            if (o == null) return 1;
            using (o)
            {
                var has = Known.Where(p => (o.Types & p.Type) != 0).ToList();
                if (CommonOptions.IsJson(pr, format)) ctx.Json(has.Select(p => new { name = p.Name, description = p.Description }));
                else
                    foreach (var p in has) ctx.Out.WriteLine($"{p.Name,-20}{p.Description}");
            }
            return 0;
        });
        return list;
    }

    /// <summary>The object a command names, with the types it is: online when
    /// <paramref name="first"/> is a directory (a path on a mount; <paramref name="second"/> the
    /// name), else an image (<paramref name="second"/> the path in it, <paramref name="third"/>
    /// the name). Null, with the error said, when it cannot be had.</summary>
    private static Target? ObjectOf(CliContext ctx, string verb, string first, string? second, string? third, string? typeText,
        bool wantsValue, out string? name, out bool online)
    {
        name = null;
        online = Directory.Exists(first);
        ObjectType only = ObjectType.Subvol | ObjectType.Filesystem | ObjectType.Inode | ObjectType.Device;
        if (typeText != null)
        {
            only = typeText switch
            {
                "s" or "subvol" => ObjectType.Subvol,
                "f" or "filesystem" => ObjectType.Filesystem,
                "i" or "inode" => ObjectType.Inode,
                "d" or "device" => ObjectType.Device,
                _ => ObjectType.None,
            };
            if (only == ObjectType.None) { ctx.Err.WriteLine($"reservoir property {verb}: invalid object type: {typeText} (subvol, filesystem, inode, device)"); return null; }
        }
        if (online)
        {
            if (third != null) { ctx.Err.WriteLine($"reservoir property {verb}: {first} is a directory: expected PATH [NAME] on a mount, or IMAGE PATH [NAME]"); return null; }
            name = second;
            // SUBVOL_GETFLAGS says at once whether it is a subvolume's root (EINVAL: another
            // directory) and whether the mount is Reservoir's (ENOTTY: not).
            var e = OnlineSubvolume.GetReadOnly(first, out _);
            if (e == Errno.ENOTTY) { ctx.Err.WriteLine($"reservoir property {verb}: {first}: not on a mounted Reservoir"); return null; }
            if (e != Errno.OK && e != Errno.EINVAL) { ctx.Err.WriteLine($"reservoir property {verb}: {first}: {e.Describe()}"); return null; }
            var types = ObjectType.Inode | (e == Errno.OK ? ObjectType.Subvol : 0) | (OnlineSubvolume.IsMountRoot(first) ? ObjectType.Filesystem : 0);
            return new Target(true, first, null, 0, types & only);
        }
        if (!File.Exists(first)) { ctx.Err.WriteLine($"reservoir property {verb}: {first}: no such image or directory"); return null; }
        if (second == null) { ctx.Err.WriteLine($"reservoir property {verb}: expected IMAGE PATH{(wantsValue ? " NAME VALUE" : " [NAME]")}"); return null; }
        name = third;
        var fs = FileCommands.Open(first, write: wantsValue);
        try
        {
            var info = fs.GetInfo(second, followLinks: true);
            bool subvol = fs.Engine.GetSubvolumeReadOnly(info.Attr.Ino, out _) == Errno.OK;
            bool top = second.Trim('/').Length == 0;
            var types = ObjectType.Inode | (subvol ? ObjectType.Subvol : 0) | (top ? ObjectType.Filesystem : 0);
            return new Target(false, $"{first}:{second}", fs, info.Attr.Ino, types & only);
        }
        catch { fs.Dispose(); throw; }
    }

    /// <summary>The property called <paramref name="name"/>, if the object is of its type; else
    /// btrfs's errors ("unknown property", "object is not compatible with property").</summary>
    private static (string Name, ObjectType Type, string Description)? Find(CliContext ctx, string verb, string name, ObjectType types)
    {
        foreach (var p in Known)
        {
            if (p.Name != name) continue;
            if ((types & p.Type) != 0) return p;
            ctx.Err.WriteLine($"reservoir property {verb}: object is not compatible with property: {name}");
            return null;
        }
        ctx.Err.WriteLine($"reservoir property {verb}: unknown property: {name} (known: {string.Join(", ", Known.Select(k => k.Name))})");
        return null;
    }

    /// <summary>A property's value (ro a bool, label a string); null, with the error said,
    /// when it cannot be read.</summary>
    private static object? Read(CliContext ctx, Target o, string name)
    {
        Errno e;
        object value;
        if (name == "ro")
        {
            bool ro = false;
            e = o.Online ? OnlineSubvolume.GetReadOnly(o.Where, out ro) : o.Image!.Engine.GetSubvolumeReadOnly(o.Node, out ro);
            value = ro;
        }
        else if (o.Online) { e = OnlineSubvolume.Label(o.Where, out var label); value = label; }
        else (e, value) = (Errno.OK, o.Image!.Label);
        if (e == Errno.OK) return value;
        ctx.Err.WriteLine($"reservoir property get: {o.Where}: {Describe(e)}");
        return null;
    }

    private static string Describe(Errno e) => e switch
    {
        Errno.EINVAL => "not a subvolume",
        Errno.ENOTTY => "not on a mounted Reservoir",
        _ => e.Describe(),
    };

    /// <summary>A property's object: a path on a mount, or an inode of an open image (closed
    /// with the target).</summary>
    private sealed record Target(bool Online, string Where, Reservoir.ReservoirFileSystem? Image, ulong Node, ObjectType Types) : IDisposable
    {
        public void Dispose() => Image?.Dispose();
    }
}

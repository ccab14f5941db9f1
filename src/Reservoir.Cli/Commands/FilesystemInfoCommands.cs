using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir filesystem show|df|label IMAGE|PATH`, shaped like btrfs-progs' commands of those
/// names, on an unmounted image or through a mount: the label, uuid and sizes of the one
/// device (the image); the space of each kind with the global reserve; the label read or set
/// (online through FS_IOC_GETFSLABEL and FS_IOC_SETFSLABEL, as btrfs's).
/// </summary>
internal static class FilesystemInfoCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Show(ctx), Df(ctx), Label(ctx), Sync(ctx)];

    /// <summary>`filesystem sync PATH`: as btrfs-progs', everything written so far made durable
    /// (written back and committed), printing nothing. On an unmounted image nothing is
    /// pending; the image is checked to open.</summary>
    private static Command Sync(CliContext ctx)
    {
        var at = new Argument<string>("image") { Description = "A directory on a mounted Reservoir, or an unmounted image" };
        var cmd = new Command("sync", "Write back everything and commit (as btrfs filesystem sync)") { at };
        cmd.SetAction(pr =>
        {
            string where = pr.GetValue(at)!;
            if (Directory.Exists(where))
            {
                var e = OnlineSubvolume.SyncFilesystem(where);
                if (e == Errno.OK) return 0;
                ctx.Err.WriteLine($"reservoir filesystem sync: {where}: {(e == Errno.ENOTTY ? "not on a mounted Reservoir" : e.Describe())}");
                return 1;
            }
            if (!File.Exists(where)) { ctx.Err.WriteLine($"reservoir filesystem sync: {where}: no such image or directory"); return 1; }
            using var fs = FileCommands.Open(where, write: false);
            return 0;
        });
        return cmd;
    }

    /// <summary>What show and df print, read online or offline.</summary>
    private sealed record Facts(string Label, Guid Fsid, SpaceReport Space);

    private static Errno Read(string at, out Facts facts)
    {
        facts = new("", Guid.Empty, default);
        if (Directory.Exists(at))
        {
            var e = OnlineSubvolume.Space(at, out var space, out _);
            Guid fsid = Guid.Empty;
            string label = "";
            if (e == Errno.OK) e = OnlineSubvolume.Fsid(at, out fsid);
            if (e == Errno.OK) e = OnlineSubvolume.Label(at, out label);
            facts = new(label, fsid, space);
            return e;
        }
        using var mounted = InspectCommand.MountRo(at);
        facts = new(mounted.Fs.Label, mounted.Fs.Fsid, mounted.Fs.Space());
        return Errno.OK;
    }

    private static Command Show(CliContext ctx)
    {
        var image = FilesystemCommands.ImageOrMount();
        var raw = new Option<bool>("--raw") { Description = "Print raw byte counts" };
        var format = CommonOptions.Format();
        var cmd = new Command("show", "Show the label, uuid and size of the filesystem and its one device") { image, raw, format };
        cmd.SetAction(pr =>
        {
            string at = pr.GetValue(image)!;
            var e = Read(at, out var f);
            if (e != Errno.OK) return FilesystemCommands.Failed(ctx, "show", at, e);
            var s = f.Space;
            ulong size = s.DeviceBytes + s.DeviceSlack, allocated = s.DataTotal + s.MetaTotal, used = s.DataUsed + s.MetaUsed;
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(new { label = f.Label, uuid = f.Fsid, total_devices = 1, bytes_used = used, devices = new[] { new { devid = 1, size, used = allocated, path = FilesystemCommands.DevicePath(at) } } });
                return 0;
            }
            var sz = pr.GetValue(raw) ? SizeFormat.Raw : SizeFormat.Human;
            ctx.Out.WriteLine($"Label: {(f.Label.Length == 0 ? "none" : $"'{f.Label}'")}  uuid: {f.Fsid}");
            ctx.Out.WriteLine($"\tTotal devices 1 FS bytes used {sz.Format(used)}");
            ctx.Out.WriteLine($"\tdevid    1 size {sz.Format(size)} used {sz.Format(allocated)} path {FilesystemCommands.DevicePath(at)}");
            ctx.Out.WriteLine();
            return 0;
        });
        return cmd;
    }

    private static Command Df(CliContext ctx)
    {
        var image = FilesystemCommands.ImageOrMount();
        var raw = new Option<bool>("-b") { Description = "Print raw byte counts (as --raw)" };
        var format = CommonOptions.Format();
        var sizes = new SizeFormat.Options(shortUnits: true);
        var cmd = new Command("df", "Show each kind's allocated and used space, as btrfs filesystem df") { image, raw, format };
        sizes.AddTo(cmd);
        cmd.SetAction(pr =>
        {
            string at = pr.GetValue(image)!;
            var e = Read(at, out var f);
            if (e != Errno.OK) return FilesystemCommands.Failed(ctx, "df", at, e);
            var s = f.Space;
            // The global reserve is held back from metadata, not used: "used" is what commits
            // and deletions have drawn on it, which a mount returns at each commit (0 at rest).
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(new[]
                {
                    new { type = "Data", profile = "single", total = s.DataTotal, used = s.DataUsed },
                    new { type = "Metadata", profile = "single", total = s.MetaTotal, used = s.MetaUsed },
                    new { type = "GlobalReserve", profile = "single", total = s.GlobalReserve, used = 0UL },
                });
                return 0;
            }
            var sz = pr.GetValue(raw) ? SizeFormat.Raw : sizes.Read(pr);
            ctx.Out.WriteLine($"Data, single: total={sz.Format(s.DataTotal)}, used={sz.Format(s.DataUsed)}");
            ctx.Out.WriteLine($"Metadata, single: total={sz.Format(s.MetaTotal)}, used={sz.Format(s.MetaUsed)}");
            ctx.Out.WriteLine($"GlobalReserve, single: total={sz.Format(s.GlobalReserve)}, used={sz.Format(0)}");
            return 0;
        });
        return cmd;
    }

    private static Command Label(CliContext ctx)
    {
        var image = FilesystemCommands.ImageOrMount();
        var label = new Argument<string?>("label") { Description = "The new label (at most 255 bytes); without it, the label is printed", Arity = ArgumentArity.ZeroOrOne };
        var format = CommonOptions.Format();
        var cmd = new Command("label", "Print or change the filesystem's label") { image, label, format };
        cmd.SetAction(pr =>
        {
            string at = pr.GetValue(image)!;
            string? set = pr.GetValue(label);
            Errno e;
            if (set == null)
            {
                string got;
                if (Directory.Exists(at)) e = OnlineSubvolume.Label(at, out got);
                else
                {
                    using var ro = InspectCommand.MountRo(at);
                    got = ro.Fs.Label;
                    e = Errno.OK;
                }
                if (e != Errno.OK) return FilesystemCommands.Failed(ctx, "label", at, e);
                if (CommonOptions.IsJson(pr, format)) ctx.Json(new { label = got });
                else ctx.Out.WriteLine(got);
                return 0;
            }
            if (System.Text.Encoding.UTF8.GetByteCount(set) >= 256)
            {
                ctx.Err.WriteLine($"reservoir filesystem label: '{set}' is longer than 255 bytes");
                return 1;
            }
            if (Directory.Exists(at)) e = OnlineSubvolume.SetLabel(at, set);
            else
            {
                using var rw = QuotaCommands.MountRw(at);
                e = rw.Fs.SetLabel(set);
            }
            return e == Errno.OK ? 0 : FilesystemCommands.Failed(ctx, "label", at, e);
        });
        return cmd;
    }
}

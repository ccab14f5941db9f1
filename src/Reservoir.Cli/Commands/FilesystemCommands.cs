using System.CommandLine;
using Reservoir.Common;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir filesystem usage IMAGE`: space by kind, shaped like btrfs-progs'
/// `filesystem usage` (overall figures, then the data and metadata block groups).</summary>
internal static class FilesystemCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Filesystem(ctx)];

    private static Command Filesystem(CliContext ctx)
    {
        var cmd = new Command("filesystem", "Filesystem-wide information");
        var image = new Argument<string>("image");
        var format = CommonOptions.Format();
        var raw = new Option<bool>("--raw", "-b") { Description = "Print raw byte counts" };
        var usage = new Command("usage", "Show allocated, used and free space by kind") { image, raw, format };
        usage.SetAction(pr =>
        {
            using var mounted = InspectCommand.MountRo(pr.GetValue(image)!);
            var fs = mounted.Fs;
            var s = fs.Space();
            ulong allocated = s.DataTotal + s.MetaTotal;
            ulong used = s.DataUsed + s.MetaUsed;
            // Free as btrfs estimates it: what is left in data groups plus the unallocated slots.
            ulong free = s.DataTotal - Math.Min(s.DataTotal, s.DataUsed + s.DataPinned) + s.Unallocated;
            double ratio = s.DataTotal == 0 ? 0 : (double)s.DataUsed / s.DataTotal, mratio = s.MetaTotal == 0 ? 0 : (double)s.MetaUsed / s.MetaTotal;
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(new
                {
                    device_size = s.DeviceBytes, device_allocated = allocated, device_unallocated = s.Unallocated, used, free_estimated = free,
                    global_reserve = s.GlobalReserve,
                    data = new { size = s.DataTotal, used = s.DataUsed },
                    metadata = new { size = s.MetaTotal, used = s.MetaUsed },
                });
                return 0;
            }
            string Sz(ulong v) => pr.GetValue(raw) ? v.ToString() : Units.Human(v);
            ctx.Out.WriteLine("Overall:");
            ctx.Out.WriteLine($"    Device size:\t\t{Sz(s.DeviceBytes),14}");
            ctx.Out.WriteLine($"    Device allocated:\t\t{Sz(allocated),14}");
            ctx.Out.WriteLine($"    Device unallocated:\t\t{Sz(s.Unallocated),14}");
            ctx.Out.WriteLine($"    Used:\t\t\t{Sz(used),14}");
            ctx.Out.WriteLine($"    Free (estimated):\t\t{Sz(free),14}\t(min: {Sz(free)})");
            ctx.Out.WriteLine($"    Data ratio:\t\t\t{1.0,14:F2}");
            ctx.Out.WriteLine($"    Metadata ratio:\t\t{1.0,14:F2}");
            ctx.Out.WriteLine($"    Global reserve:\t\t{Sz(s.GlobalReserve),14}\t(used: {Sz(0)})");
            ctx.Out.WriteLine();
            ctx.Out.WriteLine($"Data,single: Size:{Sz(s.DataTotal)}, Used:{Sz(s.DataUsed)} ({ratio * 100:F2}%)");
            ctx.Out.WriteLine();
            ctx.Out.WriteLine($"Metadata,single: Size:{Sz(s.MetaTotal)}, Used:{Sz(s.MetaUsed)} ({mratio * 100:F2}%)");
            ctx.Out.WriteLine();
            ctx.Out.WriteLine($"Unallocated:\n   {pr.GetValue(image)}\t{Sz(s.Unallocated)}");
            return 0;
        });
        cmd.Subcommands.Add(usage);
        return cmd;
    }
}

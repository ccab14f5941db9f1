using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir filesystem usage [-T] IMAGE|PATH`: space by kind, on an unmounted image or through
/// a mount, shaped like btrfs-progs' `filesystem usage`: the overall figures, then the data and
/// metadata block groups on the one device (the image, or the loop device a fuseblk mount reads
/// it through), or with -T the same as btrfs's table of devices by kind. There is no system
/// chunk kind here (the superblock and block group items live elsewhere: SPEC.md §1), and every
/// kind is single.
/// </summary>
internal static class FilesystemUsageCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = FilesystemCommands.ImageOrMount();
        var format = CommonOptions.Format();
        var raw = new Option<bool>("-b") { Description = "Print raw byte counts (as --raw)" };
        var table = new Option<bool>("-T") { Description = "Show the data in a table, as btrfs filesystem usage -T" };
        var sizes = new SizeFormat.Options(shortUnits: true);
        var usage = new Command("usage", "Show allocated, used and free space by kind") { image, raw, table, format };
        sizes.AddTo(usage);
        usage.SetAction(pr =>
        {
            string at = pr.GetValue(image)!;
            SpaceReport s;
            ulong dfFree;
            if (Directory.Exists(at))
            {
                var e = OnlineSubvolume.Space(at, out s, out dfFree);
                if (e != Errno.OK) return FilesystemCommands.Failed(ctx, "usage", at, e);
            }
            else
            {
                using var mounted = InspectCommand.MountRo(at);
                s = mounted.Fs.Space();
                mounted.Fs.StatFs(out var st);
                dfFree = st.BlocksAvail * st.BlockSize;
            }
            ulong allocated = s.DataTotal + s.MetaTotal;
            ulong used = s.DataUsed + s.MetaUsed;
            // Free as btrfs estimates it: what is left in data groups plus the unallocated slots
            // (metadata and data are both single: the minimum is the same).
            ulong free = s.DataTotal - Math.Min(s.DataTotal, s.DataUsed + s.DataPinned) + s.Unallocated;
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(new
                {
                    device_size = s.DeviceBytes + s.DeviceSlack, device_allocated = allocated, device_unallocated = s.Unallocated, device_slack = s.DeviceSlack, used, free_estimated = free,
                    free_statfs_df = dfFree, global_reserve = s.GlobalReserve,
                    data = new { profile = "single", size = s.DataTotal, used = s.DataUsed },
                    metadata = new { profile = "single", size = s.MetaTotal, used = s.MetaUsed },
                    device = FilesystemCommands.DevicePath(at),
                });
                return 0;
            }
            var size = pr.GetValue(raw) ? SizeFormat.Raw : sizes.Read(pr);
            string Sz(ulong v) => size.Format(v);
            string Pct(ulong part, ulong whole) => whole == 0 ? "0.00" : (100.0 * part / whole).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture);
            string dev = FilesystemCommands.DevicePath(at);
            var o = ctx.Out;
            o.WriteLine("Overall:");
            o.WriteLine($"    Device size:\t\t{Sz(s.DeviceBytes + s.DeviceSlack),10}");
            o.WriteLine($"    Device allocated:\t\t{Sz(allocated),10}");
            o.WriteLine($"    Device unallocated:\t\t{Sz(s.Unallocated),10}");
            o.WriteLine($"    Device missing:\t\t{Sz(0),10}");
            o.WriteLine($"    Device slack:\t\t{Sz(s.DeviceSlack),10}");
            o.WriteLine($"    Used:\t\t\t{Sz(used),10}");
            o.WriteLine($"    Free (estimated):\t\t{Sz(free),10}\t(min: {Sz(free)})");
            o.WriteLine($"    Free (statfs, df):\t\t{Sz(dfFree),10}");
            o.WriteLine($"    Data ratio:\t\t\t{"1.00",10}");
            o.WriteLine($"    Metadata ratio:\t\t{"1.00",10}");
            o.WriteLine($"    Global reserve:\t\t{Sz(s.GlobalReserve),10}\t(used: {Sz(0)})");
            o.WriteLine($"    Multiple profiles:\t\t{"no",10}");
            o.WriteLine();
            if (pr.GetValue(table))
            {
                string[][] rows =
                [
                    ["", "", "Data", "Metadata", "", "", ""],
                    ["Id", "Path", "single", "single", "Unallocated", "Total", "Slack"],
                    [],
                    ["1", dev, Sz(s.DataTotal), Sz(s.MetaTotal), Sz(s.Unallocated), Sz(s.DeviceBytes + s.DeviceSlack), s.DeviceSlack == 0 ? "-" : Sz(s.DeviceSlack)],
                    [],
                    ["", "Total", Sz(s.DataTotal), Sz(s.MetaTotal), Sz(s.Unallocated), Sz(s.DeviceBytes + s.DeviceSlack), Sz(s.DeviceSlack)],
                    ["", "Used", Sz(s.DataUsed), Sz(s.MetaUsed), "", "", ""],
                ];
                foreach (var line in Table(rows, headerRows: 2)) o.WriteLine(line);
                return 0;
            }
            o.WriteLine($"Data,single: Size:{Sz(s.DataTotal)}, Used:{Sz(s.DataUsed)} ({Pct(s.DataUsed, s.DataTotal)}%)");
            o.WriteLine($"   {dev}\t{Sz(s.DataTotal),10}");
            o.WriteLine();
            o.WriteLine($"Metadata,single: Size:{Sz(s.MetaTotal)}, Used:{Sz(s.MetaUsed)} ({Pct(s.MetaUsed, s.MetaTotal)}%)");
            o.WriteLine($"   {dev}\t{Sz(s.MetaTotal),10}");
            o.WriteLine();
            o.WriteLine("Unallocated:");
            o.WriteLine($"   {dev}\t{Sz(s.Unallocated),10}");
            return 0;
        });
        return usage;
    }

    /// <summary>btrfs-progs' table layout: each column as wide as its widest cell, one space
    /// between columns, every line padded to the full width; the header rows left-aligned, below
    /// them the id and the figures right-aligned and the path left; an empty row is a rule of
    /// dashes.</summary>
    internal static IEnumerable<string> Table(string[][] rows, int headerRows)
    {
        int columns = rows.Max(r => r.Length);
        var width = new int[columns];
        foreach (var r in rows)
            for (int c = 0; c < r.Length; c++) width[c] = Math.Max(width[c], r[c].Length);
        for (int i = 0; i < rows.Length; i++)
        {
            var r = rows[i];
            var cells = new string[columns];
            for (int c = 0; c < columns; c++)
            {
                string v = r.Length == 0 ? new string('-', width[c]) : c < r.Length ? r[c] : "";
                bool left = i < headerRows || c == 1;
                cells[c] = left ? v.PadRight(width[c]) : v.PadLeft(width[c]);
            }
            yield return string.Join(' ', cells);
        }
    }
}

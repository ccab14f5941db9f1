using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir subvolume find-new SUBVOL LASTGEN` (or IMAGE PATH LASTGEN): the files changed in a
/// subvolume since a generation, one line per file extent written in LASTGEN or later, then
/// "transid marker was N", byte for byte as btrfs-progs prints them, so scripts written for
/// btrfs (an "erase your darlings" diff against a blank snapshot, say: field 17 on is the path)
/// work unchanged. Files without a name (unlinked while open) are left out, as btrfs-progs
/// leaves out what it cannot resolve.
/// </summary>
internal static class SubvolumeFindNew
{
    public static Command Build(CliContext ctx)
    {
        var args = new Argument<string[]>("target") { Description = "SUBVOL LASTGEN on a mounted Reservoir, or IMAGE PATH LASTGEN (a subvolume inside an unmounted image); LASTGEN from `subvolume show` (Generation) or an earlier run's marker", Arity = new ArgumentArity(2, 3) };
        var format = CommonOptions.Format();
        var cmd = new Command("find-new", "List the file extents a subvolume's files gained since a generation (as btrfs subvolume find-new), and the generation to ask from next time") { args, format };
        cmd.SetAction(pr =>
        {
            var a = pr.GetValue(args)!;
            if (!ulong.TryParse(a[^1], out ulong lastGen)) { ctx.Err.WriteLine($"reservoir subvolume find-new: {a[^1]}: not a generation (a number, 0 or more)"); return 2; }
            var found = new List<NewExtent>();
            ulong marker;
            string where = a[^2];
            if (a.Length == 2)
            {
                var e = OnlineFindNew.Run(where, lastGen, found.Add, out marker);
                if (e != Errno.OK)
                {
                    ctx.Err.WriteLine($"reservoir subvolume find-new: {where}: " + e switch
                    {
                        Errno.EINVAL => "not a subvolume",
                        Errno.ENOTTY => "not on a mounted Reservoir (give IMAGE PATH LASTGEN for an unmounted image)",
                        Errno.EPERM => "only root (or the image's owner, on their own mount) may list what changed",
                        _ => e.Describe(),
                    });
                    return 1;
                }
            }
            else
            {
                if (!File.Exists(a[0])) { ctx.Err.WriteLine($"reservoir subvolume find-new: {a[0]}: no such image"); return 1; }
                using var fs = FileCommands.Open(a[0], write: false);
                try
                {
                    var r = fs.FindNew(where, lastGen);
                    found.AddRange(r.Extents);
                    marker = r.Marker;
                }
                catch (IOException ex) { ctx.Err.WriteLine($"reservoir subvolume find-new: {where}: {(ex is FsException { Errno: Errno.EINVAL } ? "not a subvolume" : ex.Message)}"); return 1; }
            }
            var named = found.Where(x => x.Path != null).ToList();
            if (CommonOptions.IsJson(pr, format))
            {
                ctx.Json(new
                {
                    marker,
                    extents = named.Select(x => new
                    {
                        inode = x.Inode, file_offset = x.FileOffset, len = x.Length, disk_start = x.DiskStart, offset = x.ExtentOffset,
                        gen = x.Generation, flags = Flags(x.Type), path = x.Path,
                    }),
                });
                return 0;
            }
            foreach (var x in named)
                ctx.Out.WriteLine($"inode {x.Inode} file offset {x.FileOffset} len {x.Length} disk start {x.DiskStart} offset {x.ExtentOffset} gen {x.Generation} flags {Flags(x.Type)} {x.Path}");
            ctx.Out.WriteLine($"transid marker was {marker}");
            return 0;
        });
        return cmd;
    }

    /// <summary>btrfs-progs' flags word: NONE, PREALLOC or INLINE (nothing is stored
    /// compressed here, so never COMPRESS).</summary>
    private static string Flags(FileExtentType t) => t switch
    {
        FileExtentType.Prealloc => "PREALLOC",
        FileExtentType.Inline => "INLINE",
        _ => "NONE",
    };
}

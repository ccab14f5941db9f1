using System.CommandLine;
using Reservoir.Device;
using Reservoir.Engine.Check;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir fsck`: exit codes as fsck(8): 0 no errors, 1 errors corrected,
/// 4 errors left uncorrected, 8 operational error, 16 usage error.</summary>
internal static class FsckCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("image") { Description = "Image to check (must not be mounted)" };
        var no = new Option<bool>("-n") { Description = "Check only, change nothing (the default)" };
        var yes = new Option<bool>("-y") { Description = "Repair what can be repaired safely, without asking" };
        var preen = new Option<bool>("-p", "-a") { Description = "Same as -y (automatic repair of safe problems)" };
        var force = new Option<bool>("-f") { Description = "Check even if the filesystem seems clean (always the case)" };
        var dataCsum = new Option<bool>("--check-data-csum") { Description = "Also read every data block and verify its checksum" };
        var format = CommonOptions.Format();
        var cmd = new Command("fsck", "Check (and optionally repair) a Reservoir image") { image, no, yes, preen, force, dataCsum, format };
        cmd.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            bool repair = pr.GetValue(yes) || pr.GetValue(preen);
            if (repair && pr.GetValue(no)) { ctx.Err.WriteLine("reservoir fsck: -n and -y exclude each other"); return 16; }
            string path = pr.GetValue(image)!;
            using var dev = FileBlockDevice.Open(path, readOnly: !repair);
            var report = Fsck.Run(dev, new FsckOptions
            {
                Repair = repair,
                CheckDataCsums = pr.GetValue(dataCsum),
                Progress = json ? null : ctx.Progress,
            });
            ctx.ProgressDone();
            if (json)
            {
                ctx.Json(new
                {
                    image = path,
                    clean = report.Clean,
                    exit_code = report.ExitCode,
                    generation = report.Generation,
                    operational_error = report.OperationalError,
                    repaired = report.Repaired,
                    tree_blocks = report.TreeBlocks,
                    items = report.Items,
                    inodes = report.Inodes,
                    directories = report.Directories,
                    data_extents = report.DataExtents,
                    data_bytes = report.DataBytes,
                    findings = report.Findings.Select(f => new { kind = f.Kind.ToString().ToLowerInvariant(), where = f.Where, message = f.Message }),
                });
                return report.ExitCode;
            }
            if (report.OperationalError != null)
            {
                ctx.Err.WriteLine($"reservoir fsck: {report.OperationalError}");
                return report.ExitCode;
            }
            foreach (var f in report.Findings)
                ctx.Out.WriteLine($"{(f.Kind == FindingKind.Notice ? "note" : f.Repairable ? "error (repairable)" : "error")}: {f}");
            ctx.Out.WriteLine($"{path}: generation {report.Generation}, {report.Inodes} inodes ({report.Directories} directories), {report.DataExtents} data extents ({report.DataBytes} bytes), {report.TreeBlocks} tree blocks");
            int errors = report.Errors.Count();
            if (report.OperationalError == null)
                ctx.Out.WriteLine(errors == 0 ? "no errors found" : report.Repaired > 0 ? $"{errors} error(s) found, {report.Repaired} corrected" : $"{errors} error(s) found{(repair ? ", not repairable safely" : "; run with -y to repair counters")}");
            return report.ExitCode;
        });
        return cmd;
    }
}

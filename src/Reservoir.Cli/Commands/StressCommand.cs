using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tx;
using Reservoir.Stress;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir stress IMAGE [-p N] [-n N] [-s SEED] [-f op=freq]… [--log FILE] [--replay FILE]`:
/// an fsstress-style run in-process on an image (created if missing), then the end checks:
/// contents against the shadow model, the reservation ledger, zero leaked bytes, fsck clean.
/// Exit 0 only when all hold.
/// </summary>
internal static class StressCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var procs = new Option<int>("-p") { Description = "Workers (fsstress -p)", DefaultValueFactory = _ => 4 };
        var ops = new Option<int>("-n") { Description = "Operations per worker (fsstress -n)", DefaultValueFactory = _ => 1000 };
        var seed = new Option<int>("-s") { Description = "Seed (fsstress -s)", DefaultValueFactory = _ => 1 };
        var freq = new Option<string[]>("-f") { Description = "op=freq, repeatable (fsstress -f); e.g. -f dwrite=0", AllowMultipleArgumentsPerToken = false };
        var logOpt = new Option<string?>("--log") { Description = "Write the operation log here (replayable)" };
        var replay = new Option<string?>("--replay") { Description = "Replay a log instead of generating operations" };
        var size = new Option<string>("--size") { Description = "Size of a new image", DefaultValueFactory = _ => "1G" };
        var quota = new Option<string?>("--quota-limit") { Description = "Enable quotas with this limit on the top-level qgroup" };
        var cmd = new Command("stress", "Run an fsstress-style workload in-process and check everything at the end") { image, procs, ops, seed, freq, logOpt, replay, size, quota };
        cmd.SetAction(pr =>
        {
            string path = pr.GetValue(image)!;
            if (!File.Exists(path))
            {
                ulong sz = MkfsCommand.ParseSize(pr.GetValue(size)!, "--size");
                using var d = Device.FileBlockDevice.Create(path, sz);
                Filesystem.Format(d);
            }
            var o = new StressOptions { Workers = pr.GetValue(procs), OpsPerWorker = pr.GetValue(ops), Seed = pr.GetValue(seed) };
            if (o.Workers < 1 || o.OpsPerWorker < 0) throw new ArgumentException("-p must be at least 1 and -n at least 0");
            foreach (var f in pr.GetValue(freq) ?? [])
            {
                var kv = f.Split('=');
                if (kv.Length != 2 || !o.Frequencies.ContainsKey(kv[0]) || !int.TryParse(kv[1], out int v) || v < 0)
                    throw new ArgumentException($"-f {f}: expected op=frequency with op one of {string.Join(", ", StressRunner.Ops)}");
                o.Frequencies[kv[0]] = v;
            }
            StressResult result;
            long leaked;
            IReadOnlyList<string> leaks;
            using (var rfs = ReservoirFileSystem.Open(path, new MountOptions()))
            {
                if (pr.GetValue(quota) is { } q)
                {
                    if (!rfs.Engine.QuotaEnabled && rfs.Engine.EnableQuota() != Errno.OK) throw new IOException("cannot enable quotas");
                    rfs.Engine.SetQuotaLimit(MkfsCommand.ParseSize(q, "--quota-limit"));
                }
                if (pr.GetValue(replay) is { } rp)
                {
                    using var reader = File.OpenText(rp);
                    result = StressRunner.Replay(rfs, reader);
                }
                else
                {
                    using var w = pr.GetValue(logOpt) is { } lp ? File.CreateText(lp) : null;
                    w?.WriteLine($"# reservoir stress -p {o.Workers} -n {o.OpsPerWorker} -s {o.Seed}");
                    o.Log = w;
                    result = StressRunner.Run(rfs, o);
                }
                rfs.Dispose();
                leaked = rfs.Engine.LeakedBytes;
                leaks = rfs.Engine.LeakReports;
            }
            using (var dev = Device.FileBlockDevice.Open(path, readOnly: true))
            {
                var report = Fsck.Run(dev, new FsckOptions { CheckDataCsums = true });
                foreach (var f in report.Errors.Take(20)) result.Failures.Add("fsck: " + f);
                if (report.OperationalError != null) result.Failures.Add("fsck: " + report.OperationalError);
            }
            foreach (var l in leaks) result.Failures.Add("leak: " + l);
            double secs = Math.Max(0.001, result.Elapsed.TotalSeconds);
            ctx.Out.WriteLine($"{result.Operations} operations in {secs:F1} s ({result.Operations / secs:F0} ops/s), state {result.StateHash[..16]}");
            ctx.Out.WriteLine(string.Join(" ", result.OpCounts.Select(kv => $"{kv.Key}={kv.Value}")));
            ctx.Out.WriteLine($"leaked bytes: {leaked}");
            foreach (var f in result.Failures.Take(50)) ctx.Out.WriteLine("FAIL " + f);
            ctx.Out.WriteLine(result.Ok ? "all checks passed" : $"{result.Failures.Count} check(s) failed");
            return result.Ok ? 0 : 1;
        });
        return cmd;
    }
}

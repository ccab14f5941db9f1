using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tx;
using Reservoir.Stress;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir stress IMAGE|DIR [-p N] [-n N] [-s SEED] [-f op=freq]… [--log FILE] [--replay FILE]`:
/// an fsstress-style run, then the end checks. On an image (created if missing) it runs
/// in-process and checks contents against the shadow model, the reservation ledger, zero leaked
/// bytes and fsck. On a directory (a Reservoir mount, or ext4, btrfs, tmpfs for comparison) it
/// runs through the kernel's system calls and checks contents against the model; the leak and
/// fsck checks of a mounted image come from its unmount (the daemon logs any leak) and
/// `reservoir fsck`. Exit 0 only when all hold.
/// </summary>
internal static class StressCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("target") { Description = "An image file (in-process; created if missing) or a directory (any mounted filesystem; must not contain p0, p1, …)" };
        var procs = new Option<int>("-p") { Description = "Workers (fsstress -p)", DefaultValueFactory = _ => 4 };
        var ops = new Option<int>("-n") { Description = "Operations per worker (fsstress -n)", DefaultValueFactory = _ => 1000 };
        var seed = new Option<int>("-s") { Description = "Seed (fsstress -s)", DefaultValueFactory = _ => 1 };
        var freq = new Option<string[]>("-f") { Description = "op=freq, repeatable (fsstress -f); e.g. -f dwrite=0", AllowMultipleArgumentsPerToken = false };
        var logOpt = new Option<string?>("--log") { Description = "Write the operation log here (replayable)" };
        var replay = new Option<string?>("--replay") { Description = "Replay a log instead of generating operations" };
        var size = new Option<string>("--size") { Description = "Size of a new image", DefaultValueFactory = _ => "1G" };
        var quota = new Option<string?>("--quota-limit") { Description = "Enable quotas with this limit on the top-level qgroup" };
        var time = new Option<string?>("--time") { Description = "Soak: stop after this long (e.g. 3600, 90m, 1h) instead of after -n operations" };
        var checkEach = new Option<bool>("--check-each") { Description = "After every operation on a file, compare the file with what was written (slow; pins a mismatch to its operation)" };
        var entryAfter = new Option<int?>("--referrer-entry-after") { Description = "Quota accounting: give an extent a referrer entry once its search passes this many snapshots that let go of it (default 32; 0 gives every extent searched one, to exercise them; docs/SNAPSHOTS.md §3)" };
        var discard = DiscardOption();
        var cmd = new Command("stress", "Run an fsstress-style workload on an image (in-process) or a directory (any mount) and check everything at the end") { image, procs, ops, seed, freq, logOpt, replay, size, quota, time, checkEach, entryAfter, discard };
        cmd.SetAction(pr =>
        {
            string path = pr.GetValue(image)!;
            bool onDir = Directory.Exists(path);
            int? referrerEntryAfter = pr.GetValue(entryAfter);
            if (referrerEntryAfter is < 0) throw new ArgumentException("--referrer-entry-after must be 0 or more");
            if (!onDir && !File.Exists(path))
            {
                ulong sz = MkfsCommand.ParseSize(pr.GetValue(size)!, "--size");
                // Said aloud: a mistyped directory on a mount would otherwise become an image
                // file there, and the run would stress the engine in-process, not the mount.
                ctx.Err.WriteLine($"reservoir: {path} does not exist: making a new {pr.GetValue(size)} image there and running in-process (to stress a mounted filesystem, give an existing directory)");
                using var d = Device.FileBlockDevice.Create(path, sz);
                Filesystem.Format(d);
            }
            var o = new StressOptions { Workers = pr.GetValue(procs), OpsPerWorker = pr.GetValue(ops), Seed = pr.GetValue(seed), CheckEach = pr.GetValue(checkEach) };
            if (o.Workers < 1 || o.OpsPerWorker < 0) throw new ArgumentException("-p must be at least 1 and -n at least 0");
            if (pr.GetValue(time) is { } t)
            {
                o.Duration = ParseDuration(t);
                if (pr.GetResult(ops) is null || pr.GetResult(ops)!.Implicit) o.OpsPerWorker = int.MaxValue;
            }
            foreach (var (op, f) in ParseFrequencies(pr.GetValue(freq))) o.Frequencies[op] = f;
            StressResult result;
            long leaked = 0;
            IReadOnlyList<string> leaks = [];
            (int Shrinks, long DataExtents, long TreeBlocks) relocations = default;
            if (onDir)
            {
                if (pr.GetValue(quota) != null) throw new ArgumentException("--quota-limit applies to images; on a mount use `reservoir qgroup limit`");
                if (referrerEntryAfter != null) throw new ArgumentException("--referrer-entry-after applies to images (the mount's engine is another process)");
                var target = new PathStressTarget(path);
                result = RunOrReplay(target, o, pr.GetValue(replay), pr.GetValue(logOpt));
                return Report(ctx, result, leaked: null, $"through the directory {path}", target.Relocations);
            }
            var mountOptions = new MountOptions { Discard = pr.GetValue(discard) };
            if (referrerEntryAfter is { } after) mountOptions.ReferrerEntryAfter = after;
            using (var rfs = ReservoirFileSystem.Open(path, mountOptions))
            {
                if (pr.GetValue(quota) is { } q)
                {
                    if (!rfs.Engine.QuotaEnabled && rfs.Engine.EnableQuota() != Errno.OK) throw new IOException("cannot enable quotas");
                    rfs.Engine.SetQuotaLimit(MkfsCommand.ParseSize(q, "--quota-limit"));
                }
                var engineTarget = new EngineStressTarget(rfs);
                result = RunOrReplay(engineTarget, o, pr.GetValue(replay), pr.GetValue(logOpt));
                relocations = ((IStressTarget)engineTarget).Relocations;
                // What the engine logged (an operation that failed with EIO says why here).
                foreach (var w in rfs.Engine.Warnings.Take(20)) ctx.Err.WriteLine("reservoir: " + w);
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
            return Report(ctx, result, leaked, $"in-process on the image {path}", relocations);
        });
        return cmd;
    }

    /// <summary>Seconds, or a number with s, m or h.</summary>
    /// <summary>--discard off|sync|async: the in-process mount's discard mode (as -o discard).</summary>
    internal static Option<DiscardMode> DiscardOption() => new("--discard")
    {
        Description = "In-process: discard what commits free, sync (in the commit) or async (by a worker after it); default off",
        DefaultValueFactory = _ => DiscardMode.Off,
        CustomParser = r =>
        {
            if (r.Tokens.Count == 1 && Enum.TryParse<DiscardMode>(r.Tokens[0].Value, ignoreCase: true, out var m) && Enum.IsDefined(m)) return m;
            r.AddError($"--discard {string.Join(' ', r.Tokens.Select(t => t.Value))}: expected off, sync or async");
            return DiscardMode.Off;
        },
    };

    /// <summary>-f op=N options (fsstress's -f): each operation one of stress's, each frequency
    /// a count of at least 0.</summary>
    internal static IEnumerable<(string Op, int Frequency)> ParseFrequencies(string[]? given)
    {
        foreach (var f in given ?? [])
        {
            var kv = f.Split('=');
            if (kv.Length != 2 || !StressRunner.Ops.Contains(kv[0]) || !int.TryParse(kv[1], out int v) || v < 0)
                throw new ArgumentException($"-f {f}: expected op=frequency with op one of {string.Join(", ", StressRunner.Ops)}");
            yield return (kv[0], v);
        }
    }

    internal static TimeSpan ParseDuration(string s)
    {
        double Num(string x) => double.TryParse(x, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) && v > 0
            ? v : throw new ArgumentException($"--time {s}: expected seconds or a number with s, m or h (e.g. 90m)");
        return s.Length > 0 && char.ToLowerInvariant(s[^1]) is 's' or 'm' or 'h'
            ? char.ToLowerInvariant(s[^1]) switch { 's' => TimeSpan.FromSeconds(Num(s[..^1])), 'm' => TimeSpan.FromMinutes(Num(s[..^1])), _ => TimeSpan.FromHours(Num(s[..^1])) }
            : TimeSpan.FromSeconds(Num(s));
    }

    private static StressResult RunOrReplay(IStressTarget target, StressOptions o, string? replay, string? logPath)
    {
        if (replay != null)
        {
            using var reader = File.OpenText(replay);
            return StressRunner.Replay(target, reader);
        }
        using var w = logPath != null ? File.CreateText(logPath) : null;
        w?.WriteLine($"# reservoir stress -p {o.Workers} -n {o.OpsPerWorker} -s {o.Seed} on {target.Describe}");
        o.Log = w;
        return StressRunner.Run(target, o);
    }

    private static int Report(CliContext ctx, StressResult result, long? leaked, string where, (int Shrinks, long DataExtents, long TreeBlocks) relocations)
    {
        double secs = Math.Max(0.001, result.Elapsed.TotalSeconds);
        ctx.Out.WriteLine($"{result.Operations} operations {where} in {secs:F1} s ({result.Operations / secs:F0} ops/s), state {result.StateHash[..16]}");
        ctx.Out.WriteLine(string.Join(" ", result.OpCounts.Select(kv => $"{kv.Key}={kv.Value}")));
        if (relocations.Shrinks > 0)
            ctx.Out.WriteLine($"{relocations.Shrinks} shrinks moved {relocations.DataExtents} data extents and {relocations.TreeBlocks} tree blocks out of their way");
        ctx.Out.WriteLine(leaked is { } l ? $"leaked bytes: {l}" : "leaked bytes: not visible through a mount (unmount: the daemon logs any leak; then reservoir fsck)");
        if (result.Unverified > 0)
            ctx.Out.WriteLine($"{result.Unverified} file(s) not compared: a mapped write to them failed at msync (a full filesystem through FUSE), which leaves their contents unspecified");
        foreach (var f in result.Failures.Take(50)) ctx.Out.WriteLine("FAIL " + f);
        ctx.Out.WriteLine(result.Ok ? "all checks passed" : $"{result.Failures.Count} check(s) failed");
        return result.Ok ? 0 : 1;
    }
}

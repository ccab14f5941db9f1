using System.CommandLine;
using System.Diagnostics;
using Reservoir.Common.Concurrency;
using Reservoir.Stress;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir explore`: the interleaving explorer. A sweep runs seeds FROM.. FROM+COUNT-1 (PCT on
/// even seeds, random walk on odd); `--time` makes it a soak that goes on through seeds until
/// the time is up (or Ctrl-C); `--seed N` replays one seed. Every failure prints its seed and
/// the one-line command that replays it. Exit 0 when every run passed.
/// </summary>
internal static class ExploreCommand
{
    public static Command Build(CliContext ctx)
    {
        var seed = new Option<int?>("--seed") { Description = "Replay this one seed" };
        var from = new Option<int>("--from") { Description = "First seed of a sweep", DefaultValueFactory = _ => 1 };
        var count = new Option<int>("--seeds") { Description = "How many seeds a sweep runs", DefaultValueFactory = _ => 20 };
        var time = new Option<string?>("--time") { Description = "Soak: keep going through seeds for this long (e.g. 600, 30m, 2h)" };
        var strategy = new Option<string?>("--strategy") { Description = "pct or random (default: PCT on even seeds, random walk on odd)" };
        var procs = new Option<int>("-p") { Description = "Stress workers", DefaultValueFactory = _ => 4 };
        var ops = new Option<int>("-n") { Description = "Operations per worker", DefaultValueFactory = _ => 150 };
        var depth = new Option<int>("--pct-depth") { Description = "PCT bug depth (priority change points + 1)", DefaultValueFactory = _ => 3 };
        var hang = new Option<int>("--hang-after") { Description = "Seconds without a single scheduling step before a run counts as hung", DefaultValueFactory = _ => 60 };
        var quota = new Option<string?>("--quota-limit") { Description = "Enable quotas with this limit on the top-level qgroup (e.g. 200M; the image is 256 MiB): the early accounting and the commit's run under the scheduler, fsck recounts every group" };
        var groups = new Option<bool>("--quota-groups") { Description = "With --quota-limit: groups above level 0 too (1/1 in 2/1, the top-level subvolume in 1/1), and memberships of 1/1 made and ended while the workers run and snapshot (the top-level subvolume's or their subvolumes')" };
        var log = new Option<string?>("--log") { Description = "With --seed: write the run's operations to this file (as stress --log writes them: worker/number, operation, path, arguments, errno), to see what led to a failure" };
        var freq = new Option<string[]>("-f") { Description = "op=freq over stress's defaults, repeatable (as stress -f); e.g. -f resize=3 -f whiteout=2", AllowMultipleArgumentsPerToken = false };
        var enospc = new Option<int?>("--enospc") { Description = "Answer ENOSPC at about one in N of the workers' transaction starts that may fail for space (the ones the seed picks: a full metadata space at chosen moments) and check every operation against the model (as stress --check-each): one that fails part way must leave what its answer says", HelpName = "N" };
        var discard = StressCommand.DiscardOption();
        var cmd = new Command("explore", "Run the engine under the deterministic scheduler over many seeds (or one, to replay) and check every run") { seed, from, count, time, strategy, procs, ops, depth, hang, quota, groups, log, freq, discard, enospc };
        cmd.SetAction(pr =>
        {
            var s = new InterleavingExplorer.Settings { Workers = pr.GetValue(procs), OpsPerWorker = pr.GetValue(ops), PctDepth = pr.GetValue(depth), HangAfter = TimeSpan.FromSeconds(pr.GetValue(hang)) };
            if (pr.GetValue(quota) is { } q) s.QuotaLimit = MkfsCommand.ParseSize(q, "--quota-limit");
            s.QuotaGroups = pr.GetValue(groups);
            if (s.QuotaGroups && s.QuotaLimit == null) throw new ArgumentException("--quota-groups needs --quota-limit (quotas on)");
            if (s.Workers < 1 || s.OpsPerWorker < 1 || s.PctDepth < 1) throw new ArgumentException("-p, -n and --pct-depth must be at least 1");
            foreach (var (op, f) in StressCommand.ParseFrequencies(pr.GetValue(freq))) s.Frequencies[op] = f;
            s.Discard = pr.GetValue(discard);
            s.EnospcOneIn = pr.GetValue(enospc);
            if (s.EnospcOneIn is < 2) throw new ArgumentException("--enospc N: N is 2 or more (about one transaction start in N is refused)");
            using var logWriter = pr.GetValue(log) is { } logPath
                ? (pr.GetValue(seed) != null ? new StreamWriter(logPath) : throw new ArgumentException("--log needs --seed (one run to log)"))
                : null;
            s.Log = logWriter;
            ScheduleStrategy? fixedStrategy = pr.GetValue(strategy) switch
            {
                null => null,
                "pct" => ScheduleStrategy.Pct,
                "random" => ScheduleStrategy.RandomWalk,
                var x => throw new ArgumentException($"--strategy {x}: expected pct or random"),
            };
            TimeSpan? limit = pr.GetValue(time) is { } t ? StressCommand.ParseDuration(t) : null;
            var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            var seeds = pr.GetValue(seed) is { } one ? [one]
                : limit != null ? Enumerable.Range(pr.GetValue(from), int.MaxValue - pr.GetValue(from))
                : Enumerable.Range(pr.GetValue(from), Math.Max(0, pr.GetValue(count)));
            var sw = Stopwatch.StartNew();
            int runs = 0, failed = 0;
            long steps = 0, operations = 0;
            foreach (int sd in seeds)
            {
                if (stop.IsCancellationRequested || (limit is { } l && sw.Elapsed >= l)) break;
                var st = fixedStrategy ?? InterleavingExplorer.StrategyFor(sd);
                var o = InterleavingExplorer.Run(sd, st, s);
                runs++;
                steps += o.Steps;
                operations += o.Operations;
                string tag = st == ScheduleStrategy.Pct ? "pct" : "random";
                if (o.Ok) ctx.Out.WriteLine($"seed {sd} ({tag}): ok, {o.Operations} operations, {o.Steps} scheduling steps{(s.QuotaLimit != null ? $", {o.EarlyTaken} extents accounted early ({o.EarlySharedAnswers} with clones' items)" : "")}{(s.QuotaGroups ? $" ({o.EarlyGroupAnswers} let go of and {o.EarlyGroupCloneAnswers} taken by a clone with groups, {o.EarlyGroupSearches} group searches, {o.RelationsChanged} memberships changed)" : "")}{(o.RelocatedData + o.RelocatedBlocks > 0 ? $", shrinks moved {o.RelocatedData} data extents and {o.RelocatedBlocks} tree blocks" : "")}{(s.EnospcOneIn != null ? $", {o.InjectedEnospc} transaction starts refused" : "")}, {o.Elapsed.TotalSeconds:F1} s");
                else
                {
                    failed++;
                    ctx.Out.WriteLine($"FAIL seed {sd} ({tag}): {o.Message}");
                    ctx.Out.WriteLine($"  replay: {InterleavingExplorer.ReplayCommand(o, s)}");
                    if (o.Hung) break; // the stuck threads cannot be taken back: stop here
                }
            }
            ctx.Out.WriteLine($"{runs} run(s), {failed} failed; {operations} operations and {steps} scheduling steps in {sw.Elapsed.TotalSeconds:F0} s");
            ctx.Out.Flush();
            return failed == 0 ? 0 : 1;
        });
        return cmd;
    }
}

using System.CommandLine;
using System.Diagnostics;
using Reservoir.Stress;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir powercut`: the power-cut simulator. Random workloads (`--seeds N`, `--steps`,
/// `--cuts` sampled cut points each; `--quotas`: with quotas, snapshots and clones) and, with `--ace`, every CrashMonkey-style sequence of one
/// and two core operations followed by fsync, cut at every device operation. Each remains image
/// (unflushed writes dropped, and again torn) must mount, pass fsck, hold no reservation and
/// equal a committed state. Exit 0 when all do.
/// </summary>
internal static class PowerCutCommand
{
    public static Command Build(CliContext ctx)
    {
        var seeds = new Option<int>("--seeds") { Description = "Random workloads (seeds 1..N)", DefaultValueFactory = _ => 5 };
        var from = new Option<int>("--from") { Description = "First seed", DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { Description = "Operations per random workload", DefaultValueFactory = _ => 120 };
        var cuts = new Option<int>("--cuts") { Description = "Sampled cut points per random workload (plus the end of every commit)", DefaultValueFactory = _ => 40 };
        var ace = new Option<bool>("--ace") { Description = "Also every ACE sequence of one and two operations + fsync, cut at every device operation" };
        var nodeSize = new Option<int>("--nodesize") { Description = "Node size of the simulated images", DefaultValueFactory = _ => 4096 };
        var quotas = new Option<bool>("--quotas") { Description = "Random workloads with quotas on, in a subvolume, with snapshots and clones out of them (fsck recounts every group, before and after a read-write mount)" };
        var cmd = new Command("powercut", "Cut the power at many points of workloads on a simulated device and check what is left") { seeds, from, steps, cuts, ace, nodeSize, quotas };
        cmd.SetAction(pr =>
        {
            var sw = Stopwatch.StartNew();
            var r = new PowerCutSimulator.Result();
            int ns = pr.GetValue(nodeSize);
            if (ns is < 4096 or > 65536 || (ns & (ns - 1)) != 0) throw new ArgumentException("--nodesize must be a power of two from 4096 to 65536");
            for (int s = pr.GetValue(from); s < pr.GetValue(from) + pr.GetValue(seeds); s++)
            {
                int before = r.Failures.Count;
                PowerCutSimulator.RunRandom(s, pr.GetValue(steps), pr.GetValue(cuts), ns, r, pr.GetValue(quotas));
                ctx.Out.WriteLine($"random seed {s}: {(r.Failures.Count == before ? "ok" : "FAIL")} ({r.CutPoints} cut points so far)");
            }
            if (pr.GetValue(ace))
            {
                int before = r.Failures.Count;
                PowerCutSimulator.RunAce(pairs: true, ns, r);
                ctx.Out.WriteLine($"ACE sequences: {(r.Failures.Count == before ? "ok" : "FAIL")}");
            }
            foreach (var f in r.Failures.Take(50)) ctx.Out.WriteLine("FAIL " + f);
            if (r.Snapshots + r.Clones + r.Memberships > 0)
                ctx.Out.WriteLine($"quota workloads: {r.Snapshots} snapshots, {r.Clones} clones out of them, {r.Memberships} group memberships made or ended, {r.SubvolumeRenames} snapshots renamed, {r.OriginDropsRederived} ORIGIN_DROPs noted again at remounts, {r.EntriesLoaded} referrer entries read back from their items");
            ctx.Out.WriteLine($"{r.Workloads} workloads, {r.Commits} durable points (commits and fsyncs; {r.LogWrites} fsyncs through the fsync log), {r.CutPoints} cut points{(r.CutsPastTheEnd > 0 ? $" ({r.CutsPastTheEnd} past the end of a shorter run)" : "")}, {r.Resizes} resizes ({r.Relocations} moving extents), {r.ImagesChecked} images checked in {sw.Elapsed.TotalSeconds:F0} s; {(r.Ok ? "all checks passed" : $"{r.Failures.Count} failed")}");
            return r.Ok ? 0 : 1;
        });
        return cmd;
    }
}

using System.CommandLine;
using System.Diagnostics;
using Reservoir.Stress;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir fuzz`: the image fuzzer. Damages a populated image COUNT times in each way (bit
/// flips, random bytes, swapped, stale and looping nodes, truncation) and feeds every result to
/// fsck, fsck's repair, the mount with a full walk and the tree dump: each must answer with a
/// clear error or a repair, never another exception, a hang or a loop. Exit 0 when all do.
/// </summary>
internal static class FuzzCommand
{
    public static Command Build(CliContext ctx)
    {
        var seed = new Option<int>("--seed", "-s") { Description = "Seed of the image and of the damage", DefaultValueFactory = _ => 1 };
        var count = new Option<int>("--count", "-n") { Description = "Damaged images per kind", DefaultValueFactory = _ => 50 };
        var kind = new Option<string[]>("--kind") { Description = $"Only these kinds ({string.Join(", ", ImageFuzzer.Kinds)})" };
        var limit = new Option<int>("--limit") { Description = "Seconds an image may take before it counts as a hang", DefaultValueFactory = _ => 60 };
        var cmd = new Command("fuzz", "Damage images in many ways and check that every tool answers with a clear error or a repair") { seed, count, kind, limit };
        cmd.SetAction(pr =>
        {
            var kinds = pr.GetValue(kind) is { Length: > 0 } k ? k : ImageFuzzer.Kinds;
            foreach (var x in kinds)
                if (!ImageFuzzer.Kinds.Contains(x)) throw new ArgumentException($"--kind {x}: one of {string.Join(", ", ImageFuzzer.Kinds)}");
            var sw = Stopwatch.StartNew();
            var r = ImageFuzzer.Run(pr.GetValue(seed), pr.GetValue(count), TimeSpan.FromSeconds(pr.GetValue(limit)), kinds);
            foreach (var (kd, n) in r.Images) ctx.Out.WriteLine($"{kd,-13} {n,5} images, {r.Detected.GetValueOrDefault(kd),5} reported damaged by fsck or the mount");
            foreach (var f in r.Failures.Take(50)) ctx.Out.WriteLine("FAIL " + f);
            ctx.Out.WriteLine($"{r.Images.Values.Sum()} images in {sw.Elapsed.TotalSeconds:F0} s; {(r.Ok ? "every tool answered with a result or a clear error" : $"{r.Failures.Count} failed")}");
            return r.Ok ? 0 : 1;
        });
        return cmd;
    }
}

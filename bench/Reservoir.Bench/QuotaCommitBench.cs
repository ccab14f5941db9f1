using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;

using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// What quotas add to a commit, in steady state and with little data, so that the device's
/// flush (the same with quotas off and on, and the noisiest part of a commit on a VM) weighs
/// little: a subvolume of 100 files of 4 KiB and 100 read-only snapshots of it; each commit
/// rewrites every file (100 extents let go of, shared with every snapshot, and 100 new ones).
/// Mounts alternate quotas off and on; each runs 200 untimed commits, then 500 timed. Prints
/// each commit phase per commit (medians over the mounts) and the on/off ratios.
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --quota-commit [--quick]
/// </summary>
internal static class QuotaCommitBench
{
    private const int Files = 100, Snapshots = 100, Warm = 200, Timed = 500;

    private readonly record struct Phases(double Accounting, double Fold, double Write, double Flush, double Total);

    public static void Run(bool quick)
    {
        int pairs = quick ? 2 : 4;
        var off = new List<Phases>();
        var on = new List<Phases>();
        for (int i = 0; i < pairs; i++) { off.Add(One(false)); on.Add(One(true)); }
        Console.WriteLine();
        Console.WriteLine($"## quota cost per commit: {Files} files of 4 KiB rewritten per commit, {Snapshots} read-only snapshots; µs per commit, medians of {pairs} mounts each (alternating), {Timed} commits per mount");
        Console.WriteLine("| quotas | accounting | fold | write nodes | superblock + flush | commit | commit without the flush |");
        Console.WriteLine("|--------|-----------:|-----:|------------:|-------------------:|-------:|-------------------------:|");
        foreach (var (name, l) in new[] { ("off", off), ("on", on) })
            Console.WriteLine($"| {name,-6} | {M(l, p => p.Accounting),10:F1} | {M(l, p => p.Fold),4:F1} | {M(l, p => p.Write),11:F1} | {M(l, p => p.Flush),18:F1} | {M(l, p => p.Total),6:F1} | {M(l, p => p.Total - p.Flush),24:F1} |");
        Console.WriteLine($"on/off: commit {M(on, p => p.Total) / M(off, p => p.Total):F2}, without the flush {M(on, p => p.Total - p.Flush) / M(off, p => p.Total - p.Flush):F2}");
    }

    private static double M(List<Phases> l, Func<Phases, double> f)
    {
        var v = l.Select(f).Order().ToList();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    private static Phases One(bool quotas)
    {
        return BenchFs.OnScratchImage("qcommit", 1UL << 30, new MountOptions { CommitIntervalMs = 0 }, new DataOptions { WritebackIntervalMs = 0 }, fs =>
        {
            if (quotas) Check(fs.EnableQuota());
            Check(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
            var data = new byte[4096];
            var files = BenchFs.CreateFiles(fs, sv.Ino, Files, data);
            Check(fs.Sync());
            for (int i = 0; i < Snapshots; i++) Check(fs.CreateSnapshot(sv.Ino, Filesystem.RootIno, $"s{i}", readOnly: true, out _));
            Check(fs.Sync());
            var st = fs.Fs.Stats;
            long a0 = 0, f0 = 0, w0 = 0, fl0 = 0, t0 = 0, c0 = 0;
            for (int round = 0; round < Warm + Timed; round++)
            {
                if (round == Warm) (a0, f0, w0, fl0, t0, c0) = (st.CommitAccountingMicros, st.CommitFoldMicros, st.CommitWriteMicros, st.CommitFlushMicros, st.CommitMicrosTotal, st.Commits);
                data[0] = (byte)round;
                foreach (var f in files) Check(fs.Write(f, 0, data, out _));
                Check(fs.Sync());
            }
            double n = st.Commits - c0;
            return new Phases((st.CommitAccountingMicros - a0) / n, (st.CommitFoldMicros - f0) / n, (st.CommitWriteMicros - w0) / n, (st.CommitFlushMicros - fl0) / n, (st.CommitMicrosTotal - t0) / n);
        });
    }

}

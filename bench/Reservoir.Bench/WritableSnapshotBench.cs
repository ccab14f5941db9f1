using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;

using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// The golden-image case of docs/SNAPSHOTS.md §3, "Cost": a subvolume with one 64 KiB file, N
/// writable snapshots of it, then each snapshot in turn rewrites the file and commits (N
/// commits, each letting go of the same extent once more). Prints the accounting's time over
/// all N commits and per commit, and the EXTENT_OWNER_REF lookups, with referrer sets kept (the
/// default) and without (the search alone, quadratic in N; skipped above 2,000 snapshots,
/// where it would run for minutes).
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --writable-snapshots [--quick]
/// </summary>
internal static class WritableSnapshotBench
{
    private const int FileBytes = 64 << 10;

    public static void Run(bool quick)
    {
        int[] counts = quick ? [100, 1000] : [100, 1000, 10_000];
        Console.WriteLine();
        Console.WriteLine($"## golden image: N writable snapshots of a subvolume with one {FileBytes >> 10} KiB file, each rewrites it and commits; quotas on");
        Console.WriteLine("| snapshots | accounting, all N commits, sets kept (ms) | per commit (µs) | lookups | accounting, all N commits, search only (ms) | per commit (µs) | lookups | commit, sets kept (µs, median) |");
        Console.WriteLine("|----------:|------------------------------------------:|----------------:|--------:|--------------------------------------------:|----------------:|--------:|-------------------------------:|");
        One(50, 32); One(50, int.MaxValue); // warm-up
        foreach (int n in counts)
        {
            var kept = One(n, 32);
            var search = n <= 2000 ? One(n, int.MaxValue) : default;
            string s = n <= 2000 ? $"{search.AccountingMs,44:N1} | {search.AccountingMs * 1000 / n,15:N1} | {search.Probes,7:N0}" : $"{"(skipped)",44} | {"",15} | {"",7}";
            Console.WriteLine($"| {n,9:N0} | {kept.AccountingMs,41:N1} | {kept.AccountingMs * 1000 / n,15:N1} | {kept.Probes,7:N0} | {s} | {kept.CommitMedianMicros,30:N0} |");
        }
    }

    private readonly record struct Result(double AccountingMs, long Probes, double CommitMedianMicros);

    private static Result One(int snapshots, int referrerSetAfter)
    {
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        var options = new MountOptions { CommitIntervalMs = 0, ReferrerSetAfter = referrerSetAfter };
        return BenchFs.OnScratchImage("golden", 2UL << 30, options, new DataOptions { WritebackIntervalMs = 0 }, fs =>
        {
            Check(fs.EnableQuota());
            Check(fs.CreateSubvolume(Filesystem.RootIno, "golden", 0, 0, out var golden));
            Check(fs.Create(golden.Ino, "f", 0x1A4, 0, 0, out var f));
            Check(fs.Write(f.Ino, 0, data, out _));
            Check(fs.Mkdir(Filesystem.RootIno, "snaps", 0x1ED, 0, 0, out var dir));
            Check(fs.Sync());
            var files = new ulong[snapshots];
            for (int i = 0; i < snapshots; i++)
            {
                Check(fs.CreateSnapshot(golden.Ino, dir.Ino, $"s{i}", readOnly: false, out var s));
                Check(fs.Lookup(s.Ino, "f", out var sf));
                files[i] = sf.Ino;
            }
            Check(fs.Sync());
            var st = fs.Fs.Stats;
            long a0 = st.CommitAccountingMicros, p0 = st.OwnerRefProbes;
            var commits = new List<double>(snapshots);
            for (int i = 0; i < snapshots; i++)
            {
                data[0] = (byte)(i + 1);
                Check(fs.Write(files[i], 0, data, out _));
                long c0 = st.CommitMicrosTotal;
                Check(fs.Sync());
                commits.Add(st.CommitMicrosTotal - c0);
            }
            commits.Sort();
            return new Result((st.CommitAccountingMicros - a0) / 1000.0, st.OwnerRefProbes - p0, commits[commits.Count / 2]);
        });
    }

}

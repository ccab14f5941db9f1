using Reservoir.Device;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;

using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// The golden-image case of docs/SNAPSHOTS.md §3, "Cost": a subvolume with one 64 KiB file, N
/// writable snapshots of it, then each snapshot in turn rewrites the file and commits (N
/// commits, each letting go of the same extent once more). Prints the accounting's time over
/// all N commits and per commit, and the EXTENT_OWNER_REF lookups, with referrer entries kept
/// (the default) and without (the search alone, quadratic in N; skipped above 2,000 snapshots,
/// where it would run for minutes). Then the same with many extents (<see cref="ManyExtents"/>).
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --writable-snapshots [--quick]
/// (or --writable-many 1500x1000,… [--tenants 3] for the many-extents table alone, N snapshots × F files)
/// </summary>
internal static class WritableSnapshotBench
{
    private const int FileBytes = 64 << 10;

    public static void Run(bool quick)
    {
        int[] counts = quick ? [100, 1000] : [100, 1000, 10_000];
        Console.WriteLine();
        Console.WriteLine($"## golden image: N writable snapshots of a subvolume with one {FileBytes >> 10} KiB file, each rewrites it and commits; quotas on");
        Console.WriteLine("| snapshots | accounting, all N commits, entries kept (ms) | per commit (µs) | lookups | accounting, all N commits, search only (ms) | per commit (µs) | lookups | commit, entries kept (µs, median) |");
        Console.WriteLine("|----------:|---------------------------------------------:|----------------:|--------:|--------------------------------------------:|----------------:|--------:|----------------------------------:|");
        One(50, 32); One(50, int.MaxValue); // warm-up
        foreach (int n in counts)
        {
            var kept = One(n, 32);
            var search = n <= 2000 ? One(n, int.MaxValue) : default;
            string s = n <= 2000 ? $"{search.AccountingMs,44:N1} | {search.AccountingMs * 1000 / n,15:N1} | {search.Probes,7:N0}" : $"{"(skipped)",44} | {"",15} | {"",7}";
            Console.WriteLine($"| {n,9:N0} | {kept.AccountingMs,44:N1} | {kept.AccountingMs * 1000 / n,15:N1} | {kept.Probes,7:N0} | {s} | {kept.CommitMedianMicros,33:N0} |");
        }
        ManyExtents(quick ? [(200, 250)] : [(1000, 1000), (2000, 1000)]);
    }

    /// <summary>
    /// The same with many extents: the golden subvolume holds <c>files</c> files of 4 KiB, and
    /// each of N writable snapshots in turn deletes all of them and commits, so every commit
    /// lets go of every golden extent once more. What the accounting keeps in memory per extent
    /// is what this shows (the first design kept each extent's whole set of referrers, N·F ids
    /// in all: past its bound it dropped sets and searched again every commit), with the
    /// lookups and the accounting's time over all N commits. With <paramref name="tenants"/>,
    /// the snapshots are assigned by hand to that many groups in turn (interleaved, as tenants'
    /// clones come), so each commit also asks whether another member of the group of the
    /// snapshot letting go still has each extent (the group sides of docs/SNAPSHOTS.md §3);
    /// the run then includes a recount for the assignments.
    /// </summary>
    public static void ManyExtents((int Snapshots, int Files)[] cases, int tenants = 0, bool remount = false)
    {
        Console.WriteLine();
        Console.WriteLine($"## golden image, many extents: N writable snapshots of a subvolume with F files of 4 KiB, each snapshot deletes every file and commits; quotas on{(tenants > 0 ? $", snapshots in {tenants} interleaved groups" : "")}{(remount ? "; unmounted and mounted again after half of the snapshots" : "")}");
        string extra = remount ? " first commit after the remount: lookups | its accounting (ms) |" : "";
        Console.WriteLine("| snapshots | files | accounting, all N commits (ms) | per commit (µs) | lookups per commit | lookups per extent let go of | group ids walked per commit | referrer ids kept at most | entries kept at the end | run (s) |" + extra);
        Console.WriteLine("|----------:|------:|-------------------------------:|----------------:|-------------------:|-----------------------------:|----------------------------:|--------------------------:|------------------------:|--------:|" + (remount ? "------------------------------------------:|--------------------:|" : ""));
        foreach (var (n, files) in cases)
        {
            var data = new byte[4096];
            new Random(2).NextBytes(data);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            string img = Path.Combine(Path.GetTempPath(), $"bench-golden-many-{Environment.ProcessId}.img");
            try
            {
                using var dev = FileBlockDevice.Create(img, 4UL << 30);
                Filesystem.Format(dev);
                var options = new MountOptions { CommitIntervalMs = 0 };
                var dopt = new DataOptions { WritebackIntervalMs = 0 };
                var fs = Filesystem.Mount(dev, options, dopt);
                try
                {
                    Check(fs.EnableQuota());
                    Check(fs.CreateSubvolume(Filesystem.RootIno, "golden", 0, 0, out var golden));
                    BenchFs.CreateFiles(fs, golden.Ino, files, data);
                    Check(fs.Mkdir(Filesystem.RootIno, "snaps", 0x1ED, 0, 0, out var dir));
                    Check(fs.Sync());
                    var snaps = new ulong[n];
                    for (int t = 1; t <= tenants; t++) Check(fs.CreateQgroup(QgroupId.Of(1, (ulong)t)));
                    for (int i = 0; i < n; i++)
                    {
                        Check(fs.CreateSnapshot(golden.Ino, dir.Ino, $"s{i}", readOnly: false, out var s));
                        snaps[i] = s.Ino;
                        // Ids follow creation: the golden subvolume is 256, its snapshots 257 on.
                        if (tenants > 0) Check(fs.AssignQgroup(QgroupId.Of(0, 257 + (ulong)i), QgroupId.Of(1, (ulong)(i % tenants + 1))));
                    }
                    Check(fs.Sync());
                    double ms = 0;
                    long probes = 0, walked = 0, most = 0, firstProbes = 0;
                    double firstMs = 0;
                    var st = fs.Fs.Stats;
                    long a0 = st.CommitAccountingMicros, p0 = (st.OwnerRefProbes + st.EarlyProbes), g0 = st.GroupCandidatesWalked;
                    for (int i = 0; i < n; i++)
                    {
                        if (remount && i == n / 2)
                        {
                            // What the counters say so far, then a new mount of the same image.
                            (ms, probes, walked) = (ms + (st.CommitAccountingMicros - a0) / 1000.0, probes + (st.OwnerRefProbes + st.EarlyProbes) - p0, walked + st.GroupCandidatesWalked - g0);
                            fs.Dispose();
                            fs = Filesystem.Mount(dev, options, dopt);
                            st = fs.Fs.Stats;
                            (a0, p0, g0) = (st.CommitAccountingMicros, (st.OwnerRefProbes + st.EarlyProbes), st.GroupCandidatesWalked);
                        }
                        for (int f = 0; f < files; f++) Check(fs.Unlink(snaps[i], $"f{f}"));
                        Check(fs.Sync());
                        if (remount && i == n / 2) (firstProbes, firstMs) = ((st.OwnerRefProbes + st.EarlyProbes) - p0, (st.CommitAccountingMicros - a0) / 1000.0);
                        most = Math.Max(most, fs.Fs.ReferrerEntries.Ids);
                    }
                    (ms, probes, walked) = (ms + (st.CommitAccountingMicros - a0) / 1000.0, probes + (st.OwnerRefProbes + st.EarlyProbes) - p0, walked + st.GroupCandidatesWalked - g0);
                    string cols = remount ? $" {firstProbes,42:N0} | {firstMs,19:N1} |" : "";
                    Console.WriteLine($"| {n,9:N0} | {files,5:N0} | {ms,30:N1} | {ms * 1000 / n,15:N0} | {(double)probes / n,18:N1} | {(double)probes / n / files,28:N2} | {(double)walked / n,27:N1} | {most,25:N0} | {fs.Fs.ReferrerEntries.Count,23:N0} | {sw.Elapsed.TotalSeconds,7:N1} |" + cols);
                }
                finally { fs.Dispose(); }
            }
            finally { File.Delete(img); }
        }
    }

    private readonly record struct Result(double AccountingMs, long Probes, double CommitMedianMicros);

    private static Result One(int snapshots, int referrerEntryAfter)
    {
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        var options = new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = referrerEntryAfter };
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
            long a0 = st.CommitAccountingMicros, p0 = (st.OwnerRefProbes + st.EarlyProbes);
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
            return new Result((st.CommitAccountingMicros - a0) / 1000.0, (st.OwnerRefProbes + st.EarlyProbes) - p0, commits[commits.Count / 2]);
        });
    }

}

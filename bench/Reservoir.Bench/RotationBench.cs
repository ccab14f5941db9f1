using System.Diagnostics;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;

using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// Snapshot rotation, the case that stalls btrfs's qgroups: a subvolume of F files whose every
/// file is rewritten between one read-only snapshot and the next, N snapshots in all; then the
/// oldest snapshot is deleted (its F extents, which no one else holds any more, are freed) and
/// the deletion committed, and then a new snapshot is taken after one more rewrite and the
/// oldest deleted again, as a rotation does. Prints the accounting's time and EXTENT_OWNER_REF
/// lookups for each deletion's commits at N = 10 … 1,000: both should stay flat in N.
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --rotation [--quick]
/// </summary>
internal static class RotationBench
{
    private const int Files = 50, FileBytes = 64 << 10;

    public static void Run(bool quick)
    {
        int[] counts = quick ? [10, 100] : [10, 100, 1000];
        Console.WriteLine();
        Console.WriteLine($"## rotation: {Files} files of {FileBytes >> 10} KiB, all rewritten between snapshots, N read-only snapshots; then the oldest deleted (its {Files} extents freed), 3 times; quotas on");
        Console.WriteLine("| snapshots | accounting per deletion (µs, median) | lookups per deletion | commit per deletion (µs, median) |");
        Console.WriteLine("|----------:|-------------------------------------:|---------------------:|---------------------------------:|");
        One(10); // warm-up
        foreach (int n in counts)
        {
            var r = One(n);
            Console.WriteLine($"| {n,9:N0} | {r.AccountingMicros,36:N0} | {r.Probes,20:N0} | {r.CommitMicros,32:N0} |");
        }
    }

    private readonly record struct Result(double AccountingMicros, double Probes, double CommitMicros);

    private static Result One(int snapshots)
    {
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        return OnScratchImage("rotation", 4UL << 30, new MountOptions { CommitIntervalMs = 0 }, new DataOptions { WritebackIntervalMs = 0 }, fs =>
        {
            Check(fs.EnableQuota());
            Check(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
            Check(fs.Mkdir(Filesystem.RootIno, "snaps", 0x1ED, 0, 0, out var snaps));
            var files = CreateFiles(fs, sv.Ino, Files, data);
            int taken = 0;
            void Rewrite()
            {
                data[0]++;
                foreach (var f in files) Check(fs.Write(f, 0, data, out _));
                Check(fs.Sync());
            }
            for (; taken < snapshots; taken++)
            {
                Check(fs.CreateSnapshot(sv.Ino, snaps.Ino, $"s{taken}", readOnly: true, out _));
                Rewrite();
            }
            var acct = new List<double>();
            var probes = new List<double>();
            var commits = new List<double>();
            for (int oldest = 0; oldest < 3; oldest++)
            {
                var st = fs.Fs.Stats;
                long a0 = st.CommitAccountingMicros, p0 = st.OwnerRefProbes + st.EarlyProbes, c0 = st.CommitMicrosTotal;
                Check(fs.DeleteSubvolume(snaps.Ino, $"s{oldest}"));
                fs.SyncSubvolumeDeletions();
                Check(fs.Sync());
                acct.Add(st.CommitAccountingMicros - a0);
                probes.Add(st.OwnerRefProbes + st.EarlyProbes - p0); // the commit's and the early accounting's
                commits.Add(st.CommitMicrosTotal - c0);
                Check(fs.CreateSnapshot(sv.Ino, snaps.Ino, $"s{taken++}", readOnly: true, out _));
                Rewrite();
            }
            return new Result(acct.Order().ElementAt(1), probes.Order().ElementAt(1), commits.Order().ElementAt(1));
        });
    }
}

using System.Diagnostics;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;

using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// Issue 5's scaling goal for reflinks: the accounting's work at commit should follow the
/// extents changed, not the snapshots sharing them, when extents move between subvolumes by
/// clones too. A source subvolume of 100 files of 1 MiB and N read-only snapshots of it; a
/// tenant subvolume then, each phase committed on its own:
/// clone (the tenant clones every file of the source, extents the N snapshots share);
/// source rewrites (the source lets go of them: the snapshots and the tenant keep them);
/// tenant rewrites (the tenant lets go of its clones: only the snapshots keep them);
/// clone from a snapshot (the tenant clones the oldest snapshot's files back, extents no
/// subvolume that wrote or cloned them holds any more). Prints each phase's commit with quotas
/// off and on (medians of rounds alternating the two, the ratio the median of each round's
/// ratio), the accounting's time, and the EXTENT_OWNER_REF lookups per extent (the commit's and
/// the early accounting's): both should stay flat in N. With quotas on every phase ends by
/// checking the source's and the tenant's groups against numbers worked out from the phases.
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --reflinks [--quick] [--counts 0,10000] [--rounds N]
/// </summary>
internal static class ReflinkBench
{
    private const int Files = 100, FileBytes = 1 << 20;
    private const ulong All = (ulong)Files * FileBytes;
    private static readonly string[] Phases = ["clone", "source rewrites", "tenant rewrites", "clone from a snapshot"];

    public static void Run(bool quick, int[]? only = null, int? roundsAsked = null)
    {
        int[] counts = only ?? (quick ? [0, 10, 100, 1000] : [0, 10, 100, 1000, 10_000]);
        int rounds = roundsAsked ?? (quick ? 3 : 7);
        Console.WriteLine();
        Console.WriteLine($"## reflinks: a source subvolume of {Files} files of {FileBytes >> 20} MiB, N read-only snapshots of it, a tenant subvolume; each phase committed alone; medians of {rounds} rounds alternating quotas off and on");
        Console.WriteLine("| snapshots | phase | commit, quotas off (ms) | commit, quotas on (ms) | on/off commit | accounting (µs) | lookups per extent |");
        Console.WriteLine("|----------:|:------|------------------------:|-----------------------:|--------------:|----------------:|-------------------:|");
        // Untimed warm-ups, as in the snapshot benchmark: the accounting's per-commit methods
        // reach their optimized code only after some tens of calls.
        for (int i = 0; i < (quick ? 4 : 8); i++) { One(10, quotas: false); One(10, quotas: true); }
        foreach (int n in counts)
        {
            var off = new List<Phase[]>();
            var on = new List<Phase[]>();
            for (int r = 0; r < rounds; r++)
            {
                // Alternating, and in the other order every other round, so that a noisy
                // stretch of the host and what one mount leaves the next fall on both sides.
                if (r % 2 == 0) { off.Add(One(n, false)); on.Add(One(n, true)); }
                else { on.Add(One(n, true)); off.Add(One(n, false)); }
            }
            for (int p = 0; p < Phases.Length; p++)
            {
                if (p == 3 && n == 0) continue; // no snapshot to clone from
                double offMs = Median(off.Select(x => x[p].CommitMicros / 1000.0));
                double onMs = Median(on.Select(x => x[p].CommitMicros / 1000.0));
                double ratio = Median(on.Zip(off, (a, b) => a[p].CommitMicros / Math.Max(1.0, b[p].CommitMicros)));
                double acct = Median(on.Select(x => x[p].AccountingMicros));
                double lookups = Median(on.Select(x => x[p].Lookups / (double)Files));
                Console.WriteLine($"| {n,9:N0} | {Phases[p],-21} | {offMs,23:N2} | {onMs,22:N2} | {ratio,13:F2} | {acct,15:N0} | {lookups,18:F2} |");
            }
        }
    }

    private readonly record struct Phase(double CommitMicros, double AccountingMicros, double Lookups);

    private static Phase[] One(int snapshots, bool quotas)
    {
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        var dopt = new DataOptions { PageCacheBytes = 512L << 20, DirtyPercent = 100, DirtyBackgroundPercent = 100, WritebackIntervalMs = 0 };
        return OnScratchImage("reflink", 2UL << 30, new MountOptions { CommitIntervalMs = 0 }, dopt, fs =>
        {
            if (quotas) Check(fs.EnableQuota());
            // The source is subvolume 256 and the tenant 257 (made before the snapshots).
            Check(fs.CreateSubvolume(Filesystem.RootIno, "source", 0, 0, out var source));
            Check(fs.CreateSubvolume(Filesystem.RootIno, "tenant", 0, 0, out var tenant));
            ulong sourceGroup = QgroupId.Of(0, 256), tenantGroup = QgroupId.Of(0, 257);
            Check(fs.Mkdir(Filesystem.RootIno, "snaps", 0x1ED, 0, 0, out var snaps));
            var files = CreateFiles(fs, source.Ino, Files, data);
            Check(fs.Sync());
            ulong oldest = 0;
            for (int i = 0; i < snapshots; i++)
            {
                Check(fs.CreateSnapshot(source.Ino, snaps.Ino, $"s{i}", readOnly: true, out var s));
                if (i == 0) oldest = s.Ino;
            }
            Check(fs.Sync());
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            var result = new Phase[Phases.Length];
            var clones = new ulong[Files];
            Phase Measure(Action change)
            {
                var st = fs.Fs.Stats;
                long c0 = st.CommitMicrosTotal, a0 = st.CommitAccountingMicros, p0 = st.OwnerRefProbes + st.EarlyProbes;
                change();
                Check(fs.Sync());
                return new Phase(st.CommitMicrosTotal - c0, st.CommitAccountingMicros - a0, st.OwnerRefProbes + st.EarlyProbes - p0);
            }
            void Expect(ulong group, ulong referenced, ulong exclusive, string after)
            {
                if (!quotas) return;
                var g = fs.Qgroups().Single(q => q.Id == group);
                if (g.Referenced != referenced || g.Exclusive != exclusive)
                    throw new IOException($"after {after} with {snapshots} snapshots: qgroup {QgroupId.Show(group)} has referenced {g.Referenced}, exclusive {g.Exclusive}; expected {referenced} and {exclusive}");
            }
            // With no snapshot the source and the tenant are each other's only sharers.
            ulong keptBySnapshots = snapshots > 0 ? 0 : All;

            result[0] = Measure(() =>
            {
                for (int i = 0; i < Files; i++)
                {
                    Check(fs.Create(tenant.Ino, $"c{i}", 0x1A4, 0, 0, out var c));
                    clones[i] = c.Ino;
                    Check(fs.CloneRange(files[i], 0, c.Ino, 0, 0));
                }
            });
            Expect(tenantGroup, All, 0, "the clone");
            Expect(sourceGroup, All, 0, "the clone");

            data[0] ^= 1;
            result[1] = Measure(() => { foreach (var f in files) Check(fs.Write(f, 0, data, out _)); });
            Expect(sourceGroup, All, All, "the source's rewrite");
            Expect(tenantGroup, All, keptBySnapshots, "the source's rewrite");

            data[1] ^= 1;
            result[2] = Measure(() => { foreach (var c in clones) Check(fs.Write(c, 0, data, out _)); });
            Expect(tenantGroup, All, All, "the tenant's rewrite");

            if (snapshots > 0)
            {
                result[3] = Measure(() =>
                {
                    for (int i = 0; i < Files; i++)
                    {
                        Check(fs.Lookup(oldest, $"f{i}", out var f));
                        Check(fs.Create(tenant.Ino, $"back{i}", 0x1A4, 0, 0, out var c));
                        Check(fs.CloneRange(f.Ino, 0, c.Ino, 0, 0));
                    }
                });
                // The old extents are the snapshots' and now the tenant's too: referenced, not exclusive.
                Expect(tenantGroup, 2 * All, All, "the clone from a snapshot");
            }
            return result;
        });
    }
}

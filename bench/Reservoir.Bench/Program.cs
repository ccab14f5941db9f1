using System.Diagnostics;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;

namespace Reservoir.Bench;

/// <summary>
/// Foundation benchmarks, printed as a table: namespace operations in-process against the same
/// workload through System.IO on tmpfs, B-tree lookups and inserts at 10k/100k/1M keys, commit
/// latency, and lookups in one directory of up to a million entries. Figures are compared within
/// one run (ratios); absolute numbers vary with the machine.
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench [-- --quick]
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        bool quick = args.Contains("--quick");
        if (args.Contains("--write-path")) { WritePathBench.Run(quick); return 0; }
        // --counts 10000,1000: only these snapshot counts (to look at one closely); --rounds 21:
        // more alternating rounds per count (the device flush, a third to a half of each
        // commit, varies by a millisecond on a noisy host; medians of more rounds move less).
        int at = Array.IndexOf(args, "--counts");
        int[]? counts = at >= 0 && at + 1 < args.Length ? args[at + 1].Split(',').Select(int.Parse).ToArray() : null;
        int r = Array.IndexOf(args, "--rounds");
        int? rounds = r >= 0 && r + 1 < args.Length && int.TryParse(args[r + 1], out int n) && n > 0 ? n : null;
        if (args.Contains("--reflinks")) { ReflinkBench.Run(quick, counts, rounds); return 0; }
        if (args.Contains("--snapshots"))
        {
            SnapshotBench.HalfGroup = args.Contains("--half-group");
            // --files 1000: the same 100 MiB in that many files (extents per commit: a fixed
            // cost per commit and one per extent can then be told apart).
            int fi = Array.IndexOf(args, "--files");
            if (fi >= 0 && fi + 1 < args.Length && int.TryParse(args[fi + 1], out int files) && files is > 0 and <= 25_600) SnapshotBench.Files = files;
            SnapshotBench.Run(quick, counts, rounds);
            return 0;
        }
        // --writable-many 1000x1000,2000x1000 [--tenants 3] [--remount]: only the many-extents
        // golden image table (with the snapshots in that many groups; remounted halfway, to see
        // what the first commit after a mount costs while the referrer entries are rebuilt).
        int wm = Array.IndexOf(args, "--writable-many");
        if (wm >= 0 && wm + 1 < args.Length)
        {
            int tn = Array.IndexOf(args, "--tenants");
            WritableSnapshotBench.ManyExtents(args[wm + 1].Split(',').Select(c => c.Split('x')).Select(p => (int.Parse(p[0]), int.Parse(p[1]))).ToArray(),
                tn >= 0 && tn + 1 < args.Length ? int.Parse(args[tn + 1]) : 0, args.Contains("--remount"));
            return 0;
        }
        if (args.Contains("--writable-snapshots")) { WritableSnapshotBench.Run(quick); return 0; }
        if (args.Contains("--fsync")) { FsyncBench.Run(quick); return 0; }
        if (args.Contains("--alloc")) { if (args.Contains("--alloc-types")) AllocBench.Sampler = new AllocationSampler(); AllocBench.Run(quick); return 0; }
        if (args.Contains("--quota-commit")) { QuotaCommitBench.Run(quick); return 0; }
        if (args.Contains("--rotation")) { RotationBench.Run(quick); return 0; }
        string scratch = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        Console.WriteLine($"# Reservoir foundation benchmark ({(quick ? "quick" : "full")}), {Environment.ProcessorCount} cores, scratch {scratch}");
        var real = Console.Out;
        Console.SetOut(TextWriter.Null); // warm-up: let the JIT reach steady state first
        Namespace(scratch, 5_000);
        Console.SetOut(real);
        Namespace(scratch, quick ? 5_000 : 20_000);
        BTreeOps(quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000]);
        CommitLatency(quick);
        BigDirectory(quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000]);
        WritePathBench.Run(quick);
        return 0;
    }

    private static double Rate(int n, Stopwatch sw) => n / sw.Elapsed.TotalSeconds;

    private static void Namespace(string scratch, int n)
    {
        Console.WriteLine();
        Console.WriteLine($"## create / stat / unlink of {n} empty files in one directory (ops/s, best of 3)");
        double rc = 0, rs = 0, ru = 0, tc = 0, ts = 0, tu = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            var (a, b, c) = ReservoirNamespace(scratch, n);
            var (d, e, f) = SystemIoNamespace(scratch, n);
            rc = Math.Max(rc, a); rs = Math.Max(rs, b); ru = Math.Max(ru, c);
            tc = Math.Max(tc, d); ts = Math.Max(ts, e); tu = Math.Max(tu, f);
        }
        Console.WriteLine($"| op     | reservoir (in-process) | System.IO on tmpfs | ratio |");
        Console.WriteLine($"|--------|-----------------------:|-------------------:|------:|");
        Console.WriteLine($"| create | {rc,22:N0} | {tc,18:N0} | {rc / tc,5:F2} |");
        Console.WriteLine($"| stat   | {rs,22:N0} | {ts,18:N0} | {rs / ts,5:F2} |");
        Console.WriteLine($"| unlink | {ru,22:N0} | {tu,18:N0} | {ru / tu,5:F2} |");
    }

    /// <summary>Reservoir in-process on an image file in tmpfs.</summary>
    private static (double, double, double) ReservoirNamespace(string scratch, int n)
    {
        string img = Path.Combine(scratch, $"bench-{Environment.ProcessId}.img");
        double rc, rs, ru;
        using (var dev = FileBlockDevice.Create(img, 1UL << 30))
        {
            Filesystem.Format(dev);
            using var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 30_000 });
            var names = Enumerable.Range(0, n).Select(i => "file" + i).ToArray();
            var sw = Stopwatch.StartNew();
            foreach (var name in names) fs.Create(Filesystem.RootIno, name, 0x1A4, 0, 0, out _);
            rc = Rate(n, sw);
            sw.Restart();
            foreach (var name in names) fs.Lookup(Filesystem.RootIno, name, out _);
            rs = Rate(n, sw);
            sw.Restart();
            foreach (var name in names) fs.Unlink(Filesystem.RootIno, name);
            ru = Rate(n, sw);
        }
        File.Delete(img);
        return (rc, rs, ru);
    }

    /// <summary>System.IO on tmpfs: the kernel's page cache and dcache, the ceiling.</summary>
    private static (double, double, double) SystemIoNamespace(string scratch, int n)
    {
        string dir = Path.Combine(scratch, $"bench-dir-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        var paths = Enumerable.Range(0, n).Select(i => Path.Combine(dir, "file" + i)).ToArray();
        var sw2 = Stopwatch.StartNew();
        foreach (var p in paths) File.Create(p).Dispose();
        double tc = Rate(n, sw2);
        sw2.Restart();
        foreach (var p in paths) _ = new FileInfo(p).Length;
        double ts = Rate(n, sw2);
        sw2.Restart();
        foreach (var p in paths) File.Delete(p);
        double tu = Rate(n, sw2);
        Directory.Delete(dir);
        return (tc, ts, tu);
    }

    private static void BTreeOps(int[] sizes)
    {
        Console.WriteLine();
        Console.WriteLine("## B-tree (16 KiB nodes, 17-byte keys, 32-byte items, random order), operations/s");
        Console.WriteLine("| keys      | inserts/s  | lookups/s  | height |");
        Console.WriteLine("|-----------|-----------:|-----------:|-------:|");
        foreach (int signed in sizes.Prepend(-sizes[0]))
        {
            bool warmup = signed < 0; // the first size once more, unreported, to warm the JIT
            int n = Math.Abs(signed);
            var store = new NodeStore(new MemoryBlockDevice(1UL << 40), RealScheduler.Instance, 16384, Guid.NewGuid(), 1L << 40);
            var ctx = new DetachedTreeContext(store, 16384);
            var t = new BTree(5, store, BTree.NewEmptyRoot(ctx, 5), RealScheduler.Instance);
            var rng = new Random(1);
            var keys = Enumerable.Range(0, n).Select(_ => new Key((ulong)rng.NextInt64(), 1, 0)).Distinct().ToArray();
            var sw = Stopwatch.StartNew();
            foreach (var k in keys) t.TryInsert(ctx, k, 32, out _);
            double ins = Rate(keys.Length, sw);
            rng.Shuffle(keys);
            var path = new TreePath();
            sw.Restart();
            foreach (var k in keys) t.Search(null, k, path);
            double look = Rate(keys.Length, sw);
            if (!warmup) Console.WriteLine($"| {n,9:N0} | {ins,10:N0} | {look,10:N0} | {t.Height,6} |");
        }
    }

    private static void CommitLatency(bool quick)
    {
        Console.WriteLine();
        string img = Path.Combine(Path.GetTempPath(), $"bench-commit-{Environment.ProcessId}.img");
        Console.WriteLine($"## commit latency on an image file in {Path.GetDirectoryName(img)} (one fdatasync of the image per commit), ms");
        Console.WriteLine("| creates per commit | p50    | p99    | max    |");
        Console.WriteLine("|-------------------:|-------:|-------:|-------:|");
        using (var dev = FileBlockDevice.Create(img, 1UL << 30))
        {
            Filesystem.Format(dev);
            using var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 });
            int i = 0;
            foreach (int batch in new[] { 1, 100, 1000 })
            {
                var times = new List<double>();
                int rounds = quick ? 10 : 30;
                for (int r = 0; r < rounds; r++)
                {
                    for (int j = 0; j < batch; j++) fs.Create(Filesystem.RootIno, "c" + i++, 0x1A4, 0, 0, out _);
                    var sw = Stopwatch.StartNew();
                    fs.Sync();
                    times.Add(sw.Elapsed.TotalMilliseconds);
                }
                times.Sort();
                Console.WriteLine($"| {batch,18} | {times[times.Count / 2],6:F2} | {times[(int)(times.Count * 0.99)],6:F2} | {times[^1],6:F2} |");
            }
        }
        File.Delete(img);
    }

    private static void BigDirectory(int[] sizes)
    {
        Console.WriteLine();
        Console.WriteLine("## one directory with N entries: lookup rate and device reads per lookup with a cold node cache");
        Console.WriteLine("| entries   | create/s   | lookups/s (warm) | node reads per cold lookup | fs tree height |");
        Console.WriteLine("|-----------|-----------:|-----------------:|---------------------------:|---------------:|");
        foreach (int n in sizes)
        {
            var dev = new MemoryBlockDevice(8UL << 30);
            Filesystem.Format(dev);
            double cr;
            using (var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0, DirtyCommitBytes = 256L << 20 }))
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) fs.Create(Filesystem.RootIno, "entry-" + i, 0x1A4, 0, 0, out _);
                cr = Rate(n, sw);
            }
            using (var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0, ReadOnly = true, NodeCacheBytes = 1 }))
            {
                var rng = new Random(2);
                int probes = 2000;
                long reads0 = fs.Fs.Store.Reads;
                for (int i = 0; i < probes; i++)
                {
                    fs.Fs.Store.DropAll();
                    fs.Lookup(Filesystem.RootIno, "entry-" + rng.Next(n), out _);
                }
                double perLookup = (fs.Fs.Store.Reads - reads0) / (double)probes;
                fs.Fs.Store.CacheLimit = 1 << 20;
                for (int i = 0; i < 100_000; i++) fs.Lookup(Filesystem.RootIno, "entry-" + rng.Next(n), out _);
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < 100_000; i++) fs.Lookup(Filesystem.RootIno, "entry-" + rng.Next(n), out _);
                double lr = Rate(100_000, sw);
                Console.WriteLine($"| {n,9:N0} | {cr,10:N0} | {lr,16:N0} | {perLookup,26:F1} | {fs.Top.Tree.Height,14} |");
            }
        }
    }
}

using System.Diagnostics;
using Microsoft.Win32.SafeHandles;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;

namespace Reservoir.Bench;

/// <summary>
/// fsync-heavy appends (a database log): 4 KiB write + fsync, the file growing, in-process on an
/// image file against the same loop through System.IO (write + fdatasync) on a plain file of the
/// same disk, which is the floor: one device flush per fsync. Prints what each fsync of the
/// engine costs: device flushes, nodes written, commit time.
/// </summary>
internal static class FsyncBench
{
    public static void Run(bool quick)
    {
        int n = quick ? 500 : 2000;
        Console.WriteLine();
        Console.WriteLine($"## fsync-append: {n} × (4 KiB append + fsync), image and plain file on {Path.GetTempPath()} (ops/s)");
        Engine(n / 5, true); Engine(n / 5, false); Plain(n / 5); // warm-up
        // Alternating, three rounds each; medians.
        var withLog = new List<(double Ops, double Flushes, double Nodes, double CommitUs, double Logged)>();
        var without = new List<(double Ops, double Flushes, double Nodes, double CommitUs, double Logged)>();
        var plain = new List<double>();
        for (int r = 0; r < 3; r++)
        {
            withLog.Add(Engine(n, true));
            without.Add(Engine(n, false));
            plain.Add(Plain(n));
        }
        static T Median<T>(List<T> l, Func<T, double> key) => l.OrderBy(key).ElementAt(l.Count / 2);
        var a = Median(withLog, x => x.Ops);
        var b = Median(without, x => x.Ops);
        double p = plain.Order().ElementAt(1);
        Console.WriteLine("| target | fsyncs/s | device flushes per fsync | nodes written per fsync | commit µs per fsync | fsyncs through the log |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| reservoir, fsync log (default) | {a.Ops:N0} | {a.Flushes:F2} | {a.Nodes:F1} | {a.CommitUs:F0} | {a.Logged:P0} |");
        Console.WriteLine($"| reservoir, notreelog (every fsync commits) | {b.Ops:N0} | {b.Flushes:F2} | {b.Nodes:F1} | {b.CommitUs:F0} | {b.Logged:P0} |");
        Console.WriteLine($"| System.IO write + fdatasync | {p:N0} | 1.00 | | | |");
        Console.WriteLine($"medians of 3 alternating runs; ratio to the plain file: {a.Ops / p:F2} with the log, {b.Ops / p:F2} without; the log's speed-up {a.Ops / b.Ops:F2}x");
    }

    /// <summary>A device that counts flushes.</summary>
    private sealed class CountingDevice(IBlockDevice inner) : IBlockDevice
    {
        public long Flushes;
        public ulong Size => inner.Size;
        public bool ReadOnly => inner.ReadOnly;
        public void WriteGather(ulong offset, IReadOnlyList<ReadOnlyMemory<byte>> buffers) => inner.WriteGather(offset, buffers);
        public void Read(ulong offset, Span<byte> buffer) => inner.Read(offset, buffer);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => inner.Write(offset, data);
        public void Flush() { Flushes++; inner.Flush(); }
        public void Dispose() => inner.Dispose();
    }

    private static (double Ops, double Flushes, double Nodes, double CommitUs, double Logged) Engine(int n, bool log)
    {
        string img = Path.Combine(Path.GetTempPath(), $"bench-fsync-{Environment.ProcessId}.img");
        try
        {
            using (var dev = FileBlockDevice.Create(img, 256UL << 20)) Filesystem.Format(dev);
            using var cdev = new CountingDevice(FileBlockDevice.Open(img));
            using var fs = Filesystem.Mount(cdev, new MountOptions { CommitIntervalMs = 0, FsyncLog = log }, new DataOptions { WritebackIntervalMs = 0 });
            fs.Create(Filesystem.RootIno, "log", 0x1A4, 0, 0, out var a);
            fs.Sync();
            // The first fsync after the mount commits (the image has no log yet).
            fs.Write(a.Ino, 0, new byte[1], out _);
            fs.Fsync(a.Ino);
            var block = new byte[4096];
            new Random(3).NextBytes(block);
            long f0 = cdev.Flushes, nodes0 = fs.Stats.NodesWritten, c0 = fs.Stats.CommitMicrosTotal;
            long lw0 = fs.Stats.FsyncLogWrites;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                fs.Write(a.Ino, (ulong)i * 4096, block, out _);
                fs.Fsync(a.Ino);
            }
            double secs = sw.Elapsed.TotalSeconds;
            return (n / secs, (double)(cdev.Flushes - f0) / n, (double)(fs.Stats.NodesWritten - nodes0) / n, (double)(fs.Stats.CommitMicrosTotal - c0) / n, (double)(fs.Stats.FsyncLogWrites - lw0) / n);
        }
        finally { File.Delete(img); }
    }

    private static double Plain(int n)
    {
        string path = Path.Combine(Path.GetTempPath(), $"bench-fsync-{Environment.ProcessId}.dat");
        try
        {
            using var fh = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite);
            var block = new byte[4096];
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                RandomAccess.Write(fh, block, (long)i * 4096);
                FileBlockDevice.DataSync(fh);
            }
            return n / sw.Elapsed.TotalSeconds;
        }
        finally { File.Delete(path); }
    }
}

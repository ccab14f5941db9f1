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
        Engine(n / 5); Plain(n / 5); // warm-up
        var (ops, flushes, nodes, commitUs) = Engine(n);
        double plain = Plain(n);
        Console.WriteLine("| target | fsyncs/s | device flushes per fsync | nodes written per fsync | commit µs per fsync |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        Console.WriteLine($"| reservoir (in-process) | {ops:N0} | {flushes:F2} | {nodes:F1} | {commitUs:F0} |");
        Console.WriteLine($"| System.IO write + fdatasync | {plain:N0} | 1.00 | | |");
        Console.WriteLine($"ratio to the plain file: {ops / plain:F2}");
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

    private static (double Ops, double Flushes, double Nodes, double CommitUs) Engine(int n)
    {
        string img = Path.Combine(Path.GetTempPath(), $"bench-fsync-{Environment.ProcessId}.img");
        try
        {
            using (var dev = FileBlockDevice.Create(img, 256UL << 20)) Filesystem.Format(dev);
            using var cdev = new CountingDevice(FileBlockDevice.Open(img));
            using var fs = Filesystem.Mount(cdev, new MountOptions { CommitIntervalMs = 0 }, new DataOptions { WritebackIntervalMs = 0 });
            fs.Create(Filesystem.RootIno, "log", 0x1A4, 0, 0, out var a);
            fs.Sync();
            var block = new byte[4096];
            new Random(3).NextBytes(block);
            long f0 = cdev.Flushes, nodes0 = fs.Stats.NodesWritten, c0 = fs.Stats.CommitMicrosTotal;
            long a0 = fs.Stats.CommitAccountingMicros, fo0 = fs.Stats.CommitFoldMicros, w0 = fs.Stats.CommitWriteMicros, fl0 = fs.Stats.CommitFlushMicros;
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                fs.Write(a.Ino, (ulong)i * 4096, block, out _);
                fs.Fsync(a.Ino);
            }
            double secs = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"  per fsync, µs: total {secs * 1e6 / n:F0}, commit {(double)(fs.Stats.CommitMicrosTotal - c0) / n:F0} = accounting {(double)(fs.Stats.CommitAccountingMicros - a0) / n:F0}"
                + $" + fold {(double)(fs.Stats.CommitFoldMicros - fo0) / n:F0} + node writes {(double)(fs.Stats.CommitWriteMicros - w0) / n:F0} + flush and superblock {(double)(fs.Stats.CommitFlushMicros - fl0) / n:F0}");
            return (n / secs, (double)(cdev.Flushes - f0) / n, (double)(fs.Stats.NodesWritten - nodes0) / n, (double)(fs.Stats.CommitMicrosTotal - c0) / n);
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

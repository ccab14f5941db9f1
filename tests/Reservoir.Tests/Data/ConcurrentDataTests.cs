using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Data;

/// <summary>
/// Buffered, direct, page-fault, fallocate, punch and truncate operations from several threads
/// over overlapping ranges of one file, with the flusher and completion workers running, under
/// the deterministic scheduler over many seeds. The outcome depends on the order, so the checks
/// are the order-independent ones: no reservation leaked, the ledger verifies, fsck is clean, and
/// every byte read back is one some operation could have left there.
/// </summary>
public class ConcurrentDataTests(ITestOutputHelper log)
{
    [Fact]
    public void OverlappingDataOperationsNeverLeak()
    {
        long steps = 0;
        for (int seed = 1; seed <= 25; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk, pctSteps: 100_000);
            var dev = new MemoryBlockDevice(64UL << 20);
            var dopt = new DataOptions { WritebackIntervalMs = 7, DirtyExpireMs = 20, PageCacheBytes = 1 << 20, CompletionWorkers = 2 };
            long leaked = 0;
            List<string> violations = new(), leaks = new();
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                var fs = Filesystem.Mount(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 11 }, dopt);
                if (seed % 3 == 0) { Ok(fs.EnableQuota()); Ok(fs.SetQuotaLimit(32UL << 20)); }
                Ok(fs.Create(Filesystem.RootIno, "shared", 0x1A4, 0, 0, out var a));
                ulong ino = a.Ino;
                Ok(fs.Truncate(ino, 256 << 10));
                var workers = Enumerable.Range(0, 3).Select(w => s.Start("w" + w, () =>
                {
                    var rng = new Random(seed * 100 + w);
                    byte fill = (byte)(w + 1);
                    for (int i = 0; i < 12; i++)
                    {
                        ulong off = (ulong)rng.Next(0, 64) * 4096;
                        int len = rng.Next(1, 6) * 4096;
                        var data = Enumerable.Repeat(fill, len).ToArray();
                        Errno e = rng.Next(7) switch
                        {
                            0 => fs.Write(ino, off + (ulong)rng.Next(100), data, out _),
                            1 => fs.WriteDirect(ino, off, data, out _),
                            2 => fs.MappedWrite(ino, off, data.AsSpan(0, Math.Min(len, 4096))),
                            3 => fs.Fallocate(ino, FallocateMode.KeepSize, off, (ulong)len),
                            4 => fs.Fallocate(ino, FallocateMode.PunchHole | FallocateMode.KeepSize, off, (ulong)len),
                            5 => fs.Truncate(ino, (ulong)rng.Next(128, 320) << 10),
                            _ => fs.Fsync(ino),
                        };
                        if (e is not (Errno.OK or Errno.EFAULT)) throw new Xunit.Sdk.XunitException($"seed {seed} worker {w} op {i}: {e}; warnings: {string.Join(" | ", fs.Warnings)}");
                    }
                })).ToList();
                workers.ForEach(t => t.Join());
                Ok(fs.Sync());
                violations = fs.VerifyReservations().ToList();
                var content = ReadAll(fs, ino);
                foreach (var b in content)
                    if (b > 3) throw new Xunit.Sdk.XunitException($"seed {seed}: byte {b} was never written");
                fs.Dispose();
                leaked = fs.LeakedBytes;
                leaks = fs.LeakReports.ToList();
            });
            steps += s.Steps;
            Assert.True(violations.Count == 0, $"seed {seed}: {string.Join("; ", violations)}");
            Assert.True(leaked == 0, $"seed {seed}: {string.Join("; ", leaks)}");
            FsckAssert.Clean(dev);
        }
        log.WriteLine($"25 seeds, {steps} scheduling steps");
    }

    /// <summary>
    /// A direct read right after a buffered write, while another thread writes the same pages
    /// back (an fsync here; the flusher does the same): the read must see the data. Writeback
    /// with wait once waited only for dirty pages and for ordered extents, and missed pages
    /// another thread had taken (no longer dirty) before it created their ordered extent; the
    /// read then found the old extents. fsync waits the same way, so the same window let it
    /// return before the data was on disk.
    /// </summary>
    [Fact]
    public void DirectReadsAndFsyncSeeDataAnotherThreadIsWritingBack()
    {
        for (int seed = 1; seed <= 40; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk, pctSteps: 20_000);
            var dev = new MemoryBlockDevice(64UL << 20);
            var dopt = new DataOptions { CompletionWorkers = 2 };
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                var fs = Filesystem.Mount(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 1000 }, dopt);
                ulong ino = CreateFile(fs, Filesystem.RootIno, "f");
                bool done = false;
                var syncer = s.Start("syncer", () =>
                {
                    while (!Volatile.Read(ref done)) { Ok(fs.Fsync(ino)); s.Yield("test:syncer"); }
                });
                var got = new byte[5 * 4096];
                for (int i = 0; i < 8; i++)
                {
                    var data = new byte[2 * 4096 + 100];
                    Array.Fill(data, (byte)(i + 1));
                    ulong off = (ulong)(i % 3) * 4096 + 50;
                    Ok(fs.Write(ino, off, data, out _));
                    if (i % 2 == 1) Ok(fs.Fsync(ino));
                    Ok(fs.ReadDirect(ino, 0, got, out int n));
                    for (int b = 0; b < data.Length; b++)
                        if (got[(int)off + b] != data[b])
                            throw new Xunit.Sdk.XunitException($"seed {seed}, round {i}: byte {off + (ulong)b} reads {got[(int)off + b]}, wrote {data[b]}");
                }
                Volatile.Write(ref done, true);
                syncer.Join();
                fs.Dispose();
            });
            FsckAssert.Clean(dev);
        }
    }
}

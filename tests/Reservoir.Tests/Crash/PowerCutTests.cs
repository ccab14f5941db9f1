using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>
/// Runs a deterministic workload on <see cref="CrashSimDevice"/>, recording the namespace after
/// every completed sync. Then reruns it with the power cut at sampled device operations, keeps
/// a random subset of the unflushed writes (sometimes torn), and requires the remains to mount,
/// pass fsck, and equal the state of the last completed commit or of the one in flight.
/// </summary>
public class PowerCutTests(ITestOutputHelper log)
{
    private sealed record Snapshot(long OpsAtEnd, SortedDictionary<string, string> State);

    /// <summary>The workload; returns the snapshots taken after each successful Sync.</summary>
    private static List<Snapshot> Workload(Filesystem fs, CrashSimDevice dev, int seed, int steps)
    {
        var rng = new Random(seed);
        var snaps = new List<Snapshot>();
        var files = new List<string>();
        var dirs = new List<ulong> { Filesystem.RootIno };
        for (int i = 0; i < steps; i++)
        {
            int op = rng.Next(100);
            ulong dir = dirs[rng.Next(dirs.Count)];
            string name = "n" + rng.Next(12);
            Errno e;
            if (op < 25)
            {
                e = fs.Create(dir, name, 0x1A4, 0, 0, out var a);
                if (e == Errno.OK)
                {
                    var data = new byte[rng.Next(1, 40_000)];
                    rng.NextBytes(data);
                    e = fs.Write(a.Ino, 0, data, out _);
                }
            }
            else if (op < 35)
            {
                e = fs.Mkdir(dir, name, 0x1ED, 0, 0, out var a);
                if (e == Errno.OK) dirs.Add(a.Ino);
            }
            else if (op < 55)
            {
                e = fs.Lookup(dir, name, out var a);
                if (e == Errno.OK && a.IsReg)
                {
                    var data = new byte[rng.Next(1, 20_000)];
                    rng.NextBytes(data);
                    e = fs.Write(a.Ino, (ulong)rng.Next(0, 50_000), data, out _);
                }
            }
            else if (op < 65) e = fs.Unlink(dir, name);
            else if (op < 75) e = fs.Rename(dir, name, dirs[rng.Next(dirs.Count)], "n" + rng.Next(12));
            else if (op < 82)
            {
                e = fs.Lookup(dir, name, out var a);
                if (e == Errno.OK && a.IsReg) e = fs.Truncate(a.Ino, (ulong)rng.Next(0, 30_000));
            }
            else if (op < 86) e = fs.Rmdir(dir, name);
            else
            {
                e = fs.Sync();
                if (e == Errno.OK) snaps.Add(new Snapshot(dev.Ops, Capture(fs)));
            }
            if (e is Errno.EIO or Errno.EUCLEAN || dev.Dead) break;
        }
        if (!dev.Dead && fs.Sync() == Errno.OK) snaps.Add(new Snapshot(dev.Ops, Capture(fs)));
        return snaps;
    }

    internal static SortedDictionary<string, string> Capture(Filesystem fs)
    {
        var state = new SortedDictionary<string, string>(StringComparer.Ordinal);
        void Walk(ulong dir, string path)
        {
            Ok(fs.ListDir(dir, out var entries), path);
            foreach (var e in entries)
            {
                Ok(fs.GetAttr(e.Ino, out var a), path + e.Name);
                if (a.IsDir)
                {
                    state[path + e.Name + "/"] = $"dir nlink {a.Nlink}";
                    Walk(e.Ino, path + e.Name + "/");
                }
                else state[path + e.Name] = $"file {a.Size} {Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(ReadAll(fs, e.Ino)))}";
            }
        }
        Walk(Filesystem.RootIno, "/");
        return state;
    }

    private static MemoryBlockDevice Fresh(int nodeSize)
    {
        return NewDevice(48UL << 20, nodeSize);
    }

    [Theory]
    [InlineData(1, 4096)]
    [InlineData(2, 16384)]
    [InlineData(3, 4096)]
    public void EveryCutPointLeavesACommittedState(int seed, int nodeSize)
    {
        var initial = Fresh(nodeSize);
        // Reference run: where each commit ended, in device operations.
        var refDev = new CrashSimDevice(initial);
        List<Snapshot> snaps;
        using (var fs = Mount(refDev)) snaps = Workload(fs, refDev, seed, 120);
        long total = refDev.Ops;
        Assert.True(snaps.Count >= 3, "workload should commit several times");
        var empty = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var cutRng = new Random(seed * 7919);
        var cuts = Enumerable.Range(0, 40).Select(_ => (long)cutRng.NextInt64(1, total)).Concat(snaps.Select(s => s.OpsAtEnd - 1)).Distinct().OrderBy(x => x).ToList();
        int checkedImages = 0;
        foreach (long cut in cuts)
        {
            var dev = new CrashSimDevice(initial) { CutAfterOps = cut };
            try
            {
                var fs = Mount(dev);
                try { Workload(fs, dev, seed, 120); }
                finally { try { fs.Dispose(); } catch (FsException) { } }
            }
            catch (FsException) { }
            Assert.True(dev.Dead, $"cut at {cut} of {total} should have stopped the device");
            // The last commit known complete before the cut, and the one that may have landed.
            int done = snaps.FindLastIndex(s => s.OpsAtEnd <= cut);
            var before = done >= 0 ? snaps[done].State : empty;
            var inFlight = done + 1 < snaps.Count ? snaps[done + 1].State : null;
            for (int variant = 0; variant < 2; variant++)
            {
                var img = dev.ImageAfterPowerCut(new Random((int)cut * 31 + variant), tear: variant == 1);
                FsckAssert.Clean(img);
                using var fs2 = Mount(img);
                var got = Capture(fs2);
                bool match = got.SequenceEqual(before) || (inFlight != null && got.SequenceEqual(inFlight));
                Assert.True(match, $"seed {seed} cut {cut}/{total} variant {variant}: state matches neither commit {done} nor {done + 1}\n" +
                    $"got: {string.Join(", ", got.Keys)}\nwant: {string.Join(", ", before.Keys)}");
                checkedImages++;
            }
        }
        log.WriteLine($"seed {seed}: {total} device operations, {snaps.Count} commits, {checkedImages} post-cut images checked");
    }

    [Fact]
    public void FsyncedDataSurvivesAPowerCutRightAfterFsyncReturns()
    {
        var initial = Fresh(4096);
        var dev = new CrashSimDevice(initial);
        var data = new byte[123_457];
        new Random(5).NextBytes(data);
        using (var fs = Mount(dev))
        {
            ulong ino = CreateFile(fs, Filesystem.RootIno, "durable", data);
            Ok(fs.Fsync(ino));
            // Not synced: may or may not survive.
            CreateFile(fs, Filesystem.RootIno, "volatile", new byte[10]);
            dev.CutAfterOps = dev.Ops; // power goes now
            try { fs.Dispose(); } catch (FsException) { }
        }
        for (int i = 0; i < 8; i++)
        {
            var img = dev.ImageAfterPowerCut(new Random(i), tear: i % 2 == 1);
            FsckAssert.Clean(img);
            using var fs2 = Mount(img);
            Ok(fs2.Lookup(Filesystem.RootIno, "durable", out var a));
            Assert.Equal(data, ReadAll(fs2, a.Ino));
        }
    }
}

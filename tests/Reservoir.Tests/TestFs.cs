using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;

namespace Reservoir.Tests;

/// <summary>Helpers to make, mount and remount filesystems on memory devices.</summary>
internal static class TestFs
{
    public static MemoryBlockDevice NewDevice(ulong size = 64UL << 20, int nodeSize = 4096, int blockSize = 4096)
    {
        var dev = new MemoryBlockDevice(size);
        Filesystem.Format(dev, new MkfsOptions { NodeSize = nodeSize, BlockSize = blockSize, Label = "test" });
        return dev;
    }

    public static Filesystem Mount(IBlockDevice dev, MountOptions? o = null) =>
        Filesystem.Mount(dev, o ?? new MountOptions { CommitIntervalMs = 0 });

    public static void Ok(Errno e, string what = "")
    {
        if (e != Errno.OK) throw new Xunit.Sdk.XunitException($"{what}: expected OK, got {e}");
    }

    public static ulong CreateFile(Filesystem fs, ulong dir, string name, byte[]? data = null)
    {
        Ok(fs.Create(dir, name, 0x1A4, 0, 0, out var a), "create " + name);
        if (data != null)
        {
            Ok(fs.Write(a.Ino, 0, data, out int n), "write " + name);
            Xunit.Assert.Equal(data.Length, n);
        }
        return a.Ino;
    }

    /// <summary><paramref name="old"/> with <paramref name="data"/> written at
    /// <paramref name="at"/>, grown if it reaches past the end (what a write does to a file).</summary>
    public static byte[] Overlay(byte[] old, int at, byte[] data)
    {
        var r = new byte[Math.Max(old.Length, at + data.Length)];
        old.CopyTo(r, 0);
        data.CopyTo(r, at);
        return r;
    }

    /// <summary>Every name in a directory, "." and ".." included, in readdir's order.</summary>
    public static List<string> DirNames(Filesystem fs, ulong dir)
    {
        var names = new List<string>();
        Ok(fs.ReadDir(dir, 0, e => { names.Add(e.Name); return true; }));
        return names;
    }

    public static byte[] ReadAll(Filesystem fs, ulong ino)
    {
        Ok(fs.GetAttr(ino, out var a));
        var buf = new byte[a.Size];
        Ok(fs.Read(ino, 0, buf, out int n));
        Xunit.Assert.Equal((int)a.Size, n);
        return buf;
    }

    /// <summary>
    /// Engine runs under the seeded deterministic scheduler for seeds 1 … <paramref name="seeds"/>
    /// (PCT on even seeds, a random walk on odd ones), each on a fresh 128 MiB image of 4 KiB
    /// nodes mounted with <paramref name="options"/> and that seed's scheduler. The body notes
    /// what went wrong in its list (threads of its own add under a lock on it); a seed that
    /// noted anything fails the test, naming the seed, and fsck must find every image clean.
    /// </summary>
    public static void UnderScheduler(int seeds, Func<MountOptions> options,
        Action<int, Reservoir.Common.Concurrency.DeterministicScheduler, Filesystem, List<string>> body)
    {
        for (int seed = 1; seed <= seeds; seed++)
        {
            var s = new Reservoir.Common.Concurrency.DeterministicScheduler(seed, seed % 2 == 0
                ? Reservoir.Common.Concurrency.ScheduleStrategy.Pct : Reservoir.Common.Concurrency.ScheduleStrategy.RandomWalk);
            var dev = new MemoryBlockDevice(128UL << 20);
            var failures = new List<string>();
            int thisSeed = seed;
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                var o = options();
                o.Scheduler = s;
                using var fs = Filesystem.Mount(dev, o, new Reservoir.Engine.Data.DataOptions());
                body(thisSeed, s, fs, failures);
            });
            Xunit.Assert.True(failures.Count == 0, $"seed {seed}: {string.Join("; ", failures)}");
            FsckAssert.Clean(dev);
        }
    }
}

internal static class SchedulerRuns
{
    /// <summary><see cref="TestFs.UnderScheduler"/>, failing instead of waiting forever when a
    /// seed hangs (a wait nothing will end is not always a deadlock the scheduler sees: a
    /// thread waiting with a timeout, or the commit timer, keeps time moving).</summary>
    public static void Within(TimeSpan limit, int seeds, Func<Reservoir.Engine.Tx.MountOptions> options,
        Action<int, Reservoir.Common.Concurrency.DeterministicScheduler, Filesystem, List<string>> body)
    {
        var run = Task.Run(() => TestFs.UnderScheduler(seeds, options, body));
        if (!run.Wait(limit)) throw new Xunit.Sdk.XunitException($"no end within {limit.TotalMinutes} minutes: something hangs");
        run.GetAwaiter().GetResult();
    }
}

internal static class FsckAssert
{
    public static void Clean(Reservoir.Device.IBlockDevice dev)
    {
        var r = Reservoir.Engine.Check.Fsck.Run(dev, new Reservoir.Engine.Check.FsckOptions { CheckDataCsums = true });
        if (!r.Clean)
            throw new Xunit.Sdk.XunitException("fsck found problems:\n" + (r.OperationalError ?? "") + "\n" + string.Join("\n", r.Errors.Take(30)));
    }

}

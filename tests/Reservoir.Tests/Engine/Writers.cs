using Reservoir.Common;
using Reservoir.Engine;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Writers that allocate and free data beside an operation on the space (trim,
/// discarding commits, resize) under the deterministic scheduler.</summary>
internal static class Writers
{
    private const ulong Root = Filesystem.RootIno;

    /// <summary>Writers that each make <paramref name="files"/> files (written back at once by
    /// fsync, so extents are allocated while <paramref name="beside"/> runs on a thread of its
    /// own) and unlink every <paramref name="unlinkEvery"/>-th; then every file kept must read
    /// back (and the scheduler's fsck checks every data checksum).</summary>
    public static void Beside(int seed, Reservoir.Common.Concurrency.DeterministicScheduler s, Filesystem fs, List<string> failures,
        int writers, int files, int unlinkEvery, Action<Action<string, Errno>>? beside)
    {
        var kept = new Dictionary<string, byte[]>();
        void Note(string what, Errno e) { if (e != Errno.OK) lock (failures) failures.Add($"{what}: {e}"); }
        var threads = Enumerable.Range(0, writers).Select(w => s.Start($"writer{w}", () =>
        {
            var rng = new Random(seed * 10 + w);
            for (int i = 0; i < files; i++)
            {
                var data = new byte[rng.Next(1, 6) * 65536 + rng.Next(4096)];
                rng.NextBytes(data);
                string name = $"w{w}-{i}";
                Note($"create {name}", fs.Create(Root, name, 0x1A4, 0, 0, out var a));
                Note($"write {name}", fs.Write(a.Ino, 0, data, out _));
                Note("fsync", fs.Fsync(a.Ino));
                if (i % unlinkEvery == unlinkEvery - 1) Note($"unlink {name}", fs.Unlink(Root, name));
                else lock (kept) kept[name] = data;
            }
        })).ToList();
        if (beside != null) threads.Add(s.Start("beside", () => beside(Note)));
        foreach (var t in threads) t.Join();
        foreach (var (name, data) in kept)
        {
            Ok(fs.Lookup(Root, name, out var a));
            if (!ReadAll(fs, a.Ino).AsSpan().SequenceEqual(data)) failures.Add($"{name} differs");
        }
        Ok(fs.Sync());
    }
}

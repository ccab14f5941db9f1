using System.Text.RegularExpressions;
using Reservoir.Common.Concurrency;
using Xunit;

namespace Reservoir.Tests.Concurrency;

/// <summary>
/// Locks made on first use (<see cref="LazyLocks"/>). The early accounting's worker and a sync
/// draining it once each made their own "one batch at a time" lock with <c>??=</c>, and ran two
/// batches over one list at once (the quota model's seed 304 in CI: "collection was modified").
/// </summary>
public class LazyLocksTests
{
    /// <summary>A real scheduler whose locks take a while to make, so that threads using a lock
    /// for the first time at once all get into the window between "none yet" and "stored".</summary>
    private sealed class SlowToMakeLocks : IScheduler
    {
        private readonly RealScheduler _real = new();
        public int Made;
        public FsMutex CreateMutex(string name)
        {
            Interlocked.Increment(ref Made);
            Thread.Sleep(50);
            return _real.CreateMutex(name);
        }
        public FsRwLock CreateRwLock(string name) => _real.CreateRwLock(name);
        public FsThread Start(string name, Action body) => _real.Start(name, body);
        public void Yield(string point) => _real.Yield(point);
        public long NowMs => _real.NowMs;
        public bool IsDeterministic => false;
    }

    [Fact]
    public void ThreadsUsingALockForTheFirstTimeAtOnceAllGetTheSameLock()
    {
        var sched = new SlowToMakeLocks();
        FsMutex? field = null;
        var got = new FsMutex[8];
        using var start = new Barrier(got.Length);
        var threads = Enumerable.Range(0, got.Length).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            got[i] = LazyLocks.Mutex(ref field, sched, "first-use");
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.True(sched.Made > 1, "the threads did not meet in the window: the test shows nothing");
        Assert.All(got, m => Assert.Same(field, m));
    }

    /// <summary>No lock in the engine is made with <c>??=</c> (the race above), checked in the
    /// sources; and the check itself can fail.</summary>
    [Fact]
    public void NoLockIsMadeOnFirstUseWithoutLazyLocks()
    {
        var racy = new Regex(@"\?\?=\s*[\w.]*Create(Mutex|RwLock)\(");
        Assert.Matches(racy, "private FsMutex L => _l ??= Fs.Sched.CreateMutex(\"x\");");
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "Reservoir.slnx"))) d = d.Parent;
        Assert.NotNull(d);
        var found = Directory.EnumerateFiles(Path.Combine(d!.FullName, "src"), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(f => File.ReadLines(f).Where(l => !l.TrimStart().StartsWith("//") && racy.IsMatch(l)).Select(l => $"{Path.GetFileName(f)}: {l.Trim()}"))
            .ToList();
        Assert.True(found.Count == 0, string.Join("\n", found));
    }
}

using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Concurrency;

/// <summary>Real OS threads against one filesystem, with the periodic committer running and
/// commits forced often by a tiny dirty threshold.</summary>
public class ThreadStressTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void ManyThreadsKeepEveryInvariant(int seed)
    {
        var dev = NewDevice(128UL << 20, 4096);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 20, DirtyCommitBytes = 64 << 10 }))
        {
            var wl = new ConcurrentWorkload(fs, workers: 6, opsPerWorker: 250, seed);
            wl.Setup();
            var errors = new List<Exception>();
            var threads = Enumerable.Range(0, 6).Select(w => new Thread(() =>
            {
                try { wl.Worker(w); }
                catch (Exception ex) { lock (errors) errors.Add(ex); }
            })).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromMinutes(3)), "a worker hung"));
            if (errors.Count > 0) throw new AggregateException(errors);
            wl.Verify();
            Assert.True(fs.Stats.Commits > 3, "commits should have happened while workers ran");
            Assert.Equal(0, fs.Stats.ReservationOverruns);
        }
        FsckAssert.Clean(dev);
    }
}

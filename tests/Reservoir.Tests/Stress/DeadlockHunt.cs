using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Stress;
using Xunit;

namespace Reservoir.Tests.StressRuns;

/// <summary>
/// The stress runner over many seeds under the deterministic scheduler, each watched for
/// progress: a run that stops taking scheduling steps is reported with every thread's state (the periodic
/// committer keeps virtual time moving, so a deadlock among the others would otherwise look
/// like a very long run). Found so far: a metadata reservation left behind by a stale grow, two
/// ordered extents over one range (a page re-dirtied before its first had finished), and page
/// locks not released on an exception.
/// </summary>
public class StressSweepTests
{
    [Fact]
#pragma warning disable xUnit1031 // a per-seed time limit is the point of this loop
    public void StressSweepUnderTheDeterministicScheduler()
    {
        for (int seed = 1; seed <= 20; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk, pctSteps: 400_000);
            var dev = new MemoryBlockDevice(256UL << 20);
            var task = Task.Run(() => s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                var rfs = ReservoirFileSystem.Open(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 50 });
                var r = StressRunner.Run(rfs, new StressOptions { Workers = 4, OpsPerWorker = 150, Seed = seed, Scheduler = s });
                rfs.Dispose();
                if (!r.Ok || rfs.Engine.LeakedBytes != 0)
                    throw new Xunit.Sdk.XunitException($"seed {seed}: {string.Join("; ", r.Failures.Take(3))} leaks: {string.Join("; ", rfs.Engine.LeakReports)} warnings: {string.Join(" | ", rfs.Engine.Warnings.Take(3))}");
            }));
            // A hang is no progress (no scheduling step for 30 s), not a long run: on a loaded
            // machine each step waits for the OS to switch threads.
            if (!InterleavingExplorer.WaitWhileProgressing(task, s, TimeSpan.FromSeconds(30)))
                throw new Xunit.Sdk.XunitException($"seed {seed}: no scheduling step for 30 s, stuck at step {s.Steps}: {s.Describe()}");
            if (task.IsFaulted) throw new Xunit.Sdk.XunitException($"seed {seed}: {task.Exception!.InnerException?.Message}");
            FsckAssert.Clean(dev);
        }
    }
#pragma warning restore xUnit1031
}

using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tx;

namespace Reservoir.Stress;

/// <summary>What one explored schedule came to.</summary>
public sealed record ExploreOutcome(int Seed, ScheduleStrategy Strategy, bool Ok, string Message, long Steps, long Operations, TimeSpan Elapsed)
{
    /// <summary>A hang is reported but cannot be undone: the stuck logical threads stay blocked.</summary>
    public bool Hung { get; init; }
    /// <summary>With quotas on: extents whose numbers a commit took from the early accounting.</summary>
    public long EarlyTaken { get; init; }
    /// <summary>With groups above level 0: extents let go of that the early accounting answered
    /// for them too.</summary>
    public long EarlyGroupAnswers { get; init; }
    /// <summary>Answers for extents taken by a clone while groups above level 0 existed.</summary>
    public long EarlyGroupCloneAnswers { get; init; }
    /// <summary>With groups above level 0: memberships ended or made while the workers ran.</summary>
    public int RelationsChanged { get; init; }
    /// <summary>With groups above level 0: the early accounting's questions about who else on one
    /// side of a group has an extent.</summary>
    public long EarlyGroupSearches { get; init; }
    /// <summary>With quotas on: early answers for extents clones share (SHARED_ROOT_REFs) or an
    /// origin let go of (ORIGIN_DROPs).</summary>
    public long EarlySharedAnswers { get; init; }
    /// <summary>Data extents and tree blocks shrinks moved (FsInfo.Relocate.cs).</summary>
    public long RelocatedData { get; init; }
    public long RelocatedBlocks { get; init; }
    /// <summary>With --enospc: transaction starts answered ENOSPC.</summary>
    public long InjectedEnospc { get; init; }
}

/// <summary>
/// The interleaving explorer (issue 6): the engine's real code (stress workers, the flusher,
/// the ordered-extent completion workers, the committer) runs under the seeded deterministic
/// scheduler, which picks the thread that runs at every synchronisation point; with PCT it
/// changes priorities at a few random steps, so a race needing d such changes is found with
/// known probability. A seed names the whole schedule: rerunning it replays the run exactly.
/// Each run ends with every check: the stress model, the reservation ledger, zero leaked bytes,
/// fsck clean; a run that stops making progress (wall clock) is a hang, reported with every
/// logical thread's state.
/// </summary>
public static class InterleavingExplorer
{
    public sealed class Settings
    {
        public int Workers { get; set; } = 4;
        public int OpsPerWorker { get; set; } = 150;
        public int PctDepth { get; set; } = 3;
        public int PctSteps { get; set; } = 400_000;
        /// <summary>Wall-clock time without a single scheduling step after which a run counts as
        /// hung (a thread spinning outside the scheduler, or stuck in a real lock). Progress is
        /// what counts, not total time: on a loaded machine every step waits for the OS.</summary>
        public TimeSpan HangAfter { get; set; } = TimeSpan.FromSeconds(60);
        public ulong DeviceBytes { get; set; } = 256UL << 20;
        /// <summary>Quotas on, with this limit on the top-level group (null: off): the early
        /// accounting's worker, the sync that drains it and the commit that takes its answers
        /// run under the scheduler too, and fsck's recount checks every group at the end.</summary>
        public ulong? QuotaLimit { get; set; }
        /// <summary>With quotas on, groups above level 0 too: group 1/1 in 2/1, the top-level
        /// subvolume in 1/1, and a thread that makes and ends memberships of 1/1 (the top-level
        /// subvolume's, the workers' subvolumes') while the workers run, so the snapshots taken
        /// meanwhile join it or not and memberships change under the early accounting.</summary>
        public bool QuotaGroups { get; set; }
        /// <summary>Where the workers' operations are logged (stress's format; one run, a replay).</summary>
        public TextWriter? Log { get; set; }
        /// <summary>Operation frequencies set over stress's defaults (explore -f op=N, as stress
        /// -f): resize, whiteout, tmpfile, which are off by default, for one.</summary>
        public SortedDictionary<string, int> Frequencies { get; } = new(StringComparer.Ordinal);
        /// <summary>The mount's discard mode: with async, the discard worker runs under the
        /// scheduler beside the workers, the flusher and the committer.</summary>
        public DiscardMode Discard { get; set; }
        /// <summary>ENOSPC injected at about one in this many of the workers' transaction
        /// starts that may fail for space (null: none), the ones the seed picks, and every
        /// operation then checked against the model (stress --check-each): an operation that
        /// fails part way must leave what its answer says.</summary>
        public int? EnospcOneIn { get; set; }
    }

    /// <summary>The strategy a sweep uses for a seed: PCT on even seeds, random walk on odd.</summary>
    public static ScheduleStrategy StrategyFor(int seed) => seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk;

    public static ExploreOutcome Run(int seed, ScheduleStrategy strategy, Settings s)
    {
        var sched = new DeterministicScheduler(seed, strategy, s.PctDepth, s.PctSteps);
        var dev = new MemoryBlockDevice(s.DeviceBytes);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        string? problem = null;
        long injected = 0;
        long ops = 0, early = 0, groupAnswers = 0, groupSearches = 0, sharedAnswers = 0, groupCloneAnswers = 0, relocData = 0, relocBlocks = 0;
        int relationsChanged = 0;
        var task = Task.Run(() => sched.Run(() =>
        {
            Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, sched);
            var rfs = ReservoirFileSystem.Open(dev, new MountOptions { Scheduler = sched, CommitIntervalMs = 50, Discard = s.Discard });
            if (s.QuotaLimit is { } limit)
            {
                if (rfs.Engine.EnableQuota() != Common.Errno.OK) throw new InvalidOperationException("cannot enable quotas");
                if (rfs.Engine.SetQuotaLimit(limit) != Common.Errno.OK) throw new InvalidOperationException("cannot set the quota limit");
            }
            bool done = false;
            FsThread? relations = s.QuotaGroups ? StartRelationChanges(rfs.Engine, sched, seed, () => Volatile.Read(ref done), () => relationsChanged++) : null;
            var so = new StressOptions { Workers = s.Workers, OpsPerWorker = s.OpsPerWorker, Seed = seed, Scheduler = sched, Log = s.Log, CheckEach = s.EnospcOneIn != null };
            if (s.EnospcOneIn is { } oneIn) rfs.Engine.InjectTransactionStartFaults(EnospcFault(seed, oneIn, () => injected++));
            if (s.QuotaGroups)
            {
                // Snapshots and subvolumes several times as often: an extent let go of with two
                // snapshots keeping it, some in a group and some not, is what the groups' searches need.
                so.Frequencies["snapshot"] = 6;
                so.Frequencies["subvol_create"] = 3;
            }
            foreach (var (op, f) in s.Frequencies) so.Frequencies[op] = f;
            var r = StressRunner.Run(rfs, so);
            Volatile.Write(ref done, true);
            relations?.Join();
            rfs.Dispose();
            early = rfs.Engine.Stats.EarlyTaken;
            groupAnswers = rfs.Engine.Stats.EarlyGroupAnswers;
            groupCloneAnswers = rfs.Engine.Stats.EarlyGroupCloneAnswers;
            groupSearches = rfs.Engine.Stats.EarlyGroupSearches;
            sharedAnswers = rfs.Engine.Stats.EarlySharedAnswers;
            (relocData, relocBlocks) = (rfs.Engine.Stats.RelocatedDataExtents, rfs.Engine.Stats.RelocatedTreeBlocks);
            ops = r.Operations;
            var bad = r.Failures.Take(3).ToList();
            if (rfs.Engine.LeakedBytes != 0) bad.Add($"{rfs.Engine.LeakedBytes} leaked bytes: {string.Join("; ", rfs.Engine.LeakReports.Take(3))}");
            if (bad.Count > 0) problem = string.Join("; ", bad);
        }));
        if (!WaitWhileProgressing(task, sched, s.HangAfter))
            return new ExploreOutcome(seed, strategy, false, $"no scheduling step for {s.HangAfter.TotalSeconds:F0} s, stuck at step {sched.Steps}: {sched.Describe()}", sched.Steps, ops, sw.Elapsed) { Hung = true };
        if (task.IsFaulted)
            return new ExploreOutcome(seed, strategy, false, task.Exception!.InnerException?.Message ?? task.Exception.Message, sched.Steps, ops, sw.Elapsed);
        if (problem == null)
        {
            var report = Fsck.Run(dev, new FsckOptions { CheckDataCsums = true });
            if (!report.Clean) problem = "fsck: " + string.Join("; ", report.Errors.Take(3)) + report.OperationalError;
        }
        return new ExploreOutcome(seed, strategy, problem == null, problem ?? "ok", sched.Steps, ops, sw.Elapsed) { EarlyTaken = early, EarlyGroupAnswers = groupAnswers, RelationsChanged = relationsChanged, EarlyGroupSearches = groupSearches, EarlySharedAnswers = sharedAnswers, EarlyGroupCloneAnswers = groupCloneAnswers, RelocatedData = relocData, RelocatedBlocks = relocBlocks, InjectedEnospc = injected };
    }

    /// <summary>The fault <see cref="Settings.EnospcOneIn"/> injects: ENOSPC for the workers'
    /// transaction starts (not the runner's own set-up, nor the background threads') at the
    /// counts a hash of the seed picks, one in <paramref name="oneIn"/>. Under the
    /// deterministic scheduler the threads run one at a time in the seed's order, so the same
    /// starts fail in every replay.</summary>
    public static Func<Common.Errno> EnospcFault(int seed, int oneIn, Action? injected = null)
    {
        const string WorkerThread = DeterministicScheduler.ThreadNamePrefix + StressRunner.WorkerThreadName;
        ulong n = 0;
        return () =>
        {
            if (Thread.CurrentThread.Name?.StartsWith(WorkerThread, StringComparison.Ordinal) != true) return Common.Errno.OK;
            if ((++n * 0x9E3779B97F4A7C15UL >> 40) % (ulong)oneIn != (ulong)seed % (ulong)oneIn) return Common.Errno.OK;
            injected?.Invoke();
            return Common.Errno.ENOSPC;
        };
    }

    /// <summary>
    /// <see cref="Settings.QuotaGroups"/>: groups 1/1 and 2/1 above the top-level subvolume, and
    /// a thread that, up to twelve times at points the seed picks, until <paramref name="done"/>,
    /// makes or ends the membership of 1/1 of the top-level subvolume or of a subvolume the
    /// workers made, calling <paramref name="changed"/> after each. Each change is made by a commit, as `reservoir qgroup assign|remove` makes it.
    /// </summary>
    private static FsThread StartRelationChanges(Filesystem fs, IScheduler sched, int seed, Func<bool> done, Action changed)
    {
        ulong top = Format.Items.QgroupId.Of(0, Engine.Inodes.NodeIds.Decode(Filesystem.RootIno).TreeId);
        ulong g1 = Format.Items.QgroupId.Of(1, 1), g2 = Format.Items.QgroupId.Of(2, 1);
        foreach (var e in (Common.Errno[])[fs.CreateQgroup(g1), fs.CreateQgroup(g2), fs.AssignQgroup(g1, g2), fs.AssignQgroup(top, g1)])
            if (e != Common.Errno.OK) throw new InvalidOperationException($"cannot set up the qgroups: {e}");
        return sched.Start("explore-relations", () =>
        {
            var rng = new Random(seed);
            for (int i = 0; i < 12 && !done(); i++)
            {
                for (int y = rng.Next(50, 400); y > 0 && !done(); y--) sched.Yield("explore-relations");
                if (done()) break;
                // The top-level subvolume or one the workers made (snapshots taken of it from
                // now on join its groups, the older ones stay where they were).
                if (fs.ListSubvolumes(out var subvolumes) != Common.Errno.OK) throw new InvalidOperationException("cannot list the subvolumes");
                ulong q = subvolumes.Count == 0 || rng.Next(3) == 0 ? top : Format.Items.QgroupId.Of(0, subvolumes[rng.Next(subvolumes.Count)].Id);
                bool member = fs.QgroupRelations().Contains((q, g1));
                var e = member ? fs.RemoveQgroupRelation(q, g1) : fs.AssignQgroup(q, g1);
                // A subvolume deleted since the list (its group gone with it) is no failure.
                if (e == Common.Errno.ENOENT && q != top) continue;
                if (e != Common.Errno.OK) throw new InvalidOperationException($"qgroup {(member ? "remove" : "assign")} {Format.Items.QgroupId.Show(q)} 1/1: {e}");
                changed();
            }
        });
    }

    /// <summary>Waits for <paramref name="task"/> as long as the scheduler keeps taking steps;
    /// false when it took none for <paramref name="window"/>. A task that failed has ended: true,
    /// and the caller reports its exception as the run's failure (with its replay command),
    /// where letting it through ended a whole sweep with an internal error.</summary>
    public static bool WaitWhileProgressing(Task task, DeterministicScheduler sched, TimeSpan window)
    {
        long last = -1;
        try
        {
            while (!task.Wait(window))
            {
                long now = sched.Steps;
                if (now == last) return false;
                last = now;
            }
        }
        catch (AggregateException) when (task.IsFaulted) { }
        return true;
    }

    /// <summary>The one-line command that replays an outcome.</summary>
    public static string ReplayCommand(ExploreOutcome o, Settings s) =>
        $"reservoir explore --seed {o.Seed} --strategy {(o.Strategy == ScheduleStrategy.Pct ? "pct" : "random")} -p {s.Workers} -n {s.OpsPerWorker}" +
        (o.Strategy == ScheduleStrategy.Pct ? $" --pct-depth {s.PctDepth}" : "") +
        (s.QuotaLimit is { } q ? $" --quota-limit {q}" : "") + (s.QuotaGroups ? " --quota-groups" : "") + (s.EnospcOneIn is { } e ? $" --enospc {e}" : "") +
        string.Concat(s.Frequencies.Select(f => $" -f {f.Key}={f.Value}")) + (s.Discard != DiscardMode.Off ? $" --discard {s.Discard.ToString().ToLowerInvariant()}" : "");
}

using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Stress;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>
/// The power-cut simulator (`Reservoir.Stress.PowerCutSimulator`, also `reservoir powercut`):
/// a workload on <see cref="CrashSimDevice"/> with the power cut at sampled device operations
/// (random workloads) or at every one (CrashMonkey's ACE sequences); the remains, with unflushed
/// writes dropped or torn, must mount, pass fsck, hold no reservation, and equal the last
/// completed commit or the one in flight.
/// </summary>
public class PowerCutTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData(1, 4096)]
    [InlineData(2, 16384)]
    [InlineData(3, 4096)]
    public void EveryCutPointLeavesACommittedState(int seed, int nodeSize)
    {
        var r = PowerCutSimulator.RunRandom(seed, steps: 120, cuts: 40, nodeSize);
        Assert.True(r.Ok, string.Join("\n", r.Failures.Take(10)));
        Assert.True(r.Commits >= 3, "workload should commit several times");
        // Two images per distinct cut point; the 40 sampled points may repeat.
        Assert.True(r.ImagesChecked >= 70, $"only {r.ImagesChecked} images checked");
        Assert.True(r.Resizes >= 1, "the workload never resized");
        log.WriteLine($"seed {seed}: {r.CutPoints} cut points, {r.Commits} commits and fsyncs ({r.LogWrites} through the fsync log), {r.ImagesChecked} post-cut images checked");
    }

    /// <summary>The random workload with quotas on, in a subvolume in a level-1 group, taking
    /// read-only and writable snapshots, cloning files out of them and moving snapshots' groups
    /// in and out of the group (each a commit with a recount): every remain also passes fsck's recount
    /// of every group and its checks of the quota items (EXTENT_OWNER_REFs, SHARED_ROOT_REFs,
    /// ORIGIN_DROP windows), before and after a read-write mount, which notes again the
    /// ORIGIN_DROPs the cut lost.</summary>
    [Theory]
    [InlineData(11, true)]
    [InlineData(12, false)] // its workload reaches only three durable points, none a membership
    [InlineData(13, true)]
    public void EveryCutPointLeavesExactQuotasWithSnapshotsAndClones(int seed, bool memberships)
    {
        var r = PowerCutSimulator.RunRandom(seed, steps: 200, cuts: 40, 4096, quotas: true);
        Assert.True(r.Ok, string.Join("\n", r.Failures.Take(10)));
        if (memberships) Assert.True(r.Memberships > 0, "no snapshot's group joined or left 1/1");
        Assert.True(r.Snapshots >= 3, $"only {r.Snapshots} snapshots taken");
        Assert.True(r.Commits >= 3, $"only {r.Commits} durable points");
        Assert.True(r.OriginDropsRederived > 0, "no remount found ORIGIN_DROPs pending at its cut to note again");
        log.WriteLine($"seed {seed}: {r.Snapshots} snapshots, {r.Clones} clones out of them, {r.Memberships} memberships, {r.CutPoints} cut points, {r.Commits} durable points, {r.ImagesChecked} images checked, {r.OriginDropsRederived} ORIGIN_DROPs noted again at remounts");
    }

    /// <summary>Every ACE sequence of one core operation followed by fsync, cut at every device
    /// operation.</summary>
    [Fact]
    public void AceSequencesOfOneOperationSurviveEveryCut()
    {
        var r = PowerCutSimulator.RunAce(pairs: false);
        Assert.True(r.Ok, string.Join("\n", r.Failures.Take(10)));
        Assert.Equal(11, r.Workloads);
        Assert.True(r.CutPoints > 50, $"only {r.CutPoints} cut points");
        log.WriteLine($"{r.Workloads} sequences, {r.CutPoints} cut points, {r.ImagesChecked} images checked");
    }

    /// <summary>Every ACE sequence of two core operations, each followed by fsync, cut at every
    /// device operation. (The pairs found what the single operations and the random workloads
    /// missed: a single-flush commit whose superblock landed alone, at a root address holding
    /// an older root block, once passed its check.)</summary>
    [Fact]
    public void AceSequencesOfTwoOperationsSurviveEveryCut()
    {
        var r = PowerCutSimulator.RunAce(pairs: true);
        Assert.True(r.Ok, string.Join("\n", r.Failures.Take(10)));
        // The first fsync after a mount commits (the clean image has no log yet); a later one
        // after a write goes through the fsync log, so these cut points cover log blocks and
        // their flushes too (SPEC.md §9).
        Assert.True(r.LogWrites >= 11, $"only {r.LogWrites} fsyncs used the log");
        Assert.Equal(11 + 11 * 11, r.Workloads);
        log.WriteLine($"{r.Workloads} sequences, {r.CutPoints} cut points, {r.ImagesChecked} images checked");
    }

    [Fact]
    public void FsyncedDataSurvivesAPowerCutRightAfterFsyncReturns()
    {
        var initial = NewDevice(48UL << 20, 4096);
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

    /// <summary>
    /// Once a commit has failed (the device died under it) the filesystem commits nothing
    /// more, so sync and the fsync of a directory (a commit) must answer EIO, not OK, like a
    /// file's fsync (ext4 answers EIO to every fsync after a forced shutdown). They answered OK
    /// until 2026-12-03, which the power-cut simulator's ACE pairs showed once it counted the
    /// fsyncs that answered OK.
    /// </summary>
    [Fact]
    public void SyncAndDirectoryFsyncAnswerEioOnceACommitFailed()
    {
        var dev = new CrashSimDevice(NewDevice(48UL << 20, 4096));
        using var fs = Mount(dev);
        Ok(fs.Mkdir(Filesystem.RootIno, "d", 0x1ED, 0, 0, out var d));
        Ok(fs.Sync());
        CreateFile(fs, d.Ino, "f", new byte[100]);
        dev.CutAfterOps = dev.Ops; // the next device operation fails
        Assert.Equal(Errno.EIO, fs.Fsync(d.Ino));
        Assert.Equal(Errno.EIO, fs.Fsync(Filesystem.RootIno));
        Assert.Equal(Errno.EIO, fs.Sync());
    }
}

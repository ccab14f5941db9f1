using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Data;

/// <summary>
/// The extent status cache against what it caches: filling a miss from the file tree must
/// never overwrite what the cache already knows better than the tree (a Delayed range, dirty
/// with a delalloc reservation, lies over whatever is on disk until writeback).
/// </summary>
public class ExtentStatusCacheTests
{
    private const int Block = 4096;

    /// <summary>
    /// Found by the interleaving explorer (seed 20039): a punch zeroed the partial block at its
    /// edge through the page cache over a preallocated extent that a clone shared, so the block
    /// was copied on write (a delalloc reservation, Delayed in the cache). Later a write from two
    /// blocks before it missed in the cache, asked the tree, which said "preallocated" up to
    /// the extent's end, and cached that over the Delayed block; with the extent no longer
    /// shared, the whole range was planned in place. Writeback then wrote the block in place and
    /// cleared its delalloc mark without giving back the data space it had reserved: 4 KiB of
    /// may_use leaked at every such write. The same shape here in one thread, a write of the
    /// block standing for the punch's edge; the classification is asserted on its own, because
    /// the write path's guard (next test) alone hides the leak.
    /// </summary>
    [Fact]
    public void AMissFilledFromTheTreeKeepsADelayedBlockItOverlaps()
    {
        var (dev, fs, f) = DirtyBlockOverAnExtentNoLongerShared();
        // The cache answers for [4, 7) as the ledger does: block 6 is Delayed.
        var m = fs.Data.AllMappings().Single(x => x.Inode.Ino == f);
        var plan = new List<(ulong Start, ulong End, ExtentStatus Status)>();
        using (m.DataSem.Read()) fs.Data.Classify(m, 4 * Block, 7 * Block, plan);
        Assert.Equal([(4UL * Block, 6UL * Block, ExtentStatus.Unwritten), (6UL * Block, 7UL * Block, ExtentStatus.Delayed)], plan);
        WriteOverTheDirtyBlockAndCheck(dev, fs, f);
    }

    /// <summary>The write path's own guard, with the cache made stale on purpose: a block that
    /// holds a delalloc reservation is planned as a copy whatever the cache says (the ledger has
    /// the last word), so the seed-20039 leak cannot come back by another stale entry.</summary>
    [Fact]
    public void AStaleCacheCannotPlanADelayedBlockInPlace()
    {
        var (dev, fs, f) = DirtyBlockOverAnExtentNoLongerShared();
        var m = fs.Data.AllMappings().Single(x => x.Inode.Ino == f);
        using (m.State.Lock()) m.Es.Insert(6 * Block, 7 * Block, ExtentStatus.Unwritten);
        WriteOverTheDirtyBlockAndCheck(dev, fs, f);
    }

    /// <summary>f with 8 preallocated blocks, once shared by a clone and no longer (committed),
    /// and block 6 dirty with a delalloc reservation from while it was shared.</summary>
    private static (MemoryBlockDevice, Filesystem, ulong) DirtyBlockOverAnExtentNoLongerShared()
    {
        var dev = NewDevice();
        var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        ulong f = CreateFile(fs, Filesystem.RootIno, "f");
        ulong g = CreateFile(fs, Filesystem.RootIno, "g");
        // g: 8 preallocated blocks [0, 32 KiB); f shares them by a clone, which leaves f's
        // cache knowing nothing of the range (it asks the tree when it needs to).
        Ok(fs.Fallocate(g, FallocateMode.Allocate, 0, 8 * Block));
        Ok(fs.Sync());
        Ok(fs.CloneRange(g, 0, f, 0, 8 * Block));
        Ok(fs.Sync());
        // Dirty block 6 alone (the cache learns only [6, 7) from the tree): copied on write,
        // Delayed, with a delalloc reservation.
        Ok(fs.Write(f, 6 * Block, Enumerable.Repeat((byte)6, Block).ToArray(), out _));
        // g goes, and with it the sharing, once committed (a commit alone: block 6 stays
        // dirty): blocks of the extent may now be written in place.
        Ok(fs.Unlink(Filesystem.RootIno, "g"));
        fs.Fs.Commit();
        return (dev, fs, f);
    }

    /// <summary>A write over [4, 7), everything to disk: no reservation left over, the data as
    /// written, no leak at unmount, fsck clean.</summary>
    private static void WriteOverTheDirtyBlockAndCheck(MemoryBlockDevice dev, Filesystem fs, ulong f)
    {
        var four = Enumerable.Repeat((byte)4, 3 * Block).ToArray();
        Ok(fs.Write(f, 4 * Block, four, out _));
        Ok(fs.Sync());
        var problems = fs.Data.VerifyQuiescent();
        Assert.True(problems.Count == 0, string.Join("; ", problems));
        var want = new byte[8 * Block];
        four.CopyTo(want, 4 * Block);
        Assert.Equal(want, ReadAll(fs, f));
        fs.Dispose();
        Assert.True(fs.LeakedBytes == 0, string.Join("; ", fs.LeakReports));
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// An ordered extent that finishes caches its range as Written, which would be wrong for a
    /// page of the range dirtied again meanwhile (Delayed, with a delalloc reservation); no page
    /// is, because every reservation waits for the ordered extents of its range first. An
    /// fsync's writeback and a rewrite of the same blocks race under the deterministic
    /// scheduler, the background flusher off so that the rewrite stays dirty, and the ledger and
    /// the cache are compared with the rewrite still dirty (without the wait in the buffered
    /// write, a Written entry over reserved blocks is reported).
    /// </summary>
    [Fact]
    public void ARewriteRacingWritebackLeavesTheCacheAgreeingWithTheLedger()
    {
        int redirtied = 0;
        for (int seed = 1; seed <= 40; seed++)
        {
            var s = new DeterministicScheduler(seed, seed % 2 == 0 ? ScheduleStrategy.Pct : ScheduleStrategy.RandomWalk, pctSteps: 50_000);
            var dev = new MemoryBlockDevice(64UL << 20);
            var dopt = new DataOptions { WritebackIntervalMs = 0, DirtyPercent = 100, DirtyBackgroundPercent = 100, CompletionWorkers = 2 };
            List<string> dirtyProblems = new(), endProblems = new();
            bool dirtyAfter = false;
            long leaked = 0;
            s.Run(() =>
            {
                Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 }, s);
                var fs = Filesystem.Mount(dev, new MountOptions { Scheduler = s, CommitIntervalMs = 0 }, dopt);
                ulong f = CreateFile(fs, Filesystem.RootIno, "f", Enumerable.Repeat((byte)1, 4 * Block).ToArray());
                var fsync = s.Start("fsync", () => Ok(fs.Fsync(f)));
                var rewrite = s.Start("rewrite", () => Ok(fs.Write(f, Block, Enumerable.Repeat((byte)2, 2 * Block).ToArray(), out _)));
                fsync.Join();
                rewrite.Join();
                var m = fs.Data.AllMappings().Single(x => x.Inode.Ino == f);
                using (m.State.Lock()) dirtyAfter = m.Ledger.Total(RangeBits.Delalloc) != 0;
                dirtyProblems = fs.Data.VerifyQuiescent();
                // Then a third write over the same blocks, and everything to disk.
                Ok(fs.Write(f, 0, Enumerable.Repeat((byte)3, 3 * Block).ToArray(), out _));
                Ok(fs.Sync());
                endProblems = fs.Data.VerifyQuiescent();
                var want = Enumerable.Repeat((byte)3, 3 * Block).Concat(Enumerable.Repeat((byte)1, Block)).ToArray();
                Assert.Equal(want, ReadAll(fs, f));
                fs.Dispose();
                leaked = fs.LeakedBytes;
            });
            if (dirtyAfter) redirtied++;
            Assert.True(dirtyProblems.Count == 0, $"seed {seed}, the rewrite still dirty: {string.Join("; ", dirtyProblems)}");
            Assert.True(endProblems.Count == 0, $"seed {seed}: {string.Join("; ", endProblems)}");
            Assert.Equal(0, leaked);
            FsckAssert.Clean(dev);
        }
        Assert.True(redirtied >= 5, $"the rewrite outlived the fsync's writeback in {redirtied} of 40 seeds");
    }
}

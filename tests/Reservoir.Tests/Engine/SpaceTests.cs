using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine.Tx;
using Reservoir.Engine;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

public class SpaceTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void FullImageAnswersEnospcStaysConsistentAndCanBeEmptied(int nodeSize)
    {
        var dev = NewDevice(16UL << 20, nodeSize);
        var rng = new Random(nodeSize);
        int files = 0;
        long written = 0;
        using (var fs = Mount(dev))
        {
            Errno last = Errno.OK;
            // Data files until a write comes up short or fails.
            for (int i = 0; i < 10_000 && last == Errno.OK; i++)
            {
                last = fs.Create(Filesystem.RootIno, "f" + i, 0x1A4, 0, 0, out var a);
                if (last != Errno.OK) break;
                files++;
                var data = new byte[rng.Next(1, 300_000)];
                rng.NextBytes(data);
                last = fs.Write(a.Ino, 0, data, out int n);
                written += n;
                if (last == Errno.OK && n < data.Length) last = Errno.ENOSPC;
            }
            Assert.Equal(Errno.ENOSPC, last);
            // Metadata-only operations also run out cleanly.
            Errno m = Errno.OK;
            for (int i = 0; i < 100_000 && m == Errno.OK; i++) m = fs.Mkdir(Filesystem.RootIno, "d" + i, 0x1ED, 0, 0, out _);
            Assert.Equal(Errno.ENOSPC, m);
            var sp = fs.Space();
            log.WriteLine($"full: {files} files, {written} bytes; data used {sp.DataUsed}/{sp.DataTotal}, meta used {sp.MetaUsed}/{sp.MetaTotal}, unallocated {sp.Unallocated}");
            Assert.Equal(0, sp.Underflows);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            // Deleting on a full filesystem works (the global reserve pays for it).
            for (int i = 0; i < files; i++) Ok(fs.Unlink(Filesystem.RootIno, "f" + i), "unlink on a full fs");
            Ok(fs.Sync());
            var data = new byte[1 << 20];
            CreateFile(fs, Filesystem.RootIno, "after", data);
            Assert.Equal(0, fs.Stats.ReservationOverruns);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// Writeback allocates data outside any transaction handle, so a commit can run between
    /// the allocation and the ordered extent's finish. That commit must write each
    /// BLOCK_GROUP_ITEM's used as its own extent tree has it: a power cut right after it
    /// leaves an image without the new extent, whose block groups must not count it (fsck
    /// reported "used is X, extents add up to Y" when allocation counted as used at once).
    /// </summary>
    [Fact]
    public void ACommitWhileAnOrderedExtentIsInFlightWritesBlockGroupsAsTheExtentTreeHasThem()
    {
        var dev = NewDevice(64UL << 20, 4096);
        var dopt = new Reservoir.Engine.Data.DataOptions { WritebackIntervalMs = 0, CompletionWorkers = 1 };
        using var entered = new ManualResetEventSlim(false);
        using var release = new ManualResetEventSlim(false);
        MemoryBlockDevice image;
        using (var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }, dopt))
        {
            ulong ino = CreateFile(fs, Filesystem.RootIno, "a");
            Ok(fs.Sync());
            var before = fs.Space();
            var data = new byte[1 << 20];
            new Random(7).NextBytes(data);
            Ok(fs.Write(ino, 0, data, out _));
            dopt.BeforeFinish = _ => { entered.Set(); release.Wait(TimeSpan.FromSeconds(30)); };
            Ok(fs.StartWriteback(ino));
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the ordered extent never reached its finish");
            // The extent is allocated, its EXTENT_ITEM not inserted: a commit now (something
            // else dirty, so it writes) must not count it as used in its block group item.
            Ok(fs.Mkdir(Filesystem.RootIno, "d", 0x1ED, 0, 0, out _));
            fs.Fs.Commit();
            image = dev.Clone();
            var mid = fs.Space();
            Assert.Equal(before.DataUsed + (1UL << 20), mid.DataUsed);  // statfs still sees it as taken
            dopt.BeforeFinish = null;
            release.Set();
            Ok(fs.Sync());
            Assert.Equal(data, ReadAll(fs, ino));
            Assert.Equal(0, fs.Space().Underflows);
        }
        FsckAssert.Clean(image);   // the power cut right after that commit
        using (var m = Mount(image))
            Assert.DoesNotContain(m.Warnings, w => w.Contains("block group"));
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void ReservationsReturnToZeroAndUsageReturnsAfterDeletion()
    {
        var dev = NewDevice(64UL << 20, 4096);
        using var fs = Mount(dev);
        Ok(fs.Sync());
        var before = fs.Space();
        var ino = CreateFile(fs, Filesystem.RootIno, "x", new byte[5 << 20]);
        Ok(fs.Sync());
        var mid = fs.Space();
        Assert.True(mid.DataUsed >= before.DataUsed + (5UL << 20));
        Ok(fs.Unlink(Filesystem.RootIno, "x"));
        Ok(fs.Sync());
        var after = fs.Space();
        Assert.Equal(before.DataUsed, after.DataUsed);
        Assert.Equal(0UL, after.DataMayUse);
        Assert.Equal(0UL, after.MetaMayUse);
        Assert.Equal(0UL, after.DataPinned + after.MetaPinned);
        Assert.Equal(Errno.ENOENT, fs.GetAttr(ino, out _));
    }

    [Fact]
    public void UnlinkedOpenFileLivesUntilClosedAndSurvivesCrashAsOrphan()
    {
        var dev = NewDevice();
        ulong ino;
        using (var fs = Mount(dev))
        {
            ino = CreateFile(fs, Filesystem.RootIno, "tmp", new byte[200_000]);
            Ok(fs.Open(ino, out _));
            Ok(fs.Unlink(Filesystem.RootIno, "tmp"));
            Ok(fs.Write(ino, 0, new byte[] { 1, 2, 3 }, out _));
            var buf = new byte[3];
            Ok(fs.Read(ino, 0, buf, out _));
            Assert.Equal(new byte[] { 1, 2, 3 }, buf);
            Ok(fs.Sync());
            // "Crash" with the file still open: the commit holds an orphan item.
        }
        var r = Reservoir.Engine.Check.Fsck.Run(dev);
        Assert.True(r.Clean);
        Assert.Contains(r.Findings, f => f.Message.Contains("orphan"));
        using (var fs = Mount(dev))
        {
            Assert.Equal(Errno.ENOENT, fs.GetAttr(ino, out _));
            Assert.Contains(fs.Warnings, w => w.Contains("orphan"));
        }
        FsckAssert.Clean(dev);
        var r2 = Reservoir.Engine.Check.Fsck.Run(dev);
        Assert.DoesNotContain(r2.Findings, f => f.Message.Contains("orphan"));
    }
}

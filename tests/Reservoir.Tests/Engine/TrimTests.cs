using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// fstrim (<see cref="Filesystem.Trim"/>): free space handed back to the device, which for a
/// memory device zeroes it (an image file punches holes). What is discarded must be free in the
/// last commit and stay free while it is discarded: the deleted file's blocks read zeros
/// afterwards, every live file reads back and fsck checks every data checksum, also while
/// writers allocate and free beside the trim under the deterministic scheduler. The mount's
/// test runs fstrim(8) on an image (MountTests.FstrimGivesTheImageSpaceBack).
/// </summary>
public class TrimTests
{
    private const ulong Root = Filesystem.RootIno;

    [Fact]
    public void ADeletedFilesBlocksAreDiscardedAndEveryLiveFileReadsBack()
    {
        var dev = NewDevice(128UL << 20);
        ulong k;
        byte[] keep;
        using (var fs = Mount(dev))
        {
            (k, keep, var gone, var extents) = KeepAndGone(fs, dev, 5);
            Ok(fs.Unlink(Root, "gone"));                 // pinned until a commit: Trim commits
            Ok(fs.Trim(0, ulong.MaxValue, 0, out ulong trimmed));
            Assert.True(trimmed >= (ulong)gone.Length, $"trimmed {trimmed}");
            foreach (var x in extents) Assert.True(DeviceZero(dev, x.DiskBytenr, x.DiskLength), $"extent {x.DiskBytenr} not discarded");
            Assert.Equal(keep, ReadAll(fs, k));
            // Nothing is at least as long as the device: nothing to discard.
            Ok(fs.Trim(0, ulong.MaxValue, dev.Size, out ulong none));
            Assert.Equal(0UL, none);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReadOnly = true }))
        {
            Assert.Equal(keep, ReadAll(fs, k));
            Assert.Equal(Errno.EROFS, fs.Trim(0, ulong.MaxValue, 0, out _));
        }
    }

    [Fact]
    public void TrimmingBesideWritersDiscardsOnlyWhatIsFree()
    {
        UnderScheduler(8, () => new MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
            Writers.Beside(seed, s, fs, failures, writers: 2, files: 12, unlinkEvery: 3, beside: note =>
            {
                // 256 KiB a piece: the lock is let go often, so writers allocate in between.
                for (int i = 0; i < 12; i++) note($"trim {i}", fs.Trim(0, ulong.MaxValue, 0, 256UL << 10, out _));
            }));
    }

    [Fact]
    public void WithDiscardEveryCommitDiscardsWhatItFreed()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, Discard = DiscardMode.Sync }))
        {
            var (k, keep, gone, extents) = KeepAndGone(fs, dev, 7);
            Ok(fs.Unlink(Root, "gone"));
            Ok(fs.Sync());                               // the commit that frees them discards them
            foreach (var x in extents) Assert.True(DeviceZero(dev, x.DiskBytenr, x.DiskLength), $"extent {x.DiskBytenr} not discarded");
            Assert.Equal(keep, ReadAll(fs, k));
            // The space is free again at once: the same amount fits.
            CreateFile(fs, Root, "again", gone);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>discard=async: what the commit freed is free space at once (not held back for
    /// the device, nor discarded by the commit); then the discard (the worker's, or here, with
    /// no background threads, the sync's) punches it out, and the live file reads back.</summary>
    [Fact]
    public void WithAsyncDiscardFreedSpaceIsFreeAtOnceAndDiscardedAfter()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, Discard = DiscardMode.Async }))
        {
            var (k, keep, gone, extents) = KeepAndGone(fs, dev, 17);
            Ok(fs.Unlink(Root, "gone"));
            fs.Fs.Commit();                              // the commit alone: free, not discarded
            foreach (var x in extents) Assert.True(fs.Fs.Space.IsFree(x.DiskBytenr, x.DiskLength), $"extent {x.DiskBytenr} not free after the commit");
            Assert.Contains(extents, x => !DeviceZero(dev, x.DiskBytenr, x.DiskLength));
            Assert.True(fs.Fs.Space.UndiscardedCount > 0);
            Ok(fs.Sync());                               // no worker: the sync discards the queue
            foreach (var x in extents) Assert.True(DeviceZero(dev, x.DiskBytenr, x.DiskLength), $"extent {x.DiskBytenr} not discarded");
            Assert.True(fs.Fs.AsyncDiscardedBytes >= gone.Length, $"discarded {fs.Fs.AsyncDiscardedBytes}");
            Assert.Equal(keep, ReadAll(fs, k));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A queued range allocated again before the discard's turn is left alone; the
    /// rest of what was freed is discarded.</summary>
    [Fact]
    public void AnAsyncDiscardLeavesARangeAllocatedAgainBeforeItsTurn()
    {
        var dev = NewDevice(128UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, Discard = DiscardMode.Async });
        var (_, _, _, extents) = KeepAndGone(fs, dev, 19);
        Assert.True(extents.Count >= 2, $"{extents.Count} extents");
        Ok(fs.Unlink(Root, "gone"));
        fs.Fs.Commit();
        var taken = extents[0];
        Assert.True(fs.Fs.Space.ClaimData(taken.DiskBytenr, taken.DiskLength)); // allocated again meanwhile
        fs.Fs.DiscardQueued();
        Assert.False(DeviceZero(dev, taken.DiskBytenr, taken.DiskLength), "a range allocated again was discarded");
        foreach (var x in extents.Skip(1)) Assert.True(DeviceZero(dev, x.DiskBytenr, x.DiskLength), $"extent {x.DiskBytenr} not discarded");
        fs.Fs.Space.FreeReserved(taken.DiskBytenr, taken.DiskLength);
    }

    /// <summary>The discard worker beside writers that allocate what was just freed: a range
    /// allocated again before its turn must be left alone (fsck checks every data checksum,
    /// and every file kept reads back).</summary>
    [Fact]
    public void TheAsyncDiscardWorkerBesideWritersDiscardsOnlyWhatIsStillFree()
    {
        long discarded = 0;
        UnderScheduler(8, () => new MountOptions { CommitIntervalMs = 5, Discard = DiscardMode.Async }, (seed, s, fs, failures) =>
        {
            Writers.Beside(seed, s, fs, failures, writers: 3, files: 14, unlinkEvery: 2, beside: null);
            discarded += fs.Fs.AsyncDiscardedBytes;
        });
        Assert.True(discarded > 0, "the worker discarded nothing");
    }

    /// <summary>What a discarding commit hands the device is still held back from allocation
    /// (pinned) while the discard runs.</summary>
    [Fact]
    public void ADiscardingCommitKeepsItsRangesFromAllocationUntilDiscarded()
    {
        var inner = NewDevice(128UL << 20);
        Filesystem? fs = null;
        var seen = new List<(ulong At, ulong Len, bool FreeDuring)>();
        var dev = new HookedDevice(inner, (at, len) => seen.Add((at, len, fs!.Fs.Space.IsFree(at, len))));
        using (fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, Discard = DiscardMode.Sync }))
        {
            var data = new byte[3 << 20];
            new Random(9).NextBytes(data);
            CreateFile(fs, Root, "a", data);
            CreateFile(fs, Root, "b", data);
            Ok(fs.Sync());
            seen.Clear();
            Ok(fs.Unlink(Root, "a"));
            Ok(fs.Sync());
            Assert.NotEmpty(seen);
            Assert.True(seen.Sum(x => (long)x.Len) >= data.Length, $"discarded {seen.Sum(x => (long)x.Len)} bytes");
            Assert.DoesNotContain(seen, x => x.FreeDuring);
        }
        FsckAssert.Clean(inner);
    }

    [Fact]
    public void DiscardingCommitsBesideWritersFreeOnlyWhatTheyFreed()
    {
        UnderScheduler(6, () => new MountOptions { CommitIntervalMs = 5, Discard = DiscardMode.Sync }, (seed, s, fs, failures) =>
            Writers.Beside(seed, s, fs, failures, writers: 3, files: 14, unlinkEvery: 2, beside: null));
    }

    /// <summary>A 1 MiB file "keep" and a 4 MiB file "gone" of random bytes (from
    /// <paramref name="seed"/>), synced; gone's extents, which hold its bytes on the device.</summary>
    private static (ulong Keep, byte[] KeepData, byte[] GoneData, List<ExtentMapping> GoneExtents) KeepAndGone(Filesystem fs, MemoryBlockDevice dev, int seed)
    {
        var keep = new byte[1 << 20];
        var gone = new byte[4 << 20];
        new Random(seed).NextBytes(keep);
        new Random(seed + 1).NextBytes(gone);
        ulong k = CreateFile(fs, Root, "keep", keep);
        ulong g = CreateFile(fs, Root, "gone", gone);
        Ok(fs.Sync());
        Ok(fs.ExtentMap(g, out var map));
        var extents = map.Where(x => x.DiskBytenr != 0).ToList();
        Assert.NotEmpty(extents);
        Assert.Contains(extents, x => !DeviceZero(dev, x.DiskBytenr, x.DiskLength));
        return (k, keep, gone, extents);
    }

    private static bool DeviceZero(MemoryBlockDevice dev, ulong at, ulong len)
    {
        var buf = new byte[len];
        dev.Read(at, buf);
        return buf.AsSpan().IndexOfAnyExcept((byte)0) < 0;
    }

    /// <summary>A memory device that tells the test about each discard before doing it.</summary>
    private sealed class HookedDevice(MemoryBlockDevice inner, Action<ulong, ulong> onDiscard) : IBlockDevice
    {
        public ulong Size => inner.Size;
        public bool ReadOnly => inner.ReadOnly;
        public void Read(ulong offset, Span<byte> buffer) => inner.Read(offset, buffer);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => inner.Write(offset, data);
        public void Flush() => inner.Flush();
        public ulong Discard(ulong offset, ulong length)
        {
            onDiscard(offset, length);
            return inner.Discard(offset, length);
        }
        public void Dispose() { }
    }
}

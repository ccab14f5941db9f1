using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// Growing and shrinking a filesystem (<see cref="Filesystem.Resize(ulong, out Filesystem.ResizeResult, out string?)"/>):
/// a full filesystem takes more after it grows (the group in the short last slot takes its
/// whole slot, a superblock copy that now fits is written and kept clear of extents), a shrink
/// gives the tail back and cuts the image, a shrink that cannot fit what is in use is refused
/// with nothing changed (RelocationTests: one that can moves it), a power cut at any device operation of a resize leaves the old size or the new one
/// with every synced file, and resizes beside writers under the deterministic scheduler leave
/// fsck clean. The mount's test runs `reservoir filesystem resize` on a mounted image
/// (MountTests.ResizeThroughTheMount).
/// </summary>
public class ResizeTests
{
    private const ulong Root = Filesystem.RootIno;
    private const ulong MiB = 1UL << 20;

    [Fact]
    public void GrowingGivesAFullFilesystemRoomAndItsNewSuperblockCopy()
    {
        // 63 MiB of 4 KiB nodes: 4 MiB groups, the last slot [61, 63) MiB short; grown, that
        // slot reaches [61, 65) and holds the superblock copy at 64 MiB.
        var dev = NewDevice(63 * MiB);
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            Assert.Equal(4 * MiB, fs.Fs.Space.GroupSize);
            Fill(fs, files, "a");
            Assert.True(files.Count >= 40, $"only {files.Count} MiB fitted");
            var last = fs.Fs.Space.Groups.Single(g => g.Start == 61 * MiB);
            Assert.Equal(2 * MiB, last.Length);
            ulong totalBefore = fs.Space().DataTotal + fs.Space().MetaTotal;

            Ok(fs.Resize(100 * MiB, out var r, out var why), why ?? "");
            Assert.Equal((63 * MiB, 100 * MiB), (r.OldSize, r.NewSize));
            Assert.Equal(100 * MiB, dev.Size);                  // the device grew with it
            Assert.Equal(100 * MiB, fs.TotalBytes);
            Assert.Equal(4 * MiB, fs.Fs.Space.Groups.Single(g => g.Start == 61 * MiB).Length);
            // Its 2 MiB more, less the 4 KiB around the copy at 64 MiB.
            Assert.Equal(totalBefore + 2 * MiB - 4096, fs.Space().DataTotal + fs.Space().MetaTotal);
            Assert.True(fs.Space().Unallocated >= 32 * MiB, $"unallocated {fs.Space().Unallocated}");
            Fill(fs, files, "b");
            Assert.True(files.Count >= 85, $"only {files.Count} MiB after growing");
            Ok(fs.StatFs(out var st));
            Assert.Equal((100 * MiB - FormatConstants.ReservedPrefix) / 4096, st.Blocks);
        }
        // The copy at 64 MiB now exists, says 100 MiB and the group size it was made with
        // (100 MiB alone would give 8 MiB groups: GROUP_SIZE).
        var buf = new byte[FormatConstants.SuperblockSize];
        dev.Read(64 * MiB, buf);
        var sb = Superblock.TryRead(buf, 64 * MiB, out string err);
        Assert.True(sb != null, err);
        Assert.Equal(100 * MiB, sb!.TotalBytes);
        Assert.Equal(4 * MiB, sb.GroupSize);
        Assert.NotEqual(0UL, sb.Incompat & Features.IncompatGroupSize);
        FsckAssert.Clean(dev);                                  // no extent on the copy, groups on slots
        using (var fs = Mount(dev))
        {
            Assert.Equal(100 * MiB, fs.TotalBytes);
            AssertFiles(fs, files);
        }
    }

    [Fact]
    public void ShrinkingGivesTheTailBackAndIsRefusedWhenWhatIsInUseDoesNotFit()
    {
        var dev = NewDevice(128 * MiB);                         // 8 MiB groups
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            files["small"] = Write(fs, "small", 2 * MiB, 1);
            Ok(fs.Resize(41 * MiB, out var r, out var why), why ?? "");
            Assert.Equal(41 * MiB, r.NewSize);
            Assert.Equal(41 * MiB, dev.Size);                   // the image is cut
            Assert.All(fs.Fs.Space.Groups, g => Assert.True(g.End <= 41 * MiB, $"{g}"));
            AssertFiles(fs, files);

            files["big"] = Write(fs, "big", 20 * MiB, 2);
            Ok(fs.Sync());
            ulong min = fs.Fs.Space.MinimumSize();
            Assert.True(min > 17 * MiB, $"minimum {min}");
            var e = fs.Resize(16 * MiB, out r, out why);
            Assert.Equal(Errno.ENOSPC, e);
            Assert.Contains("do not fit below it", why);         // 22 MiB of files in 16 MiB
            Assert.Equal((41 * MiB, 41 * MiB), (r.OldSize, r.NewSize));
            Assert.Equal(41 * MiB, dev.Size);                   // nothing changed
            Assert.Equal(41 * MiB, fs.TotalBytes);
            AssertFiles(fs, files);
            Assert.Equal(Errno.EINVAL, fs.Resize(4 * MiB, out _, out why));
            Assert.Contains("smallest filesystem", why);

            // The space freed by a delete is free for the shrink (it commits first).
            Ok(fs.Unlink(Root, "big"));
            files.Remove("big");
            Ok(fs.Resize(24 * MiB, out r, out why), why ?? "");
            Assert.Equal(24 * MiB, dev.Size);
            AssertFiles(fs, files);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.Equal(24 * MiB, fs.TotalBytes);
            AssertFiles(fs, files);
            // Growing back: the cut part reads zeros and is free again.
            Ok(fs.Resize("+32M", out var r, out var why), why ?? "");
            Assert.Equal(56 * MiB, r.NewSize);
            files["again"] = Write(fs, "again", 24 * MiB, 3);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void ShrinkingToTheMinimumItReportsWorks()
    {
        var dev = NewDevice(128 * MiB);
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            for (int i = 0; i < 6; i++) files[$"f{i}"] = Write(fs, $"f{i}", 3 * MiB, 10 + i);
            Ok(fs.Unlink(Root, "f1"));
            files.Remove("f1");
            Ok(fs.Sync());
            ulong min = fs.Fs.Space.MinimumSize();
            Assert.True(min < 128 * MiB && min % 4096 == 0, $"minimum {min}");
            Ok(fs.Resize(min, out var r, out var why), why ?? "");
            Assert.Equal(min, r.NewSize);
            AssertFiles(fs, files);
            Assert.Equal(Errno.ENOSPC, fs.Resize(min - 8 * MiB, out _, out _));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A shrink must leave room for every reservation already made (a buffered write
    /// waiting for writeback was promised its space: writeback must not find it gone).</summary>
    [Fact]
    public void AShrinkKeepsEveryPromiseAlreadyMade()
    {
        var dev = NewDevice(128 * MiB);
        using (var fs = Mount(dev))
        {
            // What writes in flight hold (delalloc's reservations) between the shrink's sync and its commit.
            Ok(fs.Fs.Space.Reserve(data: true, 40 * MiB));
            var e = fs.Resize(41 * MiB, out var r, out var why);
            Assert.Equal(Errno.ENOSPC, e);
            Assert.Contains("too little free space", why);
            Assert.Equal(128 * MiB, fs.TotalBytes);
            Assert.Equal(128 * MiB, dev.Size);
            Assert.True(fs.Fs.Space.Groups.All(g => g.End <= 128 * MiB));
            fs.Fs.Space.Release(data: true, 40 * MiB);
            Ok(fs.Resize(41 * MiB, out r, out why), why ?? "");
        }
        FsckAssert.Clean(dev);
    }

    [Theory]
    [InlineData("1G", 1UL << 30)]
    [InlineData("+1g", (64UL << 20) + (1UL << 30))]
    [InlineData("1:-16M", 48UL << 20)]
    [InlineData("max", 200UL << 20)]
    [InlineData("1:max", 200UL << 20)]
    [InlineData("123456789", 123456789UL)]
    public void ResizeArgumentsParseAsBtrfsTakesThem(string spec, ulong want)
    {
        Assert.True(Filesystem.TryParseResize(spec, 64UL << 20, () => 200UL << 20, out ulong got, out string err), err);
        Assert.Equal(want, got);
    }

    [Theory]
    [InlineData("2:max", "no device with id '2'")]
    [InlineData("-1G", "more than the filesystem's")]
    [InlineData("lots", "invalid size")]
    [InlineData("+", "invalid size")]
    [InlineData("cancel", "'cancel' is not a size")]
    public void BadResizeArgumentsSayWhatIsWrong(string spec, string said)
    {
        Assert.False(Filesystem.TryParseResize(spec, 64UL << 20, () => 200UL << 20, out _, out string err));
        Assert.Contains(said, err);
    }

    [Fact]
    public void AReadOnlyMountOrABlockDeviceOfFixedSizeIsNotResized()
    {
        var dev = NewDevice(64 * MiB);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReadOnly = true }))
            Assert.Equal(Errno.EROFS, fs.Resize(80 * MiB, out _, out _));
        var fixedSize = new FixedSizeDevice(dev);
        using (var fs = Mount(fixedSize))
        {
            Assert.Equal(Errno.EFBIG, fs.Resize(80 * MiB, out _, out var why));
            Assert.Contains("cannot grow", why);
            Ok(fs.Resize(48 * MiB, out _, out why), why ?? "");   // shrinking needs no device change
            Assert.Equal(64 * MiB, dev.Size);
            Ok(fs.Resize("max", out var r, out why), why ?? "");  // and back to the device's size
            Assert.Equal(64 * MiB, r.NewSize);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A power cut at every device operation of a grow and then of a shrink: each
    /// remain mounts at the old size or the new one, holds every file synced before, and passes
    /// fsck; the durable images of cuts before the resize's commit still have the old size.</summary>
    [Fact]
    public void APowerCutAtAnyPointOfAResizeLeavesTheOldSizeOrTheNew()
    {
        var initial = NewDevice(40 * MiB);
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(initial))
        {
            for (int i = 0; i < 4; i++) files[$"f{i}"] = Write(fs, $"f{i}", 3 * MiB, 20 + i);
            Ok(fs.Sync());
        }
        int checkedImages = 0;
        var sizesSeen = new HashSet<ulong>();
        foreach (var (from, to) in new[] { (40 * MiB, 100 * MiB), (40 * MiB, 24 * MiB) })
        {
            var (images, sizes) = ResizePowerCuts.EveryCut(initial, from, to, maxCuts: 500,
                before: (fs, _) => CreateFile(fs, Root, "unsynced", new byte[5000]),
                after: (_, _, _, _, _) => { },
                check: fs2 => AssertFiles(fs2, files));
            checkedImages += images;
            sizesSeen.UnionWith(sizes);
        }
        Assert.Equal(new HashSet<ulong> { 40 * MiB, 100 * MiB, 24 * MiB }, sizesSeen);
        Assert.True(checkedImages > 30, $"only {checkedImages} images");
    }

    [Fact]
    public void ResizingBesideWritersLeavesEverythingWhole()
    {
        int grown = 0, shrunk = 0;
        UnderScheduler(6, () => new MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
            Writers.Beside(seed, s, fs, failures, writers: 2, files: 10, unlinkEvery: 3, beside: note =>
            {
                var rng = new Random(seed);
                for (int i = 0; i < 8; i++)
                {
                    ulong to = (ulong)rng.Next(40, 200) * MiB;
                    var e = fs.Resize(to, out var r, out var why);
                    // A shrink may find the writers' extents past the new end: refused, nothing changed.
                    if (e == Errno.ENOSPC && to < r.OldSize && r.NewSize == r.OldSize) continue;
                    note($"resize to {to >> 20} MiB ({why})", e);
                    if (e == Errno.OK && fs.TotalBytes != to) note($"size {fs.TotalBytes} after resizing to {to}", Errno.EIO);
                    if (e == Errno.OK && to > r.OldSize) grown++;
                    if (e == Errno.OK && to < r.OldSize) shrunk++;
                }
            }));
        Assert.True(grown >= 6 && shrunk >= 6, $"{grown} grown, {shrunk} shrunk");
    }

    /// <summary>Writes 1 MiB files named prefix0, prefix1, … until the filesystem is full.</summary>
    private static void Fill(Filesystem fs, Dictionary<string, byte[]> files, string prefix)
    {
        for (int i = 0; ; i++)
        {
            var data = new byte[MiB];
            new Random(files.Count * 31 + i).NextBytes(data);
            string name = prefix + i;
            var e = fs.Create(Root, name, 0x1A4, 0, 0, out var a);
            if (e == Errno.ENOSPC) break;
            Ok(e);
            e = fs.Write(a.Ino, 0, data, out int n);
            if (e == Errno.ENOSPC || n != data.Length)
            {
                Ok(fs.Unlink(Root, name));
                break;
            }
            Ok(e);
            files[name] = data;
        }
        Ok(fs.Sync());
    }

    private static byte[] Write(Filesystem fs, string name, ulong size, int seed)
    {
        var data = new byte[size];
        new Random(seed).NextBytes(data);
        CreateFile(fs, Root, name, data);
        return data;
    }

    private static void AssertFiles(Filesystem fs, Dictionary<string, byte[]> files)
    {
        foreach (var (name, data) in files)
        {
            Ok(fs.Lookup(Root, name, out var a), name);
            Assert.True(ReadAll(fs, a.Ino).AsSpan().SequenceEqual(data), $"{name} differs");
        }
    }

    /// <summary>A device whose size cannot change (a block device).</summary>
    private sealed class FixedSizeDevice(MemoryBlockDevice inner) : IBlockDevice
    {
        public ulong Size => inner.Size;
        public bool ReadOnly => inner.ReadOnly;
        public void Read(ulong offset, Span<byte> buffer) => inner.Read(offset, buffer);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => inner.Write(offset, data);
        public void Flush() => inner.Flush();
        public void Dispose() { }
    }
}

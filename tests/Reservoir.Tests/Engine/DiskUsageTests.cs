using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// <see cref="Filesystem.DiskUsage"/>, what `reservoir filesystem du` prints: a file alone is
/// all exclusive; a reflink makes both sides shared, and the set of the two shares its bytes
/// once; a snapshot shares everything until one side changes, after which what was rewritten
/// is each side's own; a file whose extent a punch split in two still has it alone. The
/// expected figures are the sizes written, worked out by hand.
/// </summary>
public class DiskUsageTests
{
    private const ulong Root = Filesystem.RootIno;
    private const ulong MiB = 1UL << 20;

    [Fact]
    public void AFileAloneIsExclusiveAndAReflinkSharesBothSides()
    {
        var dev = NewDevice(128 * MiB);
        using var fs = Mount(dev);
        ulong a = CreateFile(fs, Root, "a", Bytes(4 * MiB, 1));
        Ok(fs.Sync());
        var ua = Usage(fs, a);
        Assert.Equal((4 * MiB, 4 * MiB, 0UL), (ua.Total, ua.Exclusive, Filesystem.UnionBytes(ua.Shared)));

        ulong b = CreateFile(fs, Root, "b");
        Ok(fs.CloneRange(a, 0, b, 0, 0));
        // Before the commit too: the clone's references are still pending.
        foreach (var u in new[] { Usage(fs, a), Usage(fs, b) })
            Assert.Equal((4 * MiB, 0UL, 4 * MiB), (u.Total, u.Exclusive, Filesystem.UnionBytes(u.Shared)));
        Ok(fs.Sync());
        ua = Usage(fs, a);
        var ub = Usage(fs, b);
        Assert.Equal((0UL, 0UL), (ua.Exclusive, ub.Exclusive));
        // Together they share 4 MiB, counted once.
        Assert.Equal(4 * MiB, Filesystem.UnionBytes(ua.Shared.Concat(ub.Shared)));

        // b's first MiB rewritten: that MiB is b's own, a's first MiB is a's own again.
        Ok(fs.Write(b, 0, Bytes(MiB, 2), out _));
        Ok(fs.Sync());
        ua = Usage(fs, a);
        ub = Usage(fs, b);
        Assert.Equal((MiB, 3 * MiB), (ua.Exclusive, Filesystem.UnionBytes(ua.Shared)));
        Assert.Equal((MiB, 3 * MiB), (ub.Exclusive, Filesystem.UnionBytes(ub.Shared)));
        Assert.Equal(3 * MiB, Filesystem.UnionBytes(ua.Shared.Concat(ub.Shared)));
    }

    [Fact]
    public void ASnapshotSharesEverythingUntilOneSideChanges()
    {
        var dev = NewDevice(128 * MiB);
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "v", 0, 0, out var v));
        ulong f = CreateFile(fs, v.Ino, "f", Bytes(2 * MiB, 3));
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(v.Ino, Root, "s", false, out var s));
        Ok(fs.Sync());
        Ok(fs.Lookup(s.Ino, "f", out var fs2));
        foreach (var u in new[] { Usage(fs, f), Usage(fs, fs2.Ino) })
            Assert.Equal((2 * MiB, 0UL, 2 * MiB), (u.Total, u.Exclusive, Filesystem.UnionBytes(u.Shared)));

        // The source's second MiB rewritten: its own now, and the snapshot's old second MiB is
        // the snapshot's alone (deleting the snapshot would free it).
        Ok(fs.Write(f, MiB, Bytes(MiB, 4), out _));
        Ok(fs.Sync());
        var src = Usage(fs, f);
        var snap = Usage(fs, fs2.Ino);
        Assert.Equal((2 * MiB, MiB, MiB), (src.Total, src.Exclusive, Filesystem.UnionBytes(src.Shared)));
        Assert.Equal((2 * MiB, MiB, MiB), (snap.Total, snap.Exclusive, Filesystem.UnionBytes(snap.Shared)));
    }

    [Fact]
    public void AnExtentSplitByAPunchStaysTheFilesAlone()
    {
        var dev = NewDevice(128 * MiB);
        using var fs = Mount(dev);
        ulong f = CreateFile(fs, Root, "f", Bytes(MiB, 5));
        Ok(fs.Sync());
        Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 256 << 10, 256 << 10));
        Ok(fs.Sync());
        Ok(fs.ExtentMap(f, out var map));
        Assert.Equal(2, map.Count(m => m.DiskBytenr != 0));
        Assert.Single(map.Where(m => m.DiskBytenr != 0).Select(m => m.DiskBytenr).Distinct());
        var u = Usage(fs, f);
        Assert.Equal((768UL << 10, 768UL << 10, 0UL), (u.Total, u.Exclusive, Filesystem.UnionBytes(u.Shared)));
    }

    [Theory]
    [InlineData(new ulong[] { }, 0UL)]
    [InlineData(new ulong[] { 0, 10, 5, 10 }, 15UL)]        // overlapping
    [InlineData(new ulong[] { 0, 10, 10, 10 }, 20UL)]       // touching
    [InlineData(new ulong[] { 20, 5, 0, 10, 2, 3 }, 15UL)]  // unsorted, one inside another
    public void UnionBytesCountsEachByteOnce(ulong[] pairs, ulong want)
    {
        var ranges = Enumerable.Range(0, pairs.Length / 2).Select(i => (pairs[2 * i], pairs[2 * i + 1]));
        Assert.Equal(want, Filesystem.UnionBytes(ranges));
    }

    private static FileUsage Usage(Filesystem fs, ulong ino)
    {
        Ok(fs.DiskUsage(ino, out var u));
        return u;
    }

    private static byte[] Bytes(ulong n, int seed)
    {
        var d = new byte[n];
        new Random(seed).NextBytes(d);
        return d;
    }
}

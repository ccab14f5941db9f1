using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format.Items;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The cost bound of docs/SNAPSHOTS.md §3 for many writable snapshots letting go of the same
/// extent: a golden subvolume, N writable snapshots of it, and each snapshot in turn rewrites
/// the file, one commit each. Without kept referrer sets the k-th commit looks up the k−1
/// snapshots that already let go (about N²/2 lookups in all); with them, the search that
/// first passes over 32 such snapshots enumerates every referrer once and later commits look
/// up none. Counted in EXTENT_OWNER_REF lookups, not time, so the bound is exact on any
/// machine; the numbers are checked against fsck's recount along the way and at the end.
/// </summary>
public class ReferrerSetTests(ITestOutputHelper log)
{
    private const ulong Root = Filesystem.RootIno;
    private const int Snapshots = 150;
    private const ulong FileBytes = 64 << 10;

    private (long Probes, long SetsKept) RewriteInEverySnapshot(int referrerSetAfter)
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerSetAfter = referrerSetAfter });
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "golden", 0, 0, out var golden));
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        CreateFile(fs, golden.Ino, "f", data);
        Ok(fs.Sync());
        var snaps = new List<ulong>();
        for (int i = 0; i < Snapshots; i++)
        {
            Ok(fs.CreateSnapshot(golden.Ino, Root, $"s{i}", readOnly: false, out var s));
            snaps.Add(s.Ino);
        }
        Ok(fs.Sync());
        long probes0 = fs.Fs.Stats.OwnerRefProbes;
        for (int i = 0; i < snaps.Count; i++)
        {
            Ok(fs.Lookup(snaps[i], "f", out var f));
            data[0] = (byte)(i + 1);
            Ok(fs.Write(f.Ino, 0, data, out _));
            Ok(fs.Sync());
            if (i % 50 == 49) FsckAssert.Clean(dev);
        }
        long probes = fs.Fs.Stats.OwnerRefProbes - probes0;
        FsckAssert.Clean(dev);
        // The golden extent is the golden subvolume's alone now; each snapshot holds its own.
        var groups = fs.Qgroups().ToDictionary(g => g.Id);
        ulong goldenId = Reservoir.Engine.Inodes.NodeIds.Decode(golden.Ino).TreeId;
        Assert.Equal((FileBytes, FileBytes), (groups[QgroupId.Of(0, goldenId)].Referenced, groups[QgroupId.Of(0, goldenId)].Exclusive));
        foreach (var s in snaps)
        {
            var g = groups[QgroupId.Of(0, Reservoir.Engine.Inodes.NodeIds.Decode(s).TreeId)];
            Assert.Equal((FileBytes, FileBytes), (g.Referenced, g.Exclusive));
        }
        return (probes, fs.Fs.Stats.ReferrerSetsKept);
    }

    [Fact]
    public void SnapshotsLettingGoOfTheSameExtentCostLinearLookups()
    {
        var (with, kept) = RewriteInEverySnapshot(referrerSetAfter: 32);
        var (without, _) = RewriteInEverySnapshot(referrerSetAfter: int.MaxValue);
        log.WriteLine($"{Snapshots} snapshots each rewriting the golden file: {with} lookups with referrer sets ({kept} kept), {without} without");
        // Without: the k-th commit passes over the k−1 that let go, then finds the golden
        // subvolume and one more snapshot.
        Assert.True(without >= (long)Snapshots * (Snapshots - 1) / 2, $"{without} lookups without referrer sets: the workload no longer shows the quadratic case");
        // With: at most 32 passed over per search until the set is kept (33 searches), one
        // enumeration of every snapshot, then none.
        Assert.Equal(1, kept);
        Assert.True(with <= 33 * 34 + Snapshots + 1, $"{with} lookups with referrer sets for {Snapshots} snapshots");
    }
}

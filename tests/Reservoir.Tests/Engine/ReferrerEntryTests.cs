using Reservoir.Device;
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
/// the file, one commit each. Without referrer entries the k-th commit looks up the k−1
/// snapshots that already let go (about N²/2 lookups in all); with them, the search that
/// first passes over 32 such snapshots gives the extent an entry (a cursor over subvolume ids
/// and the referrers known), and later commits move its cursor on by the one snapshot they
/// need. Counted in EXTENT_OWNER_REF lookups and ids kept, not time, so the bounds are exact
/// on any machine; the numbers are checked against fsck's recount along the way and at the end.
/// </summary>
public class ReferrerEntryTests(ITestOutputHelper log)
{
    private const ulong Root = Filesystem.RootIno;
    private const int Snapshots = 150;
    private const ulong FileBytes = 64 << 10;

    /// <summary>Quotas on, a golden subvolume filled by <paramref name="fill"/> (given its
    /// directory), then <paramref name="count"/> writable snapshots of it, committed; returns
    /// the golden subvolume's id and the snapshots' root directories.</summary>
    private static (ulong GoldenId, List<ulong> Snaps) GoldenAndSnapshots(Filesystem fs, int count, Action<ulong> fill)
    {
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "golden", 0, 0, out var golden));
        fill(golden.Ino);
        Ok(fs.Sync());
        var snaps = new List<ulong>();
        for (int i = 0; i < count; i++)
        {
            Ok(fs.CreateSnapshot(golden.Ino, Root, $"s{i}", readOnly: false, out var s));
            snaps.Add(s.Ino);
        }
        Ok(fs.Sync());
        return (Reservoir.Engine.Inodes.NodeIds.Decode(golden.Ino).TreeId, snaps);
    }

    /// <summary>Each snapshot in turn runs <paramref name="change"/> on its root directory and
    /// commits (fsck's recount every 50 and at the end); <paramref name="after"/> runs after each commit.</summary>
    private static void InTurn(Filesystem fs, IBlockDevice dev, List<ulong> snaps, Action<int, ulong> change, Action? after = null)
    {
        for (int i = 0; i < snaps.Count; i++)
        {
            change(i, snaps[i]);
            Ok(fs.Sync());
            after?.Invoke();
            if (i % 50 == 49) FsckAssert.Clean(dev);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>Each snapshot in turn rewrites the golden file <c>f</c>.</summary>
    private static Action<int, ulong> Rewrite(Filesystem fs, byte[] data) => (i, snap) =>
    {
        Ok(fs.Lookup(snap, "f", out var f));
        data[0] = (byte)(i + 1);
        Ok(fs.Write(f.Ino, 0, data, out _));
    };

    private static void AssertGroup(Filesystem fs, ulong subvolume, ulong referenced, ulong exclusive)
    {
        var g = fs.Qgroups().Single(q => q.Id == QgroupId.Of(0, subvolume));
        Assert.Equal((referenced, exclusive), (g.Referenced, g.Exclusive));
    }

    private (long Probes, long EntriesKept) RewriteInEverySnapshot(int referrerEntryAfter)
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = referrerEntryAfter });
        var data = new byte[FileBytes];
        new Random(1).NextBytes(data);
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snapshots, dir => CreateFile(fs, dir, "f", data));
        long probes0 = fs.Fs.Stats.OwnerRefProbes;
        InTurn(fs, dev, snaps, Rewrite(fs, data));
        long probes = fs.Fs.Stats.OwnerRefProbes - probes0;
        // The golden extent is the golden subvolume's alone now; each snapshot holds its own.
        AssertGroup(fs, goldenId, FileBytes, FileBytes);
        foreach (var s in snaps) AssertGroup(fs, Reservoir.Engine.Inodes.NodeIds.Decode(s).TreeId, FileBytes, FileBytes);
        return (probes, fs.Fs.Stats.ReferrerEntriesKept);
    }

    [Fact]
    public void SnapshotsLettingGoOfTheSameExtentCostLinearLookups()
    {
        var (with, kept) = RewriteInEverySnapshot(referrerEntryAfter: 32);
        var (without, _) = RewriteInEverySnapshot(referrerEntryAfter: int.MaxValue);
        log.WriteLine($"{Snapshots} snapshots each rewriting the golden file: {with} lookups with referrer entries ({kept} kept), {without} without");
        // Without: the k-th commit passes over the k−1 that let go, then finds the golden
        // subvolume and one more snapshot.
        Assert.True(without >= (long)Snapshots * (Snapshots - 1) / 2, $"{without} lookups without referrer entries: the workload no longer shows the quadratic case");
        // With: at most 32 passed over (and two referrers found) per search until the extent
        // gets an entry (33 searches), whose walk starts again from the golden subvolume's id
        // (33 let go, the golden one, the next snapshot); then each commit takes the golden
        // subvolume from the entry and looks up the one next snapshot.
        Assert.Equal(1, kept);
        Assert.True(with <= 33 * 34 + 35 + Snapshots, $"{with} lookups with referrer entries for {Snapshots} snapshots");
    }

    /// <summary>
    /// The same with many extents, where what is kept per extent matters: 40 files in the
    /// golden subvolume, and each of the 150 snapshots in turn deletes all of them. An entry
    /// keeps a cursor and the referrers its searches needed (the golden subvolume and the
    /// next snapshot), never every snapshot that still has the extent: keeping each extent's
    /// whole set (about 117 ids each here) made N snapshots × F extents cost N·F ids, past the
    /// bound at 10,000 snapshots of a golden image of a few hundred extents.
    /// </summary>
    [Fact]
    public void ManyExtentsLetGoOfByManySnapshotsKeepFewReferrersEach()
    {
        const int Files = 40;
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        var data = new byte[4096];
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snapshots, dir =>
        {
            for (int f = 0; f < Files; f++)
            {
                data[0] = (byte)f;
                CreateFile(fs, dir, $"f{f}", data);
            }
        });
        long probes0 = fs.Fs.Stats.OwnerRefProbes, most = 0;
        InTurn(fs, dev, snaps, (_, snap) =>
        {
            for (int f = 0; f < Files; f++) Ok(fs.Unlink(snap, $"f{f}"));
        }, () => most = Math.Max(most, fs.Fs.ReferrerEntries.Ids));
        long probes = fs.Fs.Stats.OwnerRefProbes - probes0;
        log.WriteLine($"{Snapshots} snapshots each deleting {Files} files: {probes} lookups, at most {most} referrers kept, {fs.Fs.ReferrerEntries.Count} entries");
        AssertGroup(fs, goldenId, Files * 4096UL, Files * 4096UL);
        Assert.Equal(Files, fs.Fs.ReferrerEntries.Count);
        // Two per extent at most while a commit runs (the golden subvolume and the next
        // snapshot), where whole sets held every snapshot not yet done.
        Assert.True(most <= 2 * Files, $"{most} referrers kept for {Files} extents");
        Assert.True(probes <= Files * (33 * 34 + 35 + Snapshots), $"{probes} lookups");
    }

    /// <summary>
    /// An entry's cursor steps only over ids that can reference the extent (its origins and
    /// the snapshots), not over every id up to the highest: here 300 subvolumes made and deleted
    /// between the golden subvolume and its 40 snapshots, and each snapshot in turn rewrites the
    /// golden file with an entry for every extent searched. Walking every id would pass the 300
    /// at the first search; the walk steps over the golden subvolume and the snapshots, about
    /// one per commit.
    /// </summary>
    [Fact]
    public void AnEntrysCursorStepsOverIdsThatCannotReferenceTheExtent()
    {
        const int Gone = 300, Snaps = 40;
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, ReferrerEntryAfter = 0 });
        var data = new byte[FileBytes];
        var (goldenId, snaps) = GoldenAndSnapshots(fs, Snaps, dir =>
        {
            CreateFile(fs, dir, "f", data);
            for (int i = 0; i < Gone; i++) Ok(fs.CreateSubvolume(Root, $"gone{i}", 0, 0, out _));
            for (int i = 0; i < Gone; i++) Ok(fs.DeleteSubvolume(Root, $"gone{i}"));
            Ok(fs.SyncSubvolumeDeletions()); // the cleaner commits while it drops them: done before fsck looks
        });
        long walked0 = fs.Fs.Stats.EntryIdsWalked;
        InTurn(fs, dev, snaps, Rewrite(fs, data));
        long walked = fs.Fs.Stats.EntryIdsWalked - walked0;
        log.WriteLine($"{Snaps} snapshots rewriting the golden file past {Gone} deleted ids: {walked} ids walked");
        AssertGroup(fs, goldenId, FileBytes, FileBytes);
        Assert.True(walked > 0, "no entry walked: the test would not exercise them");
        // The golden extent: the golden subvolume, then each snapshot once; each new extent
        // (written by one snapshot, with no snapshot of it) needs no search.
        Assert.True(walked <= 2 * Snaps + 2, $"{walked} ids walked for {Snaps} snapshots");
    }
}

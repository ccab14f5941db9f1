using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// Where qgroup numbers are kept (SPEC.md §7, quota version 3): a level-0 group's usage beside
/// its subvolume's ROOT_ITEM in the root tree, higher groups, limits and relations in the
/// quota tree; an image of version 2 moved at its first read-write mount; fsck finding usage
/// in the wrong place.
/// </summary>
public class QuotaItemsTests
{
    private const ulong Root = Filesystem.RootIno;
    private const ulong M = 1UL << 20;
    private static ulong Q0(ulong subvolume) => QgroupId.Of(0, subvolume);

    private static byte[] Data(int seed, ulong len)
    {
        var b = new byte[len];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static (ulong Referenced, ulong Exclusive, ulong MaxReferenced) Usage(Filesystem fs, ulong id)
    {
        var g = fs.Qgroups().SingleOrDefault(x => x.Id == id);
        Assert.True(g.Id == id, $"qgroup {QgroupId.Show(id)} does not exist");
        return (g.Referenced, g.Exclusive, g.MaxReferenced);
    }

    private static Key Level0Key(ulong subvolume) => new(subvolume, KeyTypes.SubvolQgroupInfo, 0);

    [Fact]
    public void ACommitThatOnlyChangesASubvolumesUsageLeavesTheQuotaTreeAlone()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a)); // 256
            Ok(fs.SetQgroupLimit(Q0(256), 64 * M, ulong.MaxValue));
            ulong f = CreateFile(fs, a.Ino, "f", Data(1, M));
            Ok(fs.Sync());
            Assert.Equal((M, M, 64 * M), Usage(fs, Q0(256)));
            var quotaRoot = fs.Fs.QuotaTree!.Root;
            Ok(fs.Write(f, M, Data(2, M), out _));
            Ok(fs.Sync());
            Assert.Equal((2 * M, 2 * M, 64 * M), Usage(fs, Q0(256)));
            // Neither the group's usage nor its unchanged limit copied a quota tree node: the
            // usage went beside the subvolume's ROOT_ITEM, which the commit rewrote anyway.
            Assert.Same(quotaRoot, fs.Fs.QuotaTree!.Root);
            var item = fs.Fs.RootTree.Get(Level0Key(256));
            Assert.NotNull(item);
            // `reservoir inspect tree -t root` shows it so.
            Assert.StartsWith($"referenced {2 * M} exclusive {2 * M} gen ", Reservoir.Engine.Check.TreeDump.Describe(Level0Key(256), item));
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev)) Assert.Equal((2 * M, 2 * M, 64 * M), Usage(fs, Q0(256)));
    }

    /// <summary>An image with a subvolume a (256), a file of two 1 MiB extents (4 KiB nodes),
    /// a read-only snapshot s (257), and the first MiB rewritten in a; then laid out as quota
    /// <paramref name="version"/> kept it (<paramref name="older"/> changes the trees the same
    /// way), every level-0 usage in the quota tree. Returns every group's numbers.</summary>
    private static Dictionary<ulong, (ulong, ulong)> ImageOfOlderQuotaVersion(MemoryBlockDevice dev, ulong version, Action<Filesystem, TransHandle>? older = null)
    {
        using var fs = Mount(dev);
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a)); // 256
        ulong f = CreateFile(fs, a.Ino, "f", Data(1, 2 * M));
        Ok(fs.CreateSnapshot(a.Ino, Root, "s", true, out _)); // 257
        Ok(fs.Write(f, 0, Data(2, M), out _));
        Ok(fs.Sync());
        var expected = fs.Qgroups().ToDictionary(g => g.Id, g => (g.Referenced, g.Exclusive));
        // a holds the new first MiB alone and shares the second; s holds the old first alone.
        Assert.Equal((2 * M, M), expected[Q0(256)]);
        Assert.Equal((2 * M, M), expected[Q0(257)]);
        // Versions before 4 wrote no ORIGIN_DROP: a rewrite under a snapshot left none behind.
        fs.Fs.ForgetPendingOriginDrops();
        using var h = fs.Fs.Start(64);
        older?.Invoke(fs, h);
        Span<byte> buf = stackalloc byte[QgroupInfoItem.Size];
        using (fs.Fs.RootTree.Lock.Write())
        using (fs.Fs.QuotaTree!.Lock.Write())
        {
            foreach (var (id, (r, e)) in expected.Where(kv => QgroupId.Level(kv.Key) == 0))
            {
                Assert.True(fs.Fs.RootTree.Delete(h, Level0Key(QgroupId.Id(id))));
                new QgroupInfoItem { Generation = 1, Referenced = r, Exclusive = e }.Write(buf);
                fs.Fs.QuotaTree.Put(h, new Key(0, KeyTypes.QgroupInfo, id), buf);
            }
            Span<byte> st = stackalloc byte[QgroupStatusItem.Size];
            var status = new QgroupStatusItem { Version = version, Generation = 1, Flags = QgroupStatusItem.FlagOn };
            status.Write(st);
            fs.Fs.QuotaTree.Put(h, new Key(0, KeyTypes.QgroupStatus, 0), st[..status.Length]);
        }
        return expected;
    }

    /// <summary>After the upgrade: every subvolume's usage beside its ROOT_ITEM, none in the quota tree.</summary>
    private static void AssertLevel0UsageMoved(Filesystem fs, Dictionary<ulong, (ulong, ulong)> expected)
    {
        foreach (var (id, usage) in expected) Assert.Equal(usage, (Usage(fs, id).Referenced, Usage(fs, id).Exclusive));
        Assert.True(QgroupStatusItem.TryRead(fs.Fs.QuotaTree!.Get(new Key(0, KeyTypes.QgroupStatus, 0)), out var status));
        Assert.Equal(QgroupStatusItem.CurrentVersion, status.Version);
        foreach (var sv in new ulong[] { 5, 256, 257 })
        {
            Assert.NotNull(fs.Fs.RootTree.Get(Level0Key(sv)));
            Assert.Null(fs.Fs.QuotaTree.Get(new Key(0, KeyTypes.QgroupInfo, Q0(sv))));
        }
    }

    /// <summary>Quota versions 3 and 4 had no ORIGIN_DROP (3) or REFERRER_ENTRY (3, 4) items and
    /// no record of the subvolume ids handed out: such an image is read as it is, and says the
    /// current version, with the ids handed out so far, from its first read-write mount on (an
    /// older binary then refuses it rather than leave items it does not keep right). Fails if the
    /// mount writes items under an older status (fsck reports them) or leaves the ids unrecorded.</summary>
    [Theory]
    [InlineData(3UL)]
    [InlineData(4UL)]
    public void AnImageOfAnOlderQuotaVersionSaysTheCurrentOneAtItsFirstReadWriteMount(ulong older)
    {
        var dev = NewDevice(64UL << 20);
        QgroupStatusItem Status(Filesystem fs) => QgroupStatusItem.TryRead(fs.Fs.QuotaTree!.Get(new Key(0, KeyTypes.QgroupStatus, 0)), out var st) ? st : default;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            CreateFile(fs, a.Ino, "f", Data(1, M));
            Ok(fs.Sync());
            Assert.Equal((5UL, 256UL), (Status(fs).Version, Status(fs).SubvolumeIdsUpTo));
            using var h = fs.Fs.Start(8);
            Span<byte> st = stackalloc byte[QgroupStatusItem.Size];
            var status = new QgroupStatusItem { Version = older, Generation = 1, Flags = QgroupStatusItem.FlagOn };
            status.Write(st);
            using (fs.Fs.QuotaTree!.Lock.Write()) fs.Fs.QuotaTree.Put(h, new Key(0, KeyTypes.QgroupStatus, 0), st[..status.Length]);
        }
        FsckAssert.Clean(dev);
        using (var ro = Mount(dev, new Reservoir.Engine.Tx.MountOptions { ReadOnly = true, CommitIntervalMs = 0 })) Assert.Equal(older, Status(ro).Version);
        using (var fs = Mount(dev))
        {
            Assert.Equal((QgroupStatusItem.CurrentVersion, 256UL), (Status(fs).Version, Status(fs).SubvolumeIdsUpTo));
            Assert.Equal((M, M), (Usage(fs, Q0(256)).Referenced, Usage(fs, Q0(256)).Exclusive));
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out _));
            Ok(fs.Sync());
            Assert.Equal(257UL, Status(fs).SubvolumeIdsUpTo); // recorded by the commit that made it
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void AnImageOfQuotaVersion2HasItsLevel0UsageMovedAtItsFirstReadWriteMount()
    {
        var dev = NewDevice(128UL << 20);
        var expected = ImageOfOlderQuotaVersion(dev, QgroupStatusItem.OwnerRefsVersion);
        // Version 2 as it was: fsck accepts it, a read-only mount reads its numbers there.
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev, new MountOptions { ReadOnly = true }))
        {
            Assert.Null(fs.Fs.RootTree.Get(Level0Key(256)));
            foreach (var (id, usage) in expected) Assert.Equal(usage, (Usage(fs, id).Referenced, Usage(fs, id).Exclusive));
        }
        using (var fs = Mount(dev)) AssertLevel0UsageMoved(fs, expected);
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
            foreach (var (id, usage) in expected) Assert.Equal(usage, (Usage(fs, id).Referenced, Usage(fs, id).Exclusive));
    }

    [Fact]
    public void FsckFindsLevel0UsageOfASubvolumeThatIsGoneUsageKeptTwiceAndASubvolumeWithout()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a)); // 256
            CreateFile(fs, a.Ino, "f", Data(1, M));
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out _)); // 257, empty
            Ok(fs.Sync());
            using var h = fs.Fs.Start(4);
            Span<byte> buf = stackalloc byte[QgroupInfoItem.Size];
            new QgroupInfoItem { Generation = 1 }.Write(buf);
            using (fs.Fs.RootTree.Lock.Write())
            {
                fs.Fs.RootTree.Put(h, Level0Key(999), buf);
                Assert.True(fs.Fs.RootTree.Delete(h, Level0Key(257)));
            }
            new QgroupInfoItem { Generation = 1, Referenced = M, Exclusive = M }.Write(buf);
            using (fs.Fs.QuotaTree!.Lock.Write()) fs.Fs.QuotaTree.Put(h, new Key(0, KeyTypes.QgroupInfo, Q0(256)), buf);
        }
        var report = Reservoir.Engine.Check.Fsck.Run(dev);
        Assert.Contains(report.Errors, e => e.Where == "root tree item (999, SUBVOL_QGROUP_INFO, 0)" && e.Message.Contains("stale"));
        Assert.Contains(report.Errors, e => e.Where == "qgroup 0/256" && e.Message.Contains("kept twice"));
        Assert.Contains(report.Errors, e => e.Where == "subvolume 257" && e.Message.Contains("no level-0 qgroup"));
        Assert.Equal(3, report.Errors.Count());
    }

    [Fact]
    public void AnImageOfQuotaVersion1GetsOwnerRefsARecountAndLevel0UsageBesideItsRootItems()
    {
        var dev = NewDevice(128UL << 20);
        // Version 1 had no EXTENT_OWNER_REFs either.
        var expected = ImageOfOlderQuotaVersion(dev, 1, (fs, h) =>
        {
            foreach (var id in new ulong[] { 5, 256, 257 })
            {
                var t = fs.Fs.FsTree(id)!;
                using (t.Lock.Write())
                    foreach (var (bytenr, _, _) in OwnerRefs.Scan(t).ToList()) Assert.True(t.Delete(h, OwnerRefs.KeyOf(bytenr)));
            }
        });
        FsckAssert.Clean(dev); // version 1 as it was
        using (var fs = Mount(dev))
        {
            AssertLevel0UsageMoved(fs, expected);
            using (var t = fs.Fs.FsTree(257)!.Lock.Read()) Assert.Equal(2, OwnerRefs.Scan(fs.Fs.FsTree(257)!).Count());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void OnlyAGroupWithALimitHasALimitItem()
    {
        var dev = NewDevice(64UL << 20);
        var limitKey = new Key(0, KeyTypes.QgroupLimit, Q0(256));
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out _)); // 256
            Ok(fs.Sync());
            Assert.Null(fs.Fs.QuotaTree!.Get(limitKey));
            Assert.Null(fs.Fs.QuotaTree.Get(new Key(0, KeyTypes.QgroupLimit, Q0(5))));
            Ok(fs.SetQgroupLimit(Q0(256), 64 * M, ulong.MaxValue));
            Assert.NotNull(fs.Fs.QuotaTree.Get(limitKey));
            Ok(fs.SetQgroupLimit(Q0(256), ulong.MaxValue, ulong.MaxValue)); // "none"
            Assert.Null(fs.Fs.QuotaTree.Get(limitKey));
            Assert.Equal(ulong.MaxValue, Usage(fs, Q0(256)).MaxReferenced);
            Ok(fs.SetQgroupLimit(Q0(256), 32 * M, ulong.MaxValue));
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.Equal(32 * M, Usage(fs, Q0(256)).MaxReferenced);
            Assert.Equal(ulong.MaxValue, Usage(fs, Q0(5)).MaxReferenced);
        }
    }

    /// <summary>The extent tree's SHARED_ROOT_REF items as (extent, subvolume).</summary>
    private static List<(ulong Bytenr, ulong Root)> SharedRootRefs(Filesystem fs)
    {
        var l = new List<(ulong, ulong)>();
        var t = fs.Fs.ExtentTree;
        var path = new Reservoir.Engine.Tree.TreePath();
        using (t.Lock.Read())
            if (t.SeekGE(Key.Min, path))
                do { if (path.Key.Type == KeyTypes.SharedRootRef) l.Add((path.Key.ObjectId, path.Key.Offset)); } while (t.Next(path));
        return l;
    }

    /// <summary>
    /// A snapshot taken in the transaction that wrote an extent (it writes its source's dirty
    /// data back first, then repeats its transitions) is a candidate for the extent through the
    /// lineage: the commit gives it no SHARED_ROOT_REF, where it gave one per extent per such
    /// snapshot (a snapshot of a snapshot in the same transaction likewise). A clone into a
    /// subvolume outside the lineage still gets one. The numbers are the recount's and fsck,
    /// which checks that every referrer is a candidate, is clean.
    /// </summary>
    [Fact]
    public void ASnapshotTakenInTheTransactionThatWroteAnExtentGetsNoSharedRootRef()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            Ok(fs.CreateSubvolume(Root, "other", 0, 0, out var other));
            Ok(fs.Sync());
            var files = Enumerable.Range(0, 8).Select(i => CreateFile(fs, sv.Ino, $"f{i}", Data(i, 64 << 10))).ToList();
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s1", readOnly: false, out var s1)); // writes the files back: one transaction
            Ok(fs.CreateSnapshot(s1.Ino, Root, "s2", readOnly: true, out _));
            ulong g = CreateFile(fs, other.Ino, "g");
            Ok(fs.CloneRange(files[0], 0, g, 0, 0));
            Ok(fs.Sync());
            ulong otherId = Reservoir.Engine.Inodes.NodeIds.Decode(other.Ino).TreeId;
            var refs = SharedRootRefs(fs);
            Assert.Equal([otherId], refs.Select(r => r.Root).Distinct());
            Assert.Single(refs);
            // The source lets go of every extent, which both snapshots keep.
            foreach (var f in files) Ok(fs.Write(f, 0, Data(99, 64 << 10), out _));
            Ok(fs.Sync());
            Ok(fs.RescanQuota(out int corrected));
            Assert.Equal(0, corrected);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// The other side of <see cref="ASnapshotTakenInTheTransactionThatWroteAnExtentGetsNoSharedRootRef"/>:
    /// sv let go of an extent s0 keeps, its ORIGIN_DROP still pending (sv has no snapshot since);
    /// then, in one transaction, a snapshot s of sv is taken (so this commit writes the pending
    /// ORIGIN_DROP, closing sv's window before s) and s takes the extent by a clone from s0. s is
    /// no candidate through sv, so it needs its SHARED_ROOT_REF: without it fsck finds a referrer
    /// no search would meet.
    /// </summary>
    [Fact]
    public void ASnapshotTakenAfterItsSourceLetGoOfAnExtentGetsASharedRootRefForItsClone()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            ulong f = CreateFile(fs, sv.Ino, "f", Data(1, 64 << 10));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s0", readOnly: true, out var s0));
            Ok(fs.Sync());
            Ok(fs.Write(f, 0, Data(2, 64 << 10), out _));
            Ok(fs.Sync());                                  // sv let go of the extent: its ORIGIN_DROP pending
            Ok(fs.CreateSnapshot(sv.Ino, Root, "s", readOnly: false, out var s));
            Ok(fs.Lookup(s0.Ino, "f", out var s0f));
            ulong g = CreateFile(fs, s.Ino, "g");
            Ok(fs.CloneRange(s0f.Ino, 0, g, 0, 0));         // in the snapshot's transaction
            Ok(fs.Sync());
            ulong sId = Reservoir.Engine.Inodes.NodeIds.Decode(s.Ino).TreeId;
            Assert.Contains(sId, SharedRootRefs(fs).Select(r => r.Root));
            Ok(fs.RescanQuota(out int corrected));
            Assert.Equal(0, corrected);
        }
        FsckAssert.Clean(dev);
    }
}

using Reservoir.Common;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// A shrink moves what lies past the new end below it (FsInfo.Relocate.cs): data extents and
/// tree blocks, under snapshots, reflinks and quota groups, keeping every file's bytes, the
/// sharing between snapshots (metadata in use stays what it was, not once per snapshot), every
/// group's numbers (fsck recounts them) and the generations copy-on-write decides by (the
/// snapshots still change apart after the move). Refused with nothing changed when what is in
/// use does not fit; a power cut at any device operation of a moving shrink leaves the old size
/// or the new with every synced file.
/// </summary>
public class RelocationTests
{
    private const ulong Root = Filesystem.RootIno;
    private const ulong MiB = 1UL << 20;

    [Fact]
    public void AShrinkMovesTheDataAndTreeBlocksInItsWay()
    {
        var dev = NewDevice(128 * MiB);                         // 8 MiB groups
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            // Filler first, at the low addresses; what stays is written after it, above.
            var filler = Bytes(40 * MiB, 1);
            CreateFile(fs, Root, "filler", filler);
            Ok(fs.Sync());
            for (int i = 0; i < 12; i++) files[$"f{i}"] = Put(fs, $"f{i}", (ulong)(i + 1) * 300_000, 10 + i);
            for (int i = 0; i < 400; i++) files[$"small{i}"] = Put(fs, $"small{i}", 100, 1000 + i); // tree blocks
            Ok(fs.Unlink(Root, "filler"));
            Ok(fs.Sync());
            ulong before = fs.Fs.Space.MinimumSize();
            Assert.True(before > 56 * MiB, $"nothing in the way: minimum {before >> 20} MiB");

            Ok(fs.Resize(40 * MiB, out var r, out var why), why ?? "");
            Assert.Equal((128 * MiB, 40 * MiB), (r.OldSize, r.NewSize));
            Assert.Equal(40 * MiB, dev.Size);
            Assert.True(fs.LastRelocation.DataExtents > 0 && fs.LastRelocation.TreeBlocks > 0, $"{fs.LastRelocation}");
            Assert.All(fs.Fs.Space.Groups, g => Assert.True(g.End <= 40 * MiB, $"{g}"));
            AssertTree(fs, files);
            // Still writable, and the space freed at the old places is gone with the tail.
            files["after"] = Put(fs, "after", 3 * MiB, 99);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.Equal(40 * MiB, fs.TotalBytes);
            AssertTree(fs, files);
        }
    }

    [Fact]
    public void SnapshotsReflinksAndQuotaGroupsComeThroughAMoveAsTheyWere()
    {
        var dev = NewDevice(160 * MiB);
        var expect = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            var filler = Bytes(48 * MiB, 2);
            CreateFile(fs, Root, "filler", filler);
            Ok(fs.Sync());
            Ok(fs.CreateSubvolume(Root, "v", 0, 0, out var v));
            for (int i = 0; i < 6; i++) expect[$"v/f{i}"] = Put(fs, v.Ino, $"f{i}", (ulong)(i + 1) * 400_000, 20 + i);
            for (int i = 0; i < 300; i++) expect[$"v/s{i}"] = Put(fs, v.Ino, $"s{i}", 64, 500 + i);
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(v.Ino, Root, "snap1", readOnly: true, out var s1));
            foreach (var (k, d) in expect.ToList()) expect["snap1/" + k[2..]] = d;
            // The source changes apart from its snapshot; a reflink shares across subvolumes.
            Ok(fs.Lookup(v.Ino, "f2", out var f2));
            var patch = Bytes(100_000, 77);
            Ok(fs.Write(f2.Ino, 50_000, patch, out _));
            expect["v/f2"] = Overlay(expect["v/f2"], 50_000, patch);
            ulong c = CreateFile(fs, Root, "clone");
            Ok(fs.Lookup(v.Ino, "f4", out var f4));
            Ok(fs.CloneRange(f4.Ino, 0, c, 0, 0));
            expect["clone"] = expect["v/f4"];
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(v.Ino, Root, "snap2", readOnly: false, out var s2));
            foreach (var (k, d) in expect.Where(e => e.Key.StartsWith("v/")).ToList()) expect["snap2/" + k[2..]] = d;
            Ok(fs.Unlink(Root, "filler"));
            Ok(fs.Sync());
            var groups = Groups(fs);
            int blocks = SubvolumeBlocks(fs);
            fs.Fs.RelocationBatchBytes = 3 * MiB;                // in rounds of 3 MiB and more, writers free between them
            long commits = fs.Stats.Commits;

            Ok(fs.Resize(48 * MiB, out var r, out var why), why ?? "");
            Assert.Equal(48 * MiB, r.NewSize);
            Assert.True(fs.LastRelocation.DataExtents >= 8, $"{fs.LastRelocation}");
            Assert.True(fs.Stats.Commits - commits >= 2 * 3, $"{fs.Stats.Commits - commits} commits: not in rounds"); // 9.3 MiB: 3 rounds or more
            // Shared blocks moved once: the three subvolumes hold as many distinct blocks as
            // before, give or take the paths to the moved extents' owner items, which each
            // copies (without the sharing, the snapshots would hold about three times as many).
            // Counted before any read (reads change access times, which copies leaves).
            int after = SubvolumeBlocks(fs);
            Assert.True(blocks > 40 && after <= blocks + 3 * 8, $"subvolume blocks {blocks} → {after}: sharing lost ({fs.LastRelocation})");
            AssertTree(fs, expect);
            Assert.Equal(groups, Groups(fs));
        }
        FsckAssert.Clean(dev);                                  // every group recounted
        using (var fs = Mount(dev))
        {
            AssertTree(fs, expect);
            // The moved blocks still copy on write apart: change the writable snapshot and the
            // source, then drop the snapshots; the source keeps its bytes.
            Ok(fs.Lookup(Root, "snap2", out var s2));
            Ok(fs.Lookup(s2.Ino, "f1", out var sf1));
            var patch = Bytes(5000, 88);
            Ok(fs.Write(sf1.Ino, 0, patch, out _));
            expect["snap2/f1"] = Overlay(expect["snap2/f1"], 0, patch);
            Ok(fs.Lookup(Root, "v", out var v));
            Ok(fs.Lookup(v.Ino, "s7", out var s7));
            Ok(fs.Write(s7.Ino, 0, Bytes(64, 89), out _));
            expect["v/s7"] = Bytes(64, 89);
            Ok(fs.Sync());
            AssertTree(fs, expect);
            Ok(fs.DeleteSubvolume(Root, "snap1"));
            Ok(fs.DeleteSubvolume(Root, "snap2"));
            foreach (var k in expect.Keys.Where(k => k.StartsWith("snap")).ToList()) expect.Remove(k);
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            AssertTree(fs, expect);
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void AShrinkThatCannotFitWhatIsInUseChangesNothing()
    {
        var dev = NewDevice(128 * MiB);
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            for (int i = 0; i < 10; i++) files[$"f{i}"] = Put(fs, $"f{i}", 5 * MiB, 30 + i);
            Ok(fs.Sync());
            var e = fs.Resize(40 * MiB, out var r, out var why);
            Assert.Equal(Errno.ENOSPC, e);
            Assert.Contains("do not fit below it", why);
            Assert.Equal((128 * MiB, 128 * MiB), (r.OldSize, r.NewSize));
            Assert.Equal(128 * MiB, dev.Size);
            Assert.Equal(0UL, fs.Fs.Space.FenceLimit);           // the fence is down again
            AssertTree(fs, files);
            // All of the space is usable again, past the refused end too.
            files["more"] = Put(fs, "more", 60 * MiB, 41);
            Ok(fs.Sync());
            Assert.Contains(fs.Fs.Space.Groups, g => g.End > 100 * MiB);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>With quotas on, each snapshot holding owner items of moved extents copies its
    /// leaves of them (the room a move asks for counts those subvolumes, not the empty ones):
    /// with 150 snapshots of the data and 150 empty subvolumes on a small image the shrink moves
    /// the data, every group comes through unchanged and fsck's recount agrees.</summary>
    [Fact]
    public void AMoveUnderManySnapshotsWithQuotasKeepsEveryGroup()
    {
        var dev = NewDevice(96 * MiB);
        var expect = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            CreateFile(fs, Root, "filler", Bytes(30 * MiB, 9));
            Ok(fs.Sync());
            Ok(fs.CreateSubvolume(Root, "v", 0, 0, out var v));
            for (int i = 0; i < 8; i++) expect[$"v/f{i}"] = Put(fs, v.Ino, $"f{i}", 300_000, 60 + i);
            Ok(fs.Sync());
            for (int i = 0; i < 150; i++)
            {
                Ok(fs.CreateSnapshot(v.Ino, Root, $"s{i}", readOnly: true, out _));
                Ok(fs.CreateSubvolume(Root, $"e{i}", 0, 0, out _));
            }
            expect["s149/f3"] = expect["v/f3"];
            Ok(fs.Unlink(Root, "filler"));
            Ok(fs.Sync());
            var groups = Groups(fs);
            Ok(fs.Resize(24 * MiB, out var r, out var why), why ?? "");
            Assert.True(fs.LastRelocation.DataExtents >= 8, $"{fs.LastRelocation}");
            Assert.Equal(groups, Groups(fs));
            AssertTree(fs, expect);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>`resize cancel` (btrfs's word) stops a shrink under way between its rounds:
    /// ECANCELED, the size as it was, the fence down, every file whole; with no shrink under way
    /// it says so; the next shrink goes through.</summary>
    [Fact]
    public void CancelStopsAShrinkUnderWayAndKeepsTheSize()
    {
        var dev = NewDevice(128 * MiB);
        var files = new Dictionary<string, byte[]>();
        using (var fs = Mount(dev))
        {
            CreateFile(fs, Root, "filler", Bytes(40 * MiB, 8));
            Ok(fs.Sync());
            for (int i = 0; i < 6; i++) files[$"f{i}"] = Put(fs, $"f{i}", MiB, 50 + i);
            Ok(fs.Unlink(Root, "filler"));
            Ok(fs.Sync());
            Assert.Equal(Errno.EINVAL, fs.Resize("cancel", out _, out var why));
            Assert.Contains("no shrink under way", why);

            fs.Fs.RelocationBatchBytes = MiB;
            Errno cancelled = Errno.EIO;
            var ex = Assert.Throws<FsException>(() => fs.Fs.Resize(24 * MiB, () =>
            {
                Ok(fs.Sync());
                cancelled = fs.Resize("1:cancel", out _, out _);   // as from another thread, while it runs
            }, out _));
            Assert.Equal(Errno.OK, cancelled);
            Assert.Equal(Errno.ECANCELED, ex.Errno);
            Assert.Equal(128 * MiB, fs.TotalBytes);
            Assert.Equal(128 * MiB, dev.Size);
            Assert.Equal(0UL, fs.Fs.Space.FenceLimit);
            AssertTree(fs, files);

            Ok(fs.Resize(24 * MiB, out var r, out why), why ?? "");
            Assert.Equal(24 * MiB, r.NewSize);
            Assert.True(fs.LastRelocation.DataExtents > 0, $"{fs.LastRelocation}");
            AssertTree(fs, files);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>While a shrink's fence stands, a write into a preallocated extent past it is
    /// copied on write below it (FsInfo.DataExtentMayBeShared): written in place, it would land
    /// in the old place of an extent the shrink is about to move, and be left behind.</summary>
    [Fact]
    public void AWriteIntoAnExtentPastTheFenceIsCopiedBelowIt()
    {
        var dev = NewDevice(128 * MiB);
        using var fs = Mount(dev);
        CreateFile(fs, Root, "filler", Bytes(40 * MiB, 5));
        Ok(fs.Sync());
        ulong p = CreateFile(fs, Root, "p");
        Ok(fs.Fallocate(p, Reservoir.Engine.Data.FallocateMode.Allocate, 0, 4 * MiB));
        Ok(fs.Unlink(Root, "filler"));
        Ok(fs.Sync());
        ulong Where(ulong off = 0)
        {
            Ok(fs.ExtentMap(p, out var map));
            return map.Single(m => m.FileOffset <= off && m.FileOffset + m.Length > off).DiskBytenr;
        }
        ulong limit = 24 * MiB;
        Assert.True(Where() >= limit, $"the preallocated extent is at {Where()}, below the fence");

        // Without the fence a write goes in place, into the preallocated extent.
        ulong tail = 4 * MiB - 8192, at = Where(tail);
        Ok(fs.Write(p, tail, Bytes(4096, 6), out _));
        Ok(fs.Sync());
        Assert.Equal(at, Where(tail));
        Assert.True(fs.Fs.Space.FenceLimit == 0);
        fs.Fs.Space.Fence(limit);
        try
        {
            var data = Bytes(8192, 7);
            Ok(fs.Write(p, 0, data, out _));
            Ok(fs.Sync());
            Assert.True(Where() < limit, $"written in place at {Where()}, past the fence");
            Assert.Equal(data, ReadAll(fs, p).AsSpan(0, 8192).ToArray());
        }
        finally { fs.Fs.Space.Unfence(); }
        Ok(fs.Resize(limit, out _, out var why), why ?? "");
        Assert.Equal(4 * MiB, (ulong)ReadAll(fs, p).Length);
        FsckAssert.Clean(dev);
    }

    /// <summary>A power cut at every device operation of a shrink that moves data, tree
    /// blocks shared by a snapshot and quota items: each image mounts at the old size or the
    /// new, holds every synced file in the subvolume and its snapshot, and passes fsck (which
    /// recounts the groups).</summary>
    [Fact]
    public void APowerCutAnywhereInAMovingShrinkLeavesTheOldSizeOrTheNew()
    {
        var initial = NewDevice(48 * MiB);                      // 4 MiB groups
        var expect = new Dictionary<string, byte[]>();
        using (var fs = Mount(initial))
        {
            Ok(fs.EnableQuota());
            CreateFile(fs, Root, "filler", Bytes(16 * MiB, 3));
            Ok(fs.Sync());
            Ok(fs.CreateSubvolume(Root, "v", 0, 0, out var v));
            for (int i = 0; i < 3; i++) expect[$"v/f{i}"] = Put(fs, v.Ino, $"f{i}", 700_000, 40 + i);
            for (int i = 0; i < 60; i++) expect[$"v/s{i}"] = Put(fs, v.Ino, $"s{i}", 64, 600 + i);
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(v.Ino, Root, "snap", readOnly: true, out _));
            foreach (var (k, d) in expect.ToList()) expect["snap/" + k[2..]] = d;
            Ok(fs.Unlink(Root, "filler"));
            Ok(fs.Sync());
        }
        int moved = 0;
        var (images, sizes) = ResizePowerCuts.EveryCut(initial, 48 * MiB, 20 * MiB, maxCuts: 2000,
            before: (fs, _) => fs.Fs.RelocationBatchBytes = MiB,   // a few rounds, each cut everywhere too
            after: (fs, dev, e, why, cut) =>
            {
                Assert.True(e == Errno.OK || dev.Ops >= dev.CutAfterOps, $"cut {cut}: failed before the power went: {why}");
                if (e == Errno.OK) moved = fs.LastRelocation.DataExtents;
            },
            check: fs2 => AssertTree(fs2, expect));
        Assert.True(moved > 0, "nothing was in the way");
        Assert.Equal(new HashSet<ulong> { 48 * MiB, 20 * MiB }, sizes);
        Assert.True(images > 30, $"only {images} images");
    }

    /// <summary>How many distinct tree blocks the subvolumes' trees hold together (a block
    /// several share counts once).</summary>
    private static int SubvolumeBlocks(Filesystem fs)
    {
        var seen = new HashSet<ulong>();
        foreach (var t in fs.Fs.AllFsTrees())
        {
            var stack = new Stack<Reservoir.Engine.Tree.TreeNode>();
            stack.Push(t.Root);
            while (stack.Count > 0)
            {
                var n = stack.Pop();
                if (!seen.Add(n.Bytenr) || n.IsLeaf) continue;
                for (int i = 0; i < n.NrItems; i++) stack.Push(t.ReadChild(n, i));
            }
        }
        return seen.Count;
    }

    /// <summary>Every group's id, referenced and exclusive bytes.</summary>
    private static List<(ulong Id, ulong Referenced, ulong Exclusive)> Groups(Filesystem fs) =>
        fs.Qgroups().Select(q => (q.Id, q.Referenced, q.Exclusive)).OrderBy(q => q.Id).ToList();

    private static byte[] Bytes(ulong n, int seed)
    {
        var d = new byte[n];
        new Random(seed).NextBytes(d);
        return d;
    }

    private static byte[] Put(Filesystem fs, string name, ulong size, int seed) => Put(fs, Root, name, size, seed);

    private static byte[] Put(Filesystem fs, ulong dir, string name, ulong size, int seed)
    {
        var data = Bytes(size, seed);
        CreateFile(fs, dir, name, data);
        return data;
    }

    /// <summary>Files named dir/name (one level) or name.</summary>
    private static void AssertTree(Filesystem fs, Dictionary<string, byte[]> files)
    {
        foreach (var (path, data) in files)
        {
            ulong dir = Root;
            string name = path;
            int slash = path.IndexOf('/');
            if (slash > 0)
            {
                Ok(fs.Lookup(Root, path[..slash], out var d), path);
                dir = d.Ino;
                name = path[(slash + 1)..];
            }
            Ok(fs.Lookup(dir, name, out var a), path);
            Assert.True(ReadAll(fs, a.Ino).AsSpan().SequenceEqual(data), $"{path} differs");
        }
    }
}

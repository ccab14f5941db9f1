using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Snapshots: O(1) creation by sharing the source's tree, copy-on-write of shared
/// blocks on either side, exact freeing when any of them goes, fsck's reference counts.</summary>
public class SnapshotTests
{
    private const ulong Root = Filesystem.RootIno;

    /// <summary>A directory's entries, "." and ".." aside, sorted.</summary>
    private static List<string> Names(Filesystem fs, ulong dir) =>
        DirNames(fs, dir).Where(n => n != "." && n != "..").OrderBy(n => n).ToList();

    private static ulong Look(Filesystem fs, ulong dir, string name)
    {
        Ok(fs.Lookup(dir, name, out var a), "lookup " + name);
        return a.Ino;
    }

    /// <summary>Files in a directory, some inline, most in extents: 1,500 of them make a tree
    /// three levels deep with 4 KiB nodes.</summary>
    private static Dictionary<string, byte[]> Populate(Filesystem fs, ulong dir, int seed, int count = 400)
    {
        var rnd = new Random(seed);
        var files = new Dictionary<string, byte[]>();
        for (int i = 0; i < count; i++)
        {
            var data = new byte[i % 3 == 0 ? rnd.Next(1, 2000) : rnd.Next(4096, 12_000)];
            rnd.NextBytes(data);
            CreateFile(fs, dir, $"f{i}", data);
            files[$"f{i}"] = data;
        }
        return files;
    }

    private static void AssertFiles(Filesystem fs, ulong dir, Dictionary<string, byte[]> want)
    {
        Assert.Equal(want.Keys.OrderBy(n => n).ToList(), Names(fs, dir));
        foreach (var (n, data) in want) Assert.Equal(data, ReadAll(fs, Look(fs, dir, n)));
    }

    [Fact]
    public void ASnapshotSharesTheTreeAndEachSideChangesOnlyItself()
    {
        var dev = NewDevice(128UL << 20);
        Dictionary<string, byte[]> src, snap;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var d));
            src = Populate(fs, d.Ino, 1, 1500);
            Ok(fs.CreateSubvolume(Root, "nested", 0, 0, out var nested));
            CreateFile(fs, nested.Ino, "x", new byte[100]);
            ulong pending = CreateFile(fs, Root, "pending");
            Ok(fs.Write(pending, 0, new byte[50_000], out _)); // dirty in the page cache: the snapshot must hold it
            Ok(fs.Sync());
            Ok(fs.StatFs(out var before));
            Assert.True(fs.Fs.FsTree(5)!.Height >= 3, "the test wants a tree with internal nodes");

            Ok(fs.CreateSnapshot(Root, Root, "snap", readOnly: false, out var s));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var afterSnap));
            // O(1): the new root item and the top-level directory's changes, not a copy of
            // 400 files' worth of tree.
            Assert.True(before.BlocksFree - afterSnap.BlocksFree < 16, $"snapshot took {before.BlocksFree - afterSnap.BlocksFree} blocks");

            // Same contents; not itself, not the nested subvolume (btrfs leaves an empty
            // directory there; Reservoir leaves nothing).
            ulong sd = Look(fs, s.Ino, "d");
            AssertFiles(fs, sd, src);
            Assert.Equal(new[] { "d", "pending" }, Names(fs, s.Ino));
            Assert.Equal(new[] { "d", "nested", "pending", "snap" }, Names(fs, Root));
            Assert.Equal(50_000UL, ReadAll(fs, Look(fs, s.Ino, "pending")).LongLength is var l ? (ulong)l : 0);
            Ok(fs.GetAttr(s.Ino, out var sa));
            Assert.Equal(3u, sa.Nlink); // ".", "..", d (nested is not there)
            Assert.NotEqual(Look(fs, d.Ino, "f1"), Look(fs, sd, "f1")); // unique node ids per subvolume
            Ok(fs.ShowSubvolume(s.Ino, out var info));
            Ok(fs.ShowSubvolume(Root, out var topInfo));
            Assert.Equal(topInfo.Uuid, info.ParentUuid);
            Assert.False(info.ReadOnly);

            // Each side changes alone.
            snap = new Dictionary<string, byte[]>(src);
            var rnd = new Random(2);
            for (int i = 0; i < 60; i++)
            {
                var a = new byte[rnd.Next(1, 30_000)]; rnd.NextBytes(a);
                string n = $"f{rnd.Next(400)}";
                ulong ino = Look(fs, d.Ino, n);
                Ok(fs.Write(ino, 100, a, out _));
                src[n] = Overlay(src[n], 100, a);
                var b = new byte[rnd.Next(1, 30_000)]; rnd.NextBytes(b);
                string m = $"f{rnd.Next(400)}";
                ulong ino2 = Look(fs, sd, m);
                Ok(fs.Write(ino2, 7, b, out _));
                snap[m] = Overlay(snap[m], 7, b);
            }
            for (int i = 0; i < 100; i += 3) { Ok(fs.Unlink(d.Ino, $"f{i}")); src.Remove($"f{i}"); }
            for (int i = 1; i < 100; i += 5) { Ok(fs.Unlink(sd, $"f{i}")); snap.Remove($"f{i}"); }
            CreateFile(fs, sd, "only-in-snap", new byte[5000]);
            snap["only-in-snap"] = new byte[5000];
            Ok(fs.Sync());
            AssertFiles(fs, d.Ino, src);
            AssertFiles(fs, sd, snap);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            ulong s = Look(fs, Root, "snap");
            AssertFiles(fs, Look(fs, Root, "d"), src);
            AssertFiles(fs, Look(fs, s, "d"), snap);
            // Deleting the snapshot frees what only it held; the source keeps all it shared.
            Ok(fs.DeleteSubvolume(Root, "snap"));
            Ok(fs.SyncSubvolumeDeletions());
            AssertFiles(fs, Look(fs, Root, "d"), src);
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void DeletingAnUnchangedSnapshotGivesBackExactlyWhatItTook()
    {
        var dev = NewDevice(128UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var sv));
            Ok(fs.Mkdir(sv.Ino, "d", 0x1ED, 0, 0, out var d));
            var files = Populate(fs, d.Ino, 3);
            Ok(fs.Sync());
            Ok(fs.StatFs(out var before));
            Ok(fs.Mkdir(Root, "snaps", 0x1ED, 0, 0, out var snaps));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var withDir));
            for (int i = 0; i < 5; i++) Ok(fs.CreateSnapshot(sv.Ino, snaps.Ino, $"s{i}", readOnly: true, out _));
            // A snapshot of a snapshot.
            Ok(fs.CreateSnapshot(Look(fs, snaps.Ino, "s2"), snaps.Ino, "s2b", readOnly: false, out var s2b));
            Ok(fs.Sync());
            // Seven trees share one root node, whose children have that one parent: fsck must
            // count each pointer once, not once per tree that walks through it.
            FsckAssert.Clean(dev);
            AssertFiles(fs, Look(fs, s2b.Ino, "d"), files);
            // The source changes all its files: every shared block is copied on its side.
            foreach (var n in files.Keys.ToList())
            {
                var a = new byte[10]; a.AsSpan().Fill(9);
                Ok(fs.Write(Look(fs, d.Ino, n), 0, a, out _));
            }
            Ok(fs.Sync());
            AssertFiles(fs, Look(fs, Look(fs, snaps.Ino, "s4"), "d"), files);
            AssertFiles(fs, Look(fs, s2b.Ino, "d"), files);
            // A read-only snapshot refuses changes.
            ulong ro = Look(fs, Look(fs, snaps.Ino, "s0"), "d");
            Assert.Equal(Errno.EROFS, fs.Write(Look(fs, ro, "f1"), 0, new byte[1], out _));
            Assert.Equal(Errno.EROFS, fs.Unlink(ro, "f1"));
            foreach (var n in new[] { "s0", "s1", "s2", "s3", "s4", "s2b" }) Ok(fs.DeleteSubvolume(snaps.Ino, n));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Assert.Empty(Names(fs, snaps.Ino));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal(new[] { 256UL }, list.Select(x => x.Id).ToArray());
            // The source's files were rewritten in place of their first blocks; everything the
            // snapshots held alone is back.
            Ok(fs.DeleteSubvolume(Root, "sv"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Rmdir(Root, "snaps"));
            Ok(fs.Sync());
            Ok(fs.StatFs(out var end));
            Ok(fs.StatFs(out _));
            Assert.True(end.BlocksFree >= before.BlocksFree, $"free {end.BlocksFree} blocks at the end, {before.BlocksFree} with the subvolume's files");
            Assert.Empty(fs.VerifyReservations());
        }
        var r = Reservoir.Engine.Check.Fsck.Run(dev, new Reservoir.Engine.Check.FsckOptions { CheckDataCsums = true });
        Assert.True(r.Clean, string.Join("\n", r.Errors.Take(20)));
        Assert.Equal(0, r.DataExtents);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ChangesInTheTransactionThatTookTheSnapshotStayOutOfIt(bool readOnly)
    {
        // No commit between writing, snapshotting and changing again: the source's root and
        // the nodes below it are dirty in the running transaction when the snapshot shares
        // them, and must still be copied, not changed in place, when either side changes. A
        // node the source copied away from is then the writable snapshot's alone, but its
        // data back-references still name the source: the snapshot must copy it too.
        var dev = NewDevice(128UL << 20);
        Dictionary<string, byte[]> files, snap;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var d));
            files = Populate(fs, d.Ino, 5, 600);
            ulong txBefore = fs.Fs.Running.Transid;
            Ok(fs.CreateSnapshot(Root, Root, "snap", readOnly, out var s));
            var before = new Dictionary<string, byte[]>(files);
            for (int i = 0; i < 600; i += 2) Ok(fs.Unlink(d.Ino, $"f{i}"));
            for (int i = 1; i < 600; i += 2) Ok(fs.Write(Look(fs, d.Ino, $"f{i}"), 0, new byte[3000], out _));
            CreateFile(fs, d.Ino, "new", new byte[100]);
            snap = new Dictionary<string, byte[]>(before);
            ulong sd = Look(fs, s.Ino, "d");
            if (!readOnly)
            {
                for (int i = 0; i < 600; i += 3) { Ok(fs.Unlink(sd, $"f{i}")); snap.Remove($"f{i}"); }
                for (int i = 1; i < 600; i += 3) { Ok(fs.Write(Look(fs, sd, $"f{i}"), 0, new byte[] { 1, 2, 3 }, out _)); snap[$"f{i}"] = Overlay(snap[$"f{i}"], 0, [1, 2, 3]); }
            }
            Assert.Equal(txBefore, fs.Fs.Running.Transid); // all in one transaction
            AssertFiles(fs, sd, snap);
            Ok(fs.Sync());
            AssertFiles(fs, sd, snap);
            Assert.Equal(301, Names(fs, d.Ino).Count);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev)) AssertFiles(fs, Look(fs, Look(fs, Root, "snap"), "d"), snap);
    }

    [Fact]
    public void PreallocatedAndNoCowExtentsAreCopiedWhenASnapshotSharesThem()
    {
        // Both are normally written in place; an extent a snapshot shares must not be, or the
        // snapshot's (or the source's) contents would change behind it.
        var dev = NewDevice(128UL << 20);
        var old = new byte[200_000];
        new Random(9).NextBytes(old);
        var a = new byte[50_000]; a.AsSpan().Fill(0xAA);
        var b = new byte[50_000]; b.AsSpan().Fill(0xBB);
        using (var fs = Mount(dev))
        {
            ulong pre = CreateFile(fs, Root, "pre");
            Ok(fs.Fallocate(pre, Reservoir.Engine.Data.FallocateMode.Allocate, 0, 400_000));
            ulong nocow = CreateFile(fs, Root, "nocow");
            Ok(fs.SetNoCow(nocow, true));
            Ok(fs.Write(nocow, 0, old, out _));
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(Root, Root, "snap", readOnly: false, out var s));
            Ok(fs.Write(pre, 100_000, a, out _));
            Ok(fs.Write(nocow, 100_000, a, out _));
            ulong spre = Look(fs, s.Ino, "pre"), snocow = Look(fs, s.Ino, "nocow");
            Ok(fs.Write(spre, 120_000, b, out _)); // overlaps the source's write in the shared extent
            Ok(fs.Sync());
            var wantPre = Overlay(new byte[400_000], 100_000, a);
            var wantSnapPre = Overlay(new byte[400_000], 120_000, b);
            Assert.Equal(wantPre, ReadAll(fs, pre));
            Assert.Equal(wantSnapPre, ReadAll(fs, spre));
            Assert.Equal(Overlay(old, 100_000, a), ReadAll(fs, nocow));
            Assert.Equal(old, ReadAll(fs, snocow));
            // Deleting the snapshot frees what it alone held (fsck checks every count).
            Ok(fs.DeleteSubvolume(Root, "snap"));
            Ok(fs.SyncSubvolumeDeletions());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void SnapshotArgumentsAreChecked()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var d));
        Assert.Equal(Errno.EINVAL, fs.CreateSnapshot(d.Ino, Root, "s", false, out _)); // not a subvolume
        Assert.Equal(Errno.EEXIST, fs.CreateSnapshot(Root, Root, "d", false, out _));
        Assert.Equal(Errno.ENOENT, fs.CreateSnapshot(Root, 999_999, "s", false, out _));
        // Quotas and snapshots work together, in either order.
        Ok(fs.CreateSnapshot(Root, Root, "s", false, out _));
        Ok(fs.EnableQuota());
        Ok(fs.CreateSnapshot(Root, Root, "s2", true, out _));
        Ok(fs.DeleteSubvolume(Root, "s"));
        Ok(fs.SyncSubvolumeDeletions());
        Assert.Equal(Errno.ENOENT, fs.Lookup(Root, "s", out _));
    }
}

using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// btrfs's `subvolume find-new` (<see cref="Filesystem.FindNew"/>): it lists exactly the file
/// extent items of the generation asked or later, as reading every item of the tree finds
/// them; it reads only the nodes written since (what changed, not what the subvolume holds);
/// its pages, put together, are the whole answer; files are named by the first name of their
/// first reference, and a file without a name has no path.
/// </summary>
public sealed class FindNewTests
{
    private const ulong Root = Filesystem.RootIno;

    /// <summary>Every EXTENT_DATA item of the tree of generation ≥ <paramref name="min"/>, read
    /// one by one (not through the generation-skipping walk).</summary>
    private static List<(ulong Ino, ulong Off, ulong Len, ulong Disk, ulong ExtOff, ulong Gen, FileExtentType Type)> ByReadingAll(Filesystem fs, ulong tree, ulong min)
    {
        var t = fs.Fs.FsTree(tree)!;
        var all = new List<(ulong, ulong, ulong, ulong, ulong, ulong, FileExtentType)>();
        using var lk = t.Lock.Read();
        var path = new TreePath();
        for (bool ok = t.SeekGE(Key.Min, path); ok; ok = t.Next(path))
        {
            if (path.Key.Type != KeyTypes.ExtentData) continue;
            Assert.True(FileExtentItem.TryRead(path.Data, out var fe));
            if (fe.Generation >= min) all.Add((path.Key.ObjectId, path.Key.Offset, fe.NumBytes, fe.DiskBytenr, fe.Offset, fe.Generation, fe.Type));
        }
        return all;
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void ListsExactlyWhatWasWrittenSinceAGenerationReadingOnlyWhatChanged()
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var svAttr));
        ulong sv = svAttr.Ino, tree = NodeIds.Decode(sv).TreeId;
        Ok(fs.Mkdir(sv, "early", 0x1ED, 0, 0, out var early));
        var dirs = new List<ulong>();
        for (int d = 0; d < 20; d++)
        {
            Ok(fs.Mkdir(sv, $"d{d}", 0x1ED, 0, 0, out var dir));
            dirs.Add(dir.Ino);
        }
        var files = new List<ulong>();
        for (int i = 0; i < 2000; i++) files.Add(CreateFile(fs, dirs[i % dirs.Count], $"f{i}", Bytes(4096 * (1 + i % 3), i)));
        Ok(fs.FindNew(tree, ulong.MaxValue, out var before), "find-new before");
        Assert.Empty(before.Extents);
        ulong since = before.Marker + 1; // everything written from here on

        // Rewrite the middle block of one file, append to another, preallocate a third's tail,
        // make a file deep down, give a new file a second name in an older directory, and one a
        // symlink (an inline extent).
        Ok(fs.Write(files[7], 4096, Bytes(4096, -1), out _));
        Ok(fs.Write(files[1001], 3 * 4096, Bytes(8192, -2), out _));
        Ok(fs.Fallocate(files[1500], FallocateMode.KeepSize, 1 << 20, 1 << 20));
        Ok(fs.Mkdir(sv, "late", 0x1ED, 0, 0, out var late));
        Ok(fs.Mkdir(late.Ino, "deeper", 0x1ED, 0, 0, out var deeper));
        ulong deep = CreateFile(fs, deeper.Ino, "new", Bytes(12288, -3));
        ulong linked = CreateFile(fs, late.Ino, "linked", Bytes(4096, -4));
        Ok(fs.Link(linked, early.Ino, "alias", out _));
        Ok(fs.Symlink(sv, "lnk", "some/target", 0, 0, out var lnk));

        Ok(fs.FindNew(tree, since, out var found), "find-new");
        var expected = ByReadingAll(fs, tree, since);
        Assert.Equal(expected, found.Extents.Select(x => (x.Inode, x.FileOffset, x.Length, x.DiskStart, x.ExtentOffset, x.Generation, x.Type)).ToList());
        // And what the reference found is what was changed: the split pieces of the rewritten
        // file keep their old generation, so only the new block of it shows.
        Assert.Equal(new[] { files[7], files[1001], files[1500], deep, linked, NodeIds.Decode(lnk.Ino).Ino }.Select(n => NodeIds.Decode(n).Ino).Order(),
            found.Extents.Select(x => x.Inode).Distinct().Order());
        Assert.Single(found.Extents, x => x.Inode == NodeIds.Decode(files[7]).Ino);
        Assert.Contains(found.Extents, x => x.Inode == NodeIds.Decode(files[1500]).Ino && x.Type == FileExtentType.Prealloc);
        Assert.Contains(found.Extents, x => x.Type == FileExtentType.Inline && x.Path == "lnk" && x.Length == (ulong)"some/target".Length && x.DiskStart == 0);
        Assert.All(found.Extents.Where(x => x.Inode == NodeIds.Decode(deep).Ino), x => Assert.Equal("late/deeper/new", x.Path));
        // The first name of the first reference: "early" was made before "late", so its
        // directory number is lower and its INODE_REF comes first, as on btrfs.
        Assert.All(found.Extents.Where(x => x.Inode == NodeIds.Decode(linked).Ino), x => Assert.Equal("early/alias", x.Path));
        Assert.All(found.Extents.Where(x => x.Inode == NodeIds.Decode(files[7]).Ino), x => Assert.Equal("d7/f7", x.Path));

        // The marker is the subvolume's generation after find-new's sync.
        Ok(fs.ListSubvolumes(out var list));
        Assert.Equal(list.Single(s => s.Id == tree).Generation, found.Marker);
        Assert.True(found.Marker >= since);

        // Cost: the walk since a generation reads a small part of what a walk of everything does.
        Ok(fs.FindNew(tree, 0, out var everything));
        Assert.Equal(ByReadingAll(fs, tree, 0).Count, everything.Extents.Count);
        Assert.True(found.NodesRead * 5 < everything.NodesRead, $"since {since}: {found.NodesRead} nodes read; everything: {everything.NodesRead}");
        Ok(fs.FindNew(tree, found.Marker + 1, out var nothing));
        Assert.Empty(nothing.Extents);
        Assert.True(nothing.NodesRead <= 1, $"nothing new, yet {nothing.NodesRead} nodes read");
    }

    [Fact]
    public void PagesPutTogetherAreTheWholeAnswerAcrossBatches()
    {
        var dev = NewDevice(256UL << 20);
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var svAttr));
        ulong tree = NodeIds.Decode(svAttr.Ino).TreeId;
        // More items than one batch holds, so the whole walk resumes between batches.
        int n = Filesystem.FindNewBatchItems / 2 + 100;
        for (int i = 0; i < n; i++) CreateFile(fs, svAttr.Ino, $"f{i:D5}", Bytes(4096, i));
        Ok(fs.FindNew(tree, 0, out var whole));
        Assert.Equal(n, whole.Extents.Count);
        Assert.Equal(ByReadingAll(fs, tree, 0).Select(x => (x.Ino, x.Off)), whole.Extents.Select(x => (x.Inode, x.FileOffset)));
        Assert.Equal(Enumerable.Range(0, n).Select(i => $"f{i:D5}"), whole.Extents.Select(x => x.Path));

        foreach (int size in new[] { 1, 7, 100 })
        {
            var paged = new List<NewExtent>();
            Key? from = Filesystem.FindNewStart;
            int pages = 0;
            while (from is { } k)
            {
                Ok(fs.FindNewPage(tree, 0, k, size, out var page, out ulong marker, out from));
                Assert.Equal(whole.Marker, marker);
                paged.AddRange(page);
                Assert.True(++pages < 100_000);
            }
            Assert.Equal(whole.Extents, paged);
        }
    }

    /// <summary>The "erase your darlings" diff: the marker of a blank read-only snapshot, then
    /// find-new on its source from that marker, lists what was written after the snapshot and
    /// nothing the snapshot holds (a snapshot shares its source's root node, so its ROOT_ITEM
    /// generation is older than the transaction that took it; the marker is the later).</summary>
    [Fact]
    public void ADiffAgainstABlankSnapshotListsWhatCameAfterIt()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "root", 0, 0, out var rootAttr));
        ulong tree = NodeIds.Decode(rootAttr.Ino).TreeId;
        Ok(fs.Mkdir(rootAttr.Ino, "etc", 0x1ED, 0, 0, out var etc));
        CreateFile(fs, etc.Ino, "keep", Bytes(100, 1));
        Ok(fs.Sync());
        Ok(fs.CreateSnapshot(rootAttr.Ino, Root, "root-blank", readOnly: true, out var blank));
        Ok(fs.FindNew(NodeIds.Decode(blank.Ino).TreeId, ulong.MaxValue, out var b));
        Assert.Empty(b.Extents);
        CreateFile(fs, etc.Ino, "new", Bytes(100, 2));
        Ok(fs.Mkdir(rootAttr.Ino, "var", 0x1ED, 0, 0, out var var));
        CreateFile(fs, var.Ino, "z", Bytes(5000, 3));
        Ok(fs.FindNew(tree, b.Marker, out var diff));
        Assert.Equal(["etc/new", "var/z"], diff.Extents.Select(x => x.Path!).Distinct().Order());
    }

    [Fact]
    public void AFileWithoutANameHasNoPathAndASubvolumeGoneIsENOENT()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var svAttr));
        ulong tree = NodeIds.Decode(svAttr.Ino).TreeId;
        ulong kept = CreateFile(fs, svAttr.Ino, "kept", Bytes(4096, 1));
        ulong gone = CreateFile(fs, svAttr.Ino, "gone", Bytes(4096, 2));
        Ok(fs.Open(gone, true, out _));
        Ok(fs.Unlink(svAttr.Ino, "gone"));
        Ok(fs.FindNew(tree, 0, out var found));
        Assert.Equal("kept", Assert.Single(found.Extents, x => x.Inode == NodeIds.Decode(kept).Ino).Path);
        Assert.Null(Assert.Single(found.Extents, x => x.Inode == NodeIds.Decode(gone).Ino).Path);
        Ok(fs.Release(gone));

        Ok(fs.DeleteSubvolume(Root, "sv"));
        Assert.Equal(Reservoir.Common.Errno.ENOENT, fs.FindNew(tree, 0, out _));
    }
}

using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Subvolumes as independent file trees: created, used, listed, found again after a
/// remount, deleted with their space and quota group, checked by fsck.</summary>
public class SubvolumeTests
{
    private const ulong Root = Filesystem.RootIno;

    private static List<string> Names(Filesystem fs, ulong dir) => DirNames(fs, dir);

    private static string[] Entries(Filesystem fs, ulong dir) => [.. DirNames(fs, dir).Where(n => n is not "." and not "..").Order()];

    [Fact]
    public void SubvolumesAreSeparateTreesThatAreListedAndSurviveARemount()
    {
        var dev = NewDevice(64UL << 20);
        ulong sv, inner, fileInSv;
        var data = new byte[300_000];
        new Random(3).NextBytes(data);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Mkdir(Root, "dir", 0x1ED, 0, 0, out var d));
            Ok(fs.CreateSubvolume(Root, "sv", 1000, 1000, out var a));
            sv = a.Ino;
            Assert.True(a.IsDir);
            Assert.Equal(1000u, a.Uid);
            Assert.NotEqual(Root, sv);
            Assert.Equal((NodeIds.Decode(sv).TreeId, NodeIds.Decode(sv).Ino), (256UL, Root)); // first subvolume id, its root directory
            Ok(fs.CreateSubvolume(sv, "inner", 0, 0, out var b));
            inner = b.Ino;
            Ok(fs.CreateSubvolume(d.Ino, "deep", 0, 0, out _));
            Assert.Equal(Errno.EEXIST, fs.CreateSubvolume(Root, "sv", 0, 0, out _));
            Assert.Equal(Errno.EEXIST, fs.Mkdir(Root, "sv", 0x1ED, 0, 0, out _));

            // Files in the subvolume: inode numbers start again at 256 inside its tree, and the
            // node ids the API hands out stay unique.
            fileInSv = CreateFile(fs, sv, "f", data);
            ulong fileInTop = CreateFile(fs, Root, "f", new byte[10]);
            Assert.NotEqual(fileInTop, fileInSv);
            Assert.Equal((256UL, 257UL), NodeIds.Decode(fileInSv));  // the first inode after the subvolume's root
            Assert.Equal((5UL, 258UL), NodeIds.Decode(fileInTop));   // after "dir" (257) in the top-level tree
            Assert.Equal(258UL, fileInTop);                          // top-level node ids are the inode numbers
            Assert.Equal(data, ReadAll(fs, fileInSv));

            // The namespace joins up: lookup, readdir and ".." cross between the trees.
            Ok(fs.Lookup(Root, "sv", out var look));
            Assert.Equal(sv, look.Ino);
            Assert.Contains("sv", Names(fs, Root));
            Assert.Contains("inner", Names(fs, sv));
            Ok(fs.Lookup(sv, "..", out var up));
            Assert.Equal(Root, up.Ino);
            Ok(fs.Lookup(inner, "..", out var up2));
            Assert.Equal(sv, up2.Ino);
            Ok(fs.GetAttr(Root, out var rootAttr));
            Assert.Equal(4u, rootAttr.Nlink); // ".", "..", dir, sv

            // Names do not move between trees.
            Assert.Equal(Errno.EXDEV, fs.Link(fileInSv, Root, "hard", out _));
            Assert.Equal(Errno.EXDEV, fs.Rename(sv, "f", Root, "g", 0));
            Assert.Equal(Errno.EINVAL, fs.Rename(Root, "sv", sv, "self", 0)); // a subvolume moves, but not into itself
            Assert.Equal(Errno.EISDIR, fs.Unlink(Root, "sv"));
            Assert.Equal(Errno.ENOTEMPTY, fs.Rmdir(Root, "sv"));

            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal(new[] { (256UL, 5UL, "sv"), (257UL, 256UL, "sv/inner"), (258UL, 5UL, "dir/deep") },
                list.Select(s => (s.Id, s.ParentId, s.Path)).ToArray());
            Ok(fs.Sync());
            var groups = fs.Qgroups().ToDictionary(g => g.Id);
            Assert.Equal(Units.AlignUp(300_000, 4096), groups[QgroupId.Of(0, 256)].Referenced);
            Assert.Equal(Units.AlignUp(10, 4096), groups[QgroupId.Of(0, 5)].Referenced);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.Lookup(Root, "sv", out var look));
            Assert.Equal(sv, look.Ino);
            Ok(fs.Lookup(sv, "f", out var f));
            Assert.Equal(fileInSv, f.Ino);
            Assert.Equal(data, ReadAll(fs, f.Ino));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal(3, list.Count);
        }
    }

    /// <summary>
    /// rename(2) of a subvolume's entry within its parent subvolume, as btrfs allows: the
    /// directory entries, both directories' sizes and link counts, the ROOT_REF and ROOT_BACKREF
    /// (the list's path, ".." of its root) all follow, the subvolume keeps its id, contents and
    /// group; a snapshot of the parent taken after it leaves it out under its new name. Nothing
    /// is renamed over a subvolume (ENOTEMPTY, as btrfs), nor exchanged with one (EXDEV). It
    /// answered EXDEV before, and `mv` then copied the subvolume into a plain directory and
    /// deleted it.
    /// </summary>
    [Fact]
    public void ASubvolumeIsRenamedWithinItsParentSubvolume()
    {
        var dev = NewDevice(64UL << 20);
        var data = new byte[100_000];
        new Random(5).NextBytes(data);
        ulong sv, a, b;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Mkdir(Root, "a", 0x1ED, 0, 0, out var da));
            Ok(fs.Mkdir(Root, "b", 0x1ED, 0, 0, out var db));
            (a, b) = (da.Ino, db.Ino);
            Ok(fs.CreateSubvolume(a, "sv", 0, 0, out var s));
            sv = s.Ino;
            CreateFile(fs, sv, "f", data);
            Ok(fs.CreateSubvolume(Root, "other", 0, 0, out _));
            Ok(fs.Mkdir(b, "empty", 0x1ED, 0, 0, out _));
            Ok(fs.Mkdir(b, "full", 0x1ED, 0, 0, out var full));
            CreateFile(fs, full.Ino, "x", new byte[1]);
            Ok(fs.Sync());
            ulong referenced = fs.Qgroups().Single(g => g.Id == QgroupId.Of(0, 256)).Referenced;

            Ok(fs.Rename(a, "sv", a, "renamed", 0));                  // in its directory
            Assert.Equal(["renamed"], Entries(fs, a));
            Ok(fs.GetAttr(a, out var aAttr));
            Assert.Equal(3u, aAttr.Nlink);
            Assert.Equal(Errno.ENOTEMPTY, fs.Rename(b, "empty", a, "renamed", 0)); // over a subvolume
            Assert.Equal(Errno.ENOTEMPTY, fs.Rename(a, "renamed", Root, "other", 0));
            Assert.Equal(Errno.ENOTEMPTY, fs.Rename(a, "renamed", b, "full", 0));
            Ok(fs.Rename(a, "renamed", b, "empty", 0));               // into another directory, over an empty one
            Assert.Empty(Entries(fs, a));
            Assert.Equal(["empty", "full"], Entries(fs, b));
            Ok(fs.GetAttr(a, out aAttr));
            Ok(fs.GetAttr(b, out var bAttr));
            Assert.Equal((2u, 4u), (aAttr.Nlink, bAttr.Nlink));       // b: ".", "..", full, the subvolume
            Ok(fs.Lookup(b, "empty", out var moved));
            Assert.Equal(sv, moved.Ino);
            Ok(fs.Lookup(sv, "..", out var up));
            Assert.Equal(b, up.Ino);
            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal([(256UL, "b/empty"), (257UL, "other")], list.Select(l => (l.Id, l.Path)).ToArray());
            // A snapshot of the parent leaves the nested subvolume out, found by its new name.
            Ok(fs.CreateSnapshot(Root, Root, "top-snap", true, out var snap));
            Ok(fs.Lookup(snap.Ino, "b", out var snapB));
            Assert.Equal(["full"], Entries(fs, snapB.Ino));
            Ok(fs.Sync());
            Assert.Equal(referenced, fs.Qgroups().Single(g => g.Id == QgroupId.Of(0, 256)).Referenced);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.Lookup(b, "empty", out var moved));
            Assert.Equal(sv, moved.Ino);
            Ok(fs.Lookup(sv, "f", out var f));
            Assert.Equal(data, ReadAll(fs, f.Ino));
            Ok(fs.ShowSubvolume(sv, out var info));
            Assert.Equal("b/empty", info.Path);
        }
    }

    /// <summary>
    /// A subvolume's entry moved into another subvolume and back, as btrfs allows: the entries
    /// in both trees, the ROOT_REF and ROOT_BACKREF now under the new parent (list, ".."), a
    /// snapshot of the new parent leaving it out, the numbers unchanged; never into itself or a
    /// subvolume below it (EINVAL), never over a subvolume (ENOTEMPTY), and a plain name still
    /// does not move between subvolumes (EXDEV).
    /// </summary>
    [Fact]
    public void ASubvolumeMovesIntoAnotherSubvolumeAndBack()
    {
        var dev = NewDevice(64UL << 20);
        var data = new byte[50_000];
        new Random(7).NextBytes(data);
        ulong p, d, s, inner;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "p", 0, 0, out var pa));
            Ok(fs.Mkdir(pa.Ino, "d", 0x1ED, 0, 0, out var da));
            Ok(fs.CreateSubvolume(Root, "s", 0, 0, out var sa));
            (p, d, s) = (pa.Ino, da.Ino, sa.Ino);
            CreateFile(fs, s, "f", data);
            Ok(fs.CreateSubvolume(s, "inner", 0, 0, out var ia));
            inner = ia.Ino;
            Ok(fs.CreateSubvolume(d, "taken", 0, 0, out _));
            Ok(fs.Sync());
            var before = fs.Qgroups().Select(g => (g.Id, g.Referenced, g.Exclusive)).OrderBy(g => g.Id).ToArray();

            Assert.Equal(Errno.EINVAL, fs.Rename(Root, "s", s, "self", 0));       // into itself
            Assert.Equal(Errno.EINVAL, fs.Rename(Root, "s", inner, "below", 0));  // into a subvolume below it
            Assert.Equal(Errno.ENOTEMPTY, fs.Rename(Root, "s", d, "taken", 0));   // over a subvolume
            Assert.Equal(Errno.EXDEV, fs.Rename(s, "f", d, "f", 0));              // a plain name
            // A read-only snapshot moves too, its own tree untouched (its root's ctime too).
            Ok(fs.CreateSnapshot(s, Root, "ro", readOnly: true, out var ro));
            Ok(fs.GetAttr(ro.Ino, out var roBefore));
            Ok(fs.Rename(Root, "ro", d, "ro", 0));
            Ok(fs.Rename(d, "ro", Root, "ro2", 0));
            Ok(fs.GetAttr(ro.Ino, out var roAfter));
            Assert.Equal(roBefore.Ctime, roAfter.Ctime);
            Ok(fs.DeleteSubvolume(Root, "ro2"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Rename(Root, "s", d, "s", 0));
            Assert.Equal(["p"], Entries(fs, Root));
            Assert.Equal(["s", "taken"], Entries(fs, d));
            Ok(fs.Lookup(s, "..", out var up));
            Assert.Equal(d, up.Ino);
            Ok(fs.GetAttr(d, out var dAttr));
            Ok(fs.GetAttr(Root, out var rootAttr));
            Assert.Equal((4u, 3u), (dAttr.Nlink, rootAttr.Nlink));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal([(256UL, 5UL, "p"), (257UL, 256UL, "p/d/s"), (258UL, 257UL, "p/d/s/inner"), (259UL, 256UL, "p/d/taken")],
                list.Select(l => (l.Id, l.ParentId, l.Path)).OrderBy(l => l.Id).ToArray());
            Ok(fs.CreateSnapshot(p, Root, "p-snap", true, out var snap));
            Ok(fs.Lookup(snap.Ino, "d", out var snapD));
            Assert.Empty(Entries(fs, snapD.Ino));
            Ok(fs.Sync());
            Assert.Equal(before, fs.Qgroups().Where(g => g.Id < QgroupId.Of(0, 260)).Select(g => (g.Id, g.Referenced, g.Exclusive)).OrderBy(g => g.Id).ToArray());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.Lookup(d, "s", out var again));
            Assert.Equal(s, again.Ino);
            Assert.Equal(data, ReadAll(fs, NodeIds.Encode(NodeIds.Decode(s).TreeId, 257)));
            Ok(fs.Rename(d, "s", Root, "back", 0));                              // and out again
            Ok(fs.ShowSubvolume(s, out var info));
            Assert.Equal("back", info.Path);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// RENAME_EXCHANGE with subvolumes, as btrfs allows: inside one subvolume a subvolume's entry
    /// trades places with a plain directory (each ".." follows) or with another subvolume's entry
    /// in the same directory (a read-only snapshot's root left untouched); between subvolumes two
    /// subvolumes trade places. A plain name does not cross subvolumes (EXDEV), and neither side
    /// lands in itself or below itself (EINVAL). Entries, link counts, the ROOT_REFs (the list's
    /// paths and parents), a later snapshot of the parent, the groups' numbers, fsck and a remount.
    /// </summary>
    [Fact]
    public void SubvolumesTradePlacesWithRenameExchange()
    {
        var dev = NewDevice(64UL << 20);
        var f = new byte[60_000];
        var g = new byte[30_000];
        new Random(11).NextBytes(f);
        new Random(12).NextBytes(g);
        ulong a, b, plain, sv, p, d, q, ro;
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.Mkdir(Root, "a", 0x1ED, 0, 0, out var da));
            Ok(fs.Mkdir(Root, "b", 0x1ED, 0, 0, out var db));
            (a, b) = (da.Ino, db.Ino);
            Ok(fs.CreateSubvolume(a, "sv", 0, 0, out var s));               // 256
            sv = s.Ino;
            CreateFile(fs, sv, "f", f);
            Ok(fs.Mkdir(b, "plain", 0x1ED, 0, 0, out var pl));
            plain = pl.Ino;
            CreateFile(fs, plain, "g", g);
            Ok(fs.CreateSubvolume(Root, "p", 0, 0, out var pa));            // 257
            p = pa.Ino;
            Ok(fs.Mkdir(p, "d", 0x1ED, 0, 0, out var dd));
            d = dd.Ino;
            Ok(fs.CreateSubvolume(d, "q", 0, 0, out var qa));               // 258
            q = qa.Ino;
            Ok(fs.CreateSnapshot(sv, Root, "ro", readOnly: true, out var roa)); // 259
            ro = roa.Ino;
            Ok(fs.Sync());
            var before = fs.Qgroups().Select(x => (x.Id, x.Referenced, x.Exclusive)).OrderBy(x => x.Id).ToArray();
            Ok(fs.GetAttr(ro, out var roBefore));
            Ok(fs.GetAttr(a, out var aBefore));
            Ok(fs.GetAttr(b, out var bBefore));

            // Within the top level: the subvolume and a plain directory trade places.
            Ok(fs.Rename(a, "sv", b, "plain", RenameFlags.Exchange));
            Ok(fs.Lookup(a, "sv", out var x1));
            Ok(fs.Lookup(b, "plain", out var x2));
            Assert.Equal((plain, sv), (x1.Ino, x2.Ino));
            Ok(fs.Lookup(sv, "..", out var up));
            Assert.Equal(b, up.Ino);
            Ok(fs.Lookup(plain, "..", out up));
            Assert.Equal(a, up.Ino);
            Ok(fs.GetAttr(a, out var aAfter));
            Ok(fs.GetAttr(b, out var bAfter));
            Assert.Equal((aBefore.Nlink, bBefore.Nlink, aBefore.Size, bBefore.Size), (aAfter.Nlink, bAfter.Nlink, aAfter.Size, bAfter.Size));
            Ok(fs.Lookup(a, "sv", out var gDir));
            Ok(fs.Lookup(gDir.Ino, "g", out var gFile));
            Assert.Equal(g, ReadAll(fs, gFile.Ino));

            // In one directory: two subvolumes' entries, one a read-only snapshot.
            Ok(fs.Rename(Root, "p", Root, "ro", RenameFlags.Exchange));
            Ok(fs.Lookup(Root, "p", out x1));
            Ok(fs.Lookup(Root, "ro", out x2));
            Assert.Equal((ro, p), (x1.Ino, x2.Ino));
            Ok(fs.GetAttr(ro, out var roAfter));
            Assert.Equal(roBefore.Ctime, roAfter.Ctime);

            // Between subvolumes: sv (in the top level) and q (in p, now named "ro") trade places.
            Assert.Equal(Errno.EXDEV, fs.Rename(b, "plain", p, "d", RenameFlags.Exchange));  // a plain name in p
            Assert.Equal(Errno.EXDEV, fs.Rename(a, "sv", d, "q", RenameFlags.Exchange));     // a plain name in the top level
            Assert.Equal(Errno.EINVAL, fs.Rename(Root, "ro", d, "q", RenameFlags.Exchange));  // p into itself
            Assert.Equal(Errno.EINVAL, fs.Rename(d, "q", Root, "ro", RenameFlags.Exchange));  // p, the other side, likewise
            Assert.Equal(Errno.ENOENT, fs.Rename(b, "plain", d, "nothing", RenameFlags.Exchange));
            Ok(fs.Rename(b, "plain", d, "q", RenameFlags.Exchange));
            Ok(fs.Lookup(b, "plain", out x1));
            Ok(fs.Lookup(d, "q", out x2));
            Assert.Equal((q, sv), (x1.Ino, x2.Ino));
            Ok(fs.Lookup(sv, "..", out up));
            Assert.Equal(d, up.Ino);
            Ok(fs.Lookup(q, "..", out up));
            Assert.Equal(b, up.Ino);
            Ok(fs.Lookup(sv, "f", out var fFile));
            Assert.Equal(f, ReadAll(fs, fFile.Ino));
            Ok(fs.ListSubvolumes(out var list));
            Assert.Equal([(256UL, 257UL, "ro/d/q"), (257UL, 5UL, "ro"), (258UL, 5UL, "b/plain"), (259UL, 5UL, "p")],
                list.Select(l => (l.Id, l.ParentId, l.Path)).OrderBy(l => l.Id).ToArray());
            Ok(fs.Sync());
            Assert.Equal(before, fs.Qgroups().Select(x => (x.Id, x.Referenced, x.Exclusive)).OrderBy(x => x.Id).ToArray());
            // A snapshot of the top level leaves every subvolume out by its new name, and keeps
            // the plain directory at its new one.
            Ok(fs.CreateSnapshot(Root, Root, "top-snap", true, out var snap));
            Ok(fs.Lookup(snap.Ino, "b", out var snapB));
            Assert.Empty(Entries(fs, snapB.Ino));
            Ok(fs.Lookup(snap.Ino, "a", out var snapA));
            Assert.Equal(["sv"], Entries(fs, snapA.Ino));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.Lookup(d, "q", out var again));
            Assert.Equal(sv, again.Ino);
            Ok(fs.Lookup(b, "plain", out again));
            Assert.Equal(q, again.Ino);
            Ok(fs.ShowSubvolume(q, out var info));
            Assert.Equal("b/plain", info.Path);
            Ok(fs.Rename(d, "q", b, "plain", RenameFlags.Exchange));          // and back
            Ok(fs.ShowSubvolume(sv, out info));
            Assert.Equal("b/plain", info.Path);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void TheDefaultSubvolumeIsWhatAMountShowsAndCannotBeDeleted()
    {
        var dev = NewDevice(64UL << 20);
        ulong sv;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "plain", 0x1ED, 0, 0, out _));
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            sv = a.Ino;
            Ok(fs.ResolveMountRoot(null, null, out var r0));
            Assert.Equal(Root, r0);
            Ok(fs.SetDefaultSubvolume(256));
            Assert.Equal(Errno.ENOENT, fs.SetDefaultSubvolume(999));
            Assert.Equal(Errno.EBUSY, fs.DeleteSubvolume(Root, "sv"));
            Ok(fs.ResolveMountRoot("/sv", null, out var r1));
            Assert.Equal(sv, r1);
            Assert.Equal(Errno.EINVAL, fs.ResolveMountRoot("plain", null, out _));
            Assert.Equal(Errno.ENOENT, fs.ResolveMountRoot("nothere", null, out _));
            Ok(fs.ResolveMountRoot(null, 5, out var r2));
            Assert.Equal(Root, r2);
            Ok(fs.ShowSubvolume(sv, out var info));
            Assert.Equal((256UL, 5UL, "sv"), (info.Id, info.ParentId, info.Path));
            Assert.Equal(Errno.EINVAL, fs.ShowSubvolume(fs.Lookup(Root, "plain", out var p) == Errno.OK ? p.Ino : 0, out _));
        }
        using (var fs = Mount(dev))
        {
            Assert.Equal(256UL, fs.DefaultSubvolume);
            Ok(fs.ResolveMountRoot(null, null, out var r));
            Assert.Equal(sv, r);
            Ok(fs.SetDefaultSubvolume(5));
            Ok(fs.DeleteSubvolume(Root, "sv"));
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void AReadOnlySubvolumeRefusesEveryChangeAndKeepsItsData()
    {
        var dev = NewDevice(64UL << 20);
        ulong sv, f;
        var data = new byte[50_000];
        new Random(5).NextBytes(data);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out var a));
            sv = a.Ino;
            f = CreateFile(fs, sv, "f");
            Ok(fs.Write(f, 0, data, out _)); // dirty in the page cache when the flag goes on
            Ok(fs.Mkdir(sv, "d", 0x1ED, 0, 0, out _));
            Ok(fs.SetSubvolumeReadOnly(sv, true));
            Assert.Equal(Errno.EINVAL, fs.SetSubvolumeReadOnly(f, true)); // not a subvolume root
            Assert.Equal(Errno.EROFS, fs.Write(f, 0, new byte[1], out _));
            Assert.Equal(Errno.EROFS, fs.WriteDirect(f, 0, new byte[4096], out _));
            Assert.Equal(Errno.EROFS, fs.MappedWrite(f, 0, new byte[1]));
            // Refused at open for writing (a mapped store otherwise fails only at writeback);
            // opening to read still works.
            Assert.Equal(Errno.EROFS, fs.Open(f, true, out _));
            Ok(fs.Open(f, false, out _));
            Ok(fs.Release(f));
            Assert.Equal(Errno.EROFS, fs.Truncate(f, 0));
            Assert.Equal(Errno.EROFS, fs.Fallocate(f, 0, 0, 4096));
            Assert.Equal(Errno.EROFS, fs.SetXattr(f, "user.a", new byte[1]));
            Assert.Equal(Errno.EROFS, fs.Create(sv, "g", 0x1A4, 0, 0, out _));
            Assert.Equal(Errno.EROFS, fs.Unlink(sv, "f"));
            Assert.Equal(Errno.EROFS, fs.Rmdir(sv, "d"));
            Assert.Equal(Errno.EROFS, fs.Rename(sv, "f", sv, "g", 0));
            Assert.Equal(Errno.EROFS, fs.CreateSubvolume(sv, "inner", 0, 0, out _));
            Assert.Equal(data, ReadAll(fs, f));
            // The top level stays writable.
            CreateFile(fs, Root, "elsewhere", new byte[10]);
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Ok(fs.GetSubvolumeReadOnly(sv, out bool ro));
            Assert.True(ro);
            Assert.Equal(data, ReadAll(fs, f)); // the dirty data was written before the flag held
            Assert.Equal(Errno.EROFS, fs.Write(f, 0, new byte[1], out _));
            Ok(fs.SetSubvolumeReadOnly(sv, false));
            Ok(fs.Write(f, 0, new byte[1], out _));
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void StatfsInsideALimitedSubvolumeShowsItsLimitAndWhatIsLeft()
    {
        var dev = NewDevice(64UL << 20);
        using var fs = Mount(dev);
        Ok(fs.EnableQuota());
        Ok(fs.CreateSubvolume(Root, "tenant", 0, 0, out var t));
        Ok(fs.StatFs(out var whole));
        Ok(fs.StatFs(t.Ino, out var unlimited));
        Assert.Equal(whole, unlimited); // no limit: the filesystem's figures
        Ok(fs.SetQuotaLimit(256, 8UL << 20, ulong.MaxValue));
        Assert.Equal(Errno.ENOENT, fs.SetQuotaLimit(999, 1UL << 20, ulong.MaxValue));
        ulong f = CreateFile(fs, t.Ino, "f", new byte[3 << 20]);
        Ok(fs.StatFs(t.Ino, out var st));
        Assert.Equal((8UL << 20) / 4096, st.Blocks);
        Assert.Equal((5UL << 20) / 4096, st.BlocksFree); // reserved, not yet committed, counts as used
        Assert.Equal(st.BlocksFree, st.BlocksAvail);
        Ok(fs.Sync());
        Ok(fs.StatFs(f, out var st2));                   // any inode of the subvolume
        Assert.Equal((5UL << 20) / 4096, st2.BlocksFree);
        Ok(fs.StatFs(Root, out var top));
        Assert.Equal(whole.Blocks, top.Blocks);            // the top level has no limit
        // A tighter limit on a group above (4 MiB referenced, of which the subvolume's 3 MiB
        // are used) is the one df shows; a looser one (an exclusive limit of 100 MiB on the
        // same group) changes nothing.
        ulong parent = QgroupId.Of(1, 7);
        Ok(fs.CreateQgroup(parent));
        Ok(fs.AssignQgroup(QgroupId.Of(0, 256), parent));
        Ok(fs.SetQgroupLimit(parent, 4UL << 20, 100UL << 20));
        Ok(fs.StatFs(f, out var st3));
        Assert.Equal((4UL << 20) / 4096, st3.Blocks);
        Assert.Equal((1UL << 20) / 4096, st3.BlocksFree);
        Ok(fs.SetQgroupLimit(parent, ulong.MaxValue, ulong.MaxValue));
        Ok(fs.StatFs(f, out var st4));
        Assert.Equal(st2, st4);
        // 5 MiB are left: a 6 MiB write stops short of the limit (or answers EDQUOT).
        var e = fs.Write(f, 3 << 20, new byte[6 << 20], out int n);
        Assert.True(e == Errno.EDQUOT || (e == Errno.OK && n <= 5 << 20), $"{e}, {n} bytes written");
    }

    [Fact]
    public void FsckFindsABrokenSubvolumeLink()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "sv", 0, 0, out _));
            // Remove the ROOT_BACKREF behind the engine's back.
            using var h = fs.Fs.Start(1);
            using (fs.Fs.RootTree.Lock.Write()) Assert.True(fs.Fs.RootTree.Delete(h, new Key(256, KeyTypes.RootBackref, 5)));
        }
        var report = Reservoir.Engine.Check.Fsck.Run(dev);
        Assert.Contains(report.Errors, f => f.Where == "subvolume 256" && f.Message.Contains("ROOT_BACKREF"));
    }
}

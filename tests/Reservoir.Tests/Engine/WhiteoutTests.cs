using Reservoir.Common;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// renameat2(RENAME_WHITEOUT), which overlayfs needs of its upper layer (it refuses to mount
/// without it): the rename leaves a whiteout at the old name, a character device 0:0 with mode
/// 0, owned by the caller, as ext4 and btrfs make it. The mount's suite runs overlayfs on a
/// Reservoir upper layer beside one on ext4 (PosixSuiteTests.OverlayfsRunsOnItAsOnExt4).
/// </summary>
public class WhiteoutTests
{
    private const ulong Root = Filesystem.RootIno;
    private const uint Chr = 0x2000;

    [Fact]
    public void ARenameWithWhiteoutLeavesACharacterDevice00OwnedByTheCaller()
    {
        var dev = NewDevice(64UL << 20);
        ulong d, sg;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var da));
            d = da.Ino;
            Ok(fs.Mkdir(Root, "sg", 0x400 | 0x1FF, 0, 77, out var sga)); // set-group-ID, group 77
            sg = sga.Ino;
            ulong f = CreateFile(fs, d, "f", [1, 2, 3]);
            ulong over = CreateFile(fs, d, "over", [4]);
            Ok(fs.Rename(d, "f"u8, Root, "moved"u8, RenameFlags.Whiteout, 1000, 1001));
            Ok(fs.Lookup(Root, "moved", out var moved));
            Assert.Equal(f, moved.Ino);
            Ok(fs.Lookup(d, "f", out var w));
            Assert.NotEqual(f, w.Ino);
            Assert.Equal(Chr, w.Mode);                  // no permission bits
            Assert.Equal(0UL, w.Rdev);
            Assert.Equal((1u, 1000u, 1001u), (w.Nlink, w.Uid, w.Gid));
            // Over an existing name, and in a set-group-ID directory (its group).
            CreateFile(fs, sg, "g", [5]);
            Ok(fs.Rename(sg, "g"u8, d, "over"u8, RenameFlags.Whiteout, 1000, 1001));
            Assert.Equal(Errno.ENOENT, fs.GetAttr(over, out _));
            Ok(fs.Lookup(sg, "g", out var w2));
            Assert.Equal((Chr, 1000u, 77u), (w2.Mode, w2.Uid, w2.Gid));
            // In place, a directory too (overlayfs renames directories with a whiteout).
            Ok(fs.Mkdir(d, "sub", 0x1ED, 0, 0, out _));
            Ok(fs.Rename(d, "sub"u8, d, "sub2"u8, RenameFlags.Whiteout, 0, 0));
            Ok(fs.Lookup(d, "sub", out var w3));
            Assert.Equal(Chr, w3.Mode);
            Ok(fs.GetAttr(d, out var dattr));
            Assert.Equal(3u, dattr.Nlink);              // ".", "..", sub2; the whiteout is no directory
            // An exchange leaves no name empty: refused, as the VFS refuses it.
            Assert.Equal(Errno.EINVAL, fs.Rename(d, "over"u8, Root, "moved"u8, RenameFlags.Exchange | RenameFlags.Whiteout, 0, 0));
            Assert.Equal(Errno.ENOENT, fs.Rename(d, "nothing"u8, Root, "x"u8, RenameFlags.Whiteout, 0, 0));
            Assert.Equal(new[] { ".", "..", "f", "over", "sub", "sub2" }, DirNames(fs, d).Order(StringComparer.Ordinal));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            // The mount's first new inode is a whiteout: its number is found by reading the
            // tree, which must happen before the rename takes the tree's lock.
            Ok(fs.Rename(d, "sub2"u8, d, "sub3"u8, RenameFlags.Whiteout, 0, 0));
            Ok(fs.Lookup(d, "sub2", out var w4));
            Assert.Equal(Chr, w4.Mode);
            Ok(fs.Lookup(d, "f", out var w));
            Assert.Equal((Chr, 0UL), (w.Mode, w.Rdev));
            // Whiteouts are ordinary inodes: overlayfs links one and renames it about.
            Ok(fs.Link(w.Ino, sg, "w-link", out var wl));
            Assert.Equal(2u, wl.Nlink);
            Ok(fs.Unlink(d, "f"));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void ASubvolumeMovedWithWhiteoutLeavesOneBehind()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.CreateSubvolume(Root, "vol", 0, 0, out var vol));
            Ok(fs.CreateSubvolume(Root, "other", 0, 0, out var other));
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var d));
            Ok(fs.Rename(Root, "vol"u8, d.Ino, "vol"u8, RenameFlags.Whiteout, 5, 6));      // within a subvolume
            Ok(fs.Lookup(Root, "vol", out var w));
            Assert.Equal((Chr, 5u, 6u), (w.Mode, w.Uid, w.Gid));
            Ok(fs.Rename(d.Ino, "vol"u8, other.Ino, "vol"u8, RenameFlags.Whiteout, 7, 8)); // into another
            Ok(fs.Lookup(d.Ino, "vol", out var w2));
            Assert.Equal((Chr, 7u, 8u), (w2.Mode, w2.Uid, w2.Gid));
            Ok(fs.Lookup(other.Ino, "vol", out var moved));
            Assert.Equal(vol.Ino, moved.Ino);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }
}

using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// How many names fit where, and what happens at the limit. All names of one inode in one
/// directory share an INODE_REF item, which must fit a leaf; names that do not fit go to
/// INODE_EXTREF items (SPEC.md §5.2), so a file takes 65,000 names in one directory as on ext4.
/// Names whose hashes collide share a DIR_ITEM (an XATTR_ITEM for attributes), and names made to
/// collide fill it: the call adding one more is refused (EOVERFLOW, ENOSPC for attributes, as
/// btrfs answers) before it changes anything. Before these checks each of those calls failed
/// halfway through a transaction, which aborted it: the filesystem refused every later write and
/// lost every change since its last commit. The images here have 4 KiB nodes, so the items fill
/// sooner than on a default image (16 KiB).
/// </summary>
public class NameLimitsTests
{
    private const ulong Root = Filesystem.RootIno;
    private const int NodeSize = 4096;

    [Fact]
    public void AFileTakes65000NamesInOneDirectoryAsOnExt4()
    {
        var dev = NewDevice(256UL << 20, nodeSize: NodeSize);
        ulong d, f;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var da));
            d = da.Ino;
            f = CreateFile(fs, d, "f", [1, 2, 3]);
            int n = 0;
            Errno e;
            while ((e = fs.Link(f, d, $"l{n}", out _)) == Errno.OK) n++;
            // ext4's limit (EXT4_LINK_MAX): the file's link count, not the names' item.
            Assert.Equal(Errno.EMLINK, e);
            Assert.Equal(64999, n);
            Ok(fs.GetAttr(f, out var fa));
            Assert.Equal(65000u, fa.Nlink);
            Assert.NotEqual(0UL, fs.Fs.Super.Incompat & Features.IncompatExtendedIref);
            Assert.Null(fs.Fs.FailedReason);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            foreach (var name in new[] { "f", "l0", "l300", "l64998" })
            {
                Ok(fs.Lookup(d, name, out var a), name);
                Assert.Equal(f, a.Ino);
            }
            // Names leave from both kinds of item; every other one goes.
            for (int i = 0; i < 64999; i += 2) Ok(fs.Unlink(d, $"l{i}"), $"unlink l{i}");
            Ok(fs.GetAttr(f, out var fa));
            Assert.Equal(32500u, fa.Nlink);
            Assert.Equal(32500 + 2, DirNames(fs, d).Count);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void RenamingIntoADirectoryFullOfTheFilesNamesKeepsTheFilesystemGoing()
    {
        var dev = NewDevice(64UL << 20, nodeSize: NodeSize);
        int links = NodeLayout.MaxItemData(NodeSize) / (InodeRef.HeaderSize + 4) + 10; // past one INODE_REF
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var da));
            Ok(fs.Mkdir(Root, "a", 0x1ED, 0, 0, out var aa));
            ulong d = da.Ino, a = aa.Ino;
            ulong f = CreateFile(fs, d, "f", [7]);
            for (int i = 0; i < links; i++) Ok(fs.Link(f, d, $"l{i:D3}", out _));
            Ok(fs.Link(f, a, "x", out _));
            Ok(fs.Rename(a, "x", d, "y"));                         // a name into the full item
            Ok(fs.Rename(d, "y", d, new string('z', 200)));        // a longer one in place
            ulong g = CreateFile(fs, a, "g", [8]);
            Ok(fs.Rename(a, "g", d, "l005", RenameFlags.Exchange)); // f's name out, g's in
            ulong after = CreateFile(fs, Root, "after", [9]);       // still taking writes
            Assert.Null(fs.Fs.FailedReason);
            Ok(fs.Lookup(d, "l005", out var l5));
            Assert.Equal(g, l5.Ino);
            Ok(fs.Lookup(a, "g", out var ag));
            Assert.Equal(f, ag.Ino);
            Ok(fs.Lookup(d, new string('z', 200), out var z));
            Assert.Equal(f, z.Ino);
            Ok(fs.GetAttr(f, out var fa));
            Assert.Equal((uint)(links + 2), fa.Nlink); // "f", the links, the long name, "g" in a, less l005
            Assert.Equal(links + 2 + 2, DirNames(fs, d).Count);
            Ok(fs.Sync());
            Assert.True(after > 0);
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void NamesMadeToCollideAreRefusedWithEoverflowBeforeAnythingChanges()
    {
        var dev = NewDevice(64UL << 20, nodeSize: NodeSize);
        const ulong hash = 0x12345678;
        int fit = NodeLayout.MaxItemData(NodeSize) / DirEntry.SizeOf(11, 0); // "c" + 6 digits + 4 steering bytes
        var names = CollidingNames.Make(fit + 1, hash);
        byte[] extra = names[fit];
        ulong d;
        using (var fs = Mount(dev))
        {
            Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var da));
            d = da.Ino;
            ulong other = CreateFile(fs, Root, "other", [1]);
            Ok(fs.CreateSubvolume(Root, "vol", 0, 0, out var vol));
            for (int i = 0; i < fit; i++) Ok(fs.Create(d, names[i], 0x1A4, 0, 0, out _), $"name {i}");
            Assert.Equal(Errno.EOVERFLOW, fs.Create(d, extra, 0x1A4, 0, 0, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.Mkdir(d, extra, 0x1ED, 0, 0, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.Symlink(d, extra, "t"u8, 0, 0, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.Mknod(d, extra, 0x1000 | 0x1A4, 0, 0, 0, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.Link(other, d, extra, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.Rename(Root, "other"u8, d, extra, RenameFlags.None));
            Assert.Equal(Errno.EOVERFLOW, fs.Rename(Root, "vol"u8, d, extra, RenameFlags.None));
            Assert.Equal(Errno.EOVERFLOW, fs.CreateSubvolume(d, extra, 0, 0, out _));
            Assert.Equal(Errno.EOVERFLOW, fs.CreateSnapshot(vol.Ino, d, extra, false, out _));
            // Nothing changed, and the filesystem goes on.
            Assert.Null(fs.Fs.FailedReason);
            Assert.Equal(fit + 2, DirNames(fs, d).Count);
            Ok(fs.Lookup(Root, "other", out _));
            CreateFile(fs, d, "ordinary", [2]);
            // A name of that hash leaves: there is room for one.
            Ok(fs.Unlink(d, names[0]));
            Ok(fs.Create(d, extra, 0x1A4, 0, 0, out _));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            for (int i = 1; i <= fit; i++) Ok(fs.Lookup(d, names[i], out _), $"name {i}");
            Assert.Equal(Errno.ENOENT, fs.Lookup(d, names[0], out _));
        }
    }

    [Fact]
    public void AttributesMadeToCollideAreRefusedWithEnospcBeforeAnythingChanges()
    {
        var dev = NewDevice(64UL << 20, nodeSize: NodeSize);
        // Names colliding with the access ACL's, so that setting the ACL meets the full item.
        ulong hash = NameHash.Of("system.posix_acl_access"u8);
        int fit = NodeLayout.MaxItemData(NodeSize) / DirEntry.SizeOf(16, 1); // "user.c" + 6 digits + 4
        var names = CollidingNames.Make(fit + 1, hash, prefix: "user.c");
        using (var fs = Mount(dev))
        {
            ulong f = CreateFile(fs, Root, "f", [1]);
            for (int i = 0; i < fit; i++) Ok(fs.SetXattr(f, names[i], "v"u8), $"attribute {i}");
            Assert.Equal(Errno.ENOSPC, fs.SetXattr(f, names[fit], "v"u8));
            // A value longer than the item's slack, in place of one: no room.
            var longer = new byte[2 + NodeLayout.MaxItemData(NodeSize) % DirEntry.SizeOf(16, 1)];
            Assert.Equal(Errno.ENOSPC, fs.SetXattr(f, names[0], longer));
            Ok(fs.SetXattr(f, names[0], "w"u8));                             // the same length fits
            // user 1000 may read: a named entry, which needs the ACL stored.
            byte[] acl = PosixAclTests.Acl((0x01, 6, uint.MaxValue), (0x02, 4, 1000), (0x04, 4, uint.MaxValue), (0x10, 4, uint.MaxValue), (0x20, 4, uint.MaxValue));
            Assert.Equal(Errno.ENOSPC, fs.SetXattr(f, "system.posix_acl_access"u8, acl));
            Assert.Null(fs.Fs.FailedReason);
            Ok(fs.GetXattr(f, names[0], out var v0));
            Assert.Equal("w"u8.ToArray(), v0);
            // Room again once attributes of that hash as large as the ACL's entry leave.
            for (int i = 1; i <= DirEntry.SizeOf(23, acl.Length) / DirEntry.SizeOf(16, 1) + 1; i++) Ok(fs.RemoveXattr(f, names[i]));
            Ok(fs.SetXattr(f, "system.posix_acl_access"u8, acl));
            CreateFile(fs, Root, "after", [2]);
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }
}

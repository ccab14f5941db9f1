using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// The ACL attribute's format and rules (fs/posix_acl.c) on values the kernel never hands down
/// (it validates before sending; the embedded API does not), and an ACL set through the
/// engine: the mode it implies, chmod, inheritance. The mount's suite compares the same with
/// ext4 (PosixSuiteTests.AclsAreKeptAndEnforcedAsOnExt4).
/// </summary>
public class PosixAclTests
{
    private const ushort UO = PosixAcl.UserObj, U = PosixAcl.User, GO = PosixAcl.GroupObj, G = PosixAcl.Group, M = PosixAcl.Mask, O = PosixAcl.Other;

    internal static byte[] Acl(params (ushort Tag, ushort Perm, uint Id)[] entries) => AclVersion(2, entries);

    private static byte[] AclVersion(uint version, params (ushort Tag, ushort Perm, uint Id)[] entries)
    {
        var b = new byte[4 + 8 * entries.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(b, version);
        for (int i = 0; i < entries.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(4 + 8 * i), entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(6 + 8 * i), entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8 + 8 * i), entries[i].Id);
        }
        return b;
    }

    public static IEnumerable<object[]> Invalid =>
    [
        ["named user without a mask", Acl((UO, 6, 0), (U, 4, 1000), (GO, 4, 0), (O, 4, 0)), Errno.EINVAL],
        ["owning group before the owner", Acl((GO, 4, 0), (UO, 6, 0), (O, 4, 0)), Errno.EINVAL],
        ["no other entry", Acl((UO, 6, 0), (GO, 4, 0)), Errno.EINVAL],
        ["two owner entries", Acl((UO, 6, 0), (UO, 6, 0), (GO, 4, 0), (O, 4, 0)), Errno.EINVAL],
        ["mask before a named group", Acl((UO, 6, 0), (GO, 4, 0), (M, 6, 0), (G, 4, 5), (O, 4, 0)), Errno.EINVAL],
        ["a permission past rwx", Acl((UO, 8, 0), (GO, 4, 0), (O, 4, 0)), Errno.EINVAL],
        ["an unknown tag", Acl((UO, 6, 0), (0x40, 4, 0), (GO, 4, 0), (O, 4, 0)), Errno.EINVAL],
        ["a torn entry", Acl((UO, 6, 0), (GO, 4, 0), (O, 4, 0))[..^3], Errno.EINVAL],
        ["version 1", AclVersion(1, (UO, 6, 0), (GO, 4, 0), (O, 4, 0)), Errno.EOPNOTSUPP],
    ];

    [Theory]
    [MemberData(nameof(Invalid))]
    public void AnInvalidAclIsRefused(string what, byte[] value, Errno expected)
    {
        Assert.True(PosixAcl.TryParse(value, out var acl) == expected, what);
        Assert.Null(acl);
    }

    [Fact]
    public void AValidAclRoundTripsAndAHeaderAloneIsNone()
    {
        var v = Acl((UO, 6, 0), (U, 4, 1000), (U, 0, 1001), (GO, 4, 0), (G, 6, 50), (M, 6, 0), (O, 0, 0));
        Assert.Equal(Errno.OK, PosixAcl.TryParse(v, out var acl));
        // Ids are written as the kernel writes them: -1 for the entries without one.
        var expected = Acl((UO, 6, uint.MaxValue), (U, 4, 1000), (U, 0, 1001), (GO, 4, uint.MaxValue), (G, 6, 50), (M, 6, uint.MaxValue), (O, 0, uint.MaxValue));
        Assert.Equal(expected, acl!.ToXattr());
        Assert.Equal(Errno.OK, PosixAcl.TryParse(AclVersion(2), out var none));
        Assert.Null(none);
    }

    /// <summary>Hand-worked from fs/posix_acl.c: the mode an access ACL implies (group bits from
    /// the mask), chmod writing the mask, and a default ACL inherited with mode 0666 (the
    /// owner keeps rw, the mask rw, other nothing: default other is ---).</summary>
    [Fact]
    public void ModeChmodAndInheritanceFollowTheKernelsRules()
    {
        Assert.Equal(Errno.OK, PosixAcl.TryParse(Acl((UO, 7, 0), (U, 7, 1000), (GO, 5, 0), (M, 5, 0), (O, 0, 0)), out var acl));
        Assert.False(acl!.EquivalentMode(0x8000 | 0x1A4, out uint mode)); // a named entry: stored
        Assert.Equal(0x8000u | 0x1E8u, mode);                            // 0750 with the type kept
        var chmodded = acl.Chmod(0x180);                                  // chmod 600: mask ---
        Assert.Equal([(UO, (ushort)6), (U, (ushort)7), (GO, (ushort)5), (M, (ushort)0), (O, (ushort)0)], chmodded.Entries.ToArray().Select(e => (e.Tag, e.Perm)));
        uint created = 0x8000 | 0x1B6;                                    // 0666
        var access = acl.CreateMasq(ref created);
        Assert.NotNull(access);
        Assert.Equal(0x8000u | 0x1A0u, created);                          // 0640: owner rw, mask r (rx & rw), other ---
        Assert.Equal(Errno.OK, PosixAcl.TryParse(Acl((UO, 6, 0), (GO, 4, 0), (O, 4, 0)), out var plain));
        Assert.True(plain!.EquivalentMode(0x1FF, out mode));             // says no more than the mode
        Assert.Equal(0x1A4u, mode);
    }

    /// <summary>Through the engine (the embedded API's path): an invalid ACL is refused with the
    /// file unchanged, a valid one sets the mode and is read back, an equivalent one is not
    /// stored, chmod rewrites the stored one, and a directory's default ACL is inherited by a
    /// new file with no umask and by a new directory as its default too.</summary>
    [Fact]
    public void TheEngineKeepsAclsAndTheModeTogether()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            ulong f = CreateFile(fs, Filesystem.RootIno, "f");
            Ok(fs.SetAttr(f, new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = 0x1A4 }, out _));
            Assert.Equal(Errno.EINVAL, fs.SetXattr(f, "system.posix_acl_access", Acl((UO, 6, 0), (U, 4, 1000), (GO, 4, 0), (O, 4, 0))));
            Ok(fs.GetAttr(f, out var a));
            Assert.Equal(0x1A4u, a.Mode & 0xFFF);
            var named = Acl((UO, 6, uint.MaxValue), (U, 7, 1000), (GO, 4, uint.MaxValue), (M, 6, uint.MaxValue), (O, 0, uint.MaxValue));
            Ok(fs.SetXattr(f, "system.posix_acl_access", named));
            Ok(fs.GetAttr(f, out a));
            Assert.Equal(0x1B0u, a.Mode & 0xFFF);                          // 0660: group bits from the mask
            Ok(fs.GetXattr(f, "system.posix_acl_access", out byte[] stored));
            Assert.Equal(named, stored);
            Ok(fs.SetAttr(f, new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = 0x1E8 }, out _)); // chmod 750
            Ok(fs.GetAccessAcl(f, out var after));
            Assert.Equal((ushort)7, after!.Entries.ToArray().Single(e => e.Tag == UO).Perm);
            Assert.Equal((ushort)5, after.Entries.ToArray().Single(e => e.Tag == M).Perm);
            Assert.Equal((ushort)4, after.Entries.ToArray().Single(e => e.Tag == GO).Perm); // kept: the mask took the bits
            Assert.Equal((ushort)0, after.Entries.ToArray().Single(e => e.Tag == O).Perm);
            Ok(fs.GetXattr(f, "system.posix_acl_access", out byte[] rewritten));
            Assert.NotEqual(named, rewritten);                              // and on disk
            ulong g = CreateFile(fs, Filesystem.RootIno, "g");
            Ok(fs.SetXattr(g, "system.posix_acl_access", Acl((UO, 7, 0), (GO, 5, 0), (O, 1, 0))));
            Assert.Equal(Errno.ENODATA, fs.GetXattr(g, "system.posix_acl_access", out byte[] _));
            Ok(fs.GetAttr(g, out a));
            Assert.Equal(0x1E9u, a.Mode & 0xFFF);                          // 0751, no attribute
            Assert.Equal(Errno.EACCES, fs.SetXattr(g, "system.posix_acl_default", named));

            Ok(fs.Mkdir(Filesystem.RootIno, "d", 0x1ED, 0, 0, out var d));
            Ok(fs.SetXattr(d.Ino, "system.posix_acl_default", named));
            Ok(fs.Create(d.Ino, "new"u8, 0x1B6, 0, 0, out var n, umask: 0x12));
            Assert.Equal(0x1B0u, n.Mode & 0xFFF);                          // 0660, the umask not applied
            Ok(fs.GetAccessAcl(n.Ino, out var inherited));
            Assert.NotNull(inherited);
            Ok(fs.Mkdir(d.Ino, "sub"u8, 0x1FF, 0, 0, out var sub, umask: 0x12));
            Ok(fs.GetXattr(sub.Ino, "system.posix_acl_default", out byte[] subDefault));
            Assert.Equal(named, subDefault);
            Ok(fs.Create(Filesystem.RootIno, "plain"u8, 0x1B6, 0, 0, out var p, umask: 0x12));
            Assert.Equal(0x1A4u, p.Mode & 0xFFF);                          // no default ACL: 0666 & ~022
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>fsck checks what the engine keeps together: an INODE_ITEM whose permission bits
    /// no longer agree with the access ACL (written behind the engine's back) is reported, as
    /// is a default ACL on a file.</summary>
    [Fact]
    public void FsckReportsAModeThatDisagreesWithTheAccessAcl()
    {
        var dev = NewDevice(64UL << 20);
        ulong ino;
        var named = Acl((UO, 6, uint.MaxValue), (U, 7, 1000), (GO, 4, uint.MaxValue), (M, 6, uint.MaxValue), (O, 0, uint.MaxValue));
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            ino = CreateFile(fs, Filesystem.RootIno, "f");
            Ok(fs.SetXattr(ino, "system.posix_acl_access", named));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            var (tree, objectId) = Reservoir.Engine.Inodes.NodeIds.Decode(ino);
            var t = fs.Fs.FsTree(tree)!;
            var key = new Reservoir.Format.Key(objectId, Reservoir.Format.KeyTypes.InodeItem, 0);
            using (var h = fs.Fs.Start(2))
            using (t.Lock.Write())
            {
                var item = Reservoir.Format.Items.InodeItem.Read(t.Get(key)!);
                item.Mode = (item.Mode & ~0x1FFu) | 0x180;                // 0600: the mask says rw- for the group
                var buf = new byte[Reservoir.Format.Items.InodeItem.Size];
                item.Write(buf);
                t.Put(h, key, buf);
                Reservoir.Engine.Inodes.DirItems.AddHashed(h, t, objectId, Reservoir.Format.KeyTypes.XattrItem, PosixAcl.DefaultName, default, 0, named);
            }
            Ok(fs.Sync());
        }
        var errors = string.Join("\n", Reservoir.Engine.Check.Fsck.Run(dev, new()).Errors.Select(e => e.ToString()));
        Assert.Contains("permission bits 600 disagree with the access ACL's 660", errors);
        Assert.Contains("a default ACL on a file that is no directory", errors);
    }
}

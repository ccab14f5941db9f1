using Reservoir.Common;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// <see cref="Filesystem.DropPrivileges"/>, what the FUSE front end asks for on write,
/// truncate and chown once it has taken that job from the kernel (HANDLE_KILLPRIV_V2): the
/// rules of Linux's VFS, worked out by hand (the mounted suite checks them against ext4).
/// </summary>
public class PrivilegeTests
{
    private const ulong Root = Filesystem.RootIno;

    private static uint ModeOf(Filesystem fs, ulong ino)
    {
        Ok(fs.GetAttr(ino, out var a));
        return a.Mode & 0xFFF;
    }

    private static ulong FileWithMode(Filesystem fs, string name, uint mode)
    {
        ulong f = CreateFile(fs, Root, name, [1, 2, 3]);
        Ok(fs.SetAttr(f, new SetAttrRequest { Mask = SetAttrMask.Mode, Mode = mode }, out _));
        return f;
    }

    [Fact]
    public void SetIdsGoForWritersWithoutCapFsetidAndSetGroupIdOnlyWhenTheGroupMayExecute()
    {
        using var fs = Mount(NewDevice());
        ulong a = FileWithMode(fs, "a", 0x9ED);  // 04755
        ulong b = FileWithMode(fs, "b", 0xDED);  // 06755
        ulong c = FileWithMode(fs, "c", 0xDE5);  // 06745: set-group-ID without group execute
        ulong d = FileWithMode(fs, "d", 0xDED);

        Ok(fs.DropPrivileges(a, setIds: true, out bool changed));
        Assert.True(changed);
        Assert.Equal(0x1EDu, ModeOf(fs, a));     // 0755
        Ok(fs.DropPrivileges(b, setIds: true, out _));
        Assert.Equal(0x1EDu, ModeOf(fs, b));     // 0755
        Ok(fs.DropPrivileges(c, setIds: true, out _));
        Assert.Equal(0x5E5u, ModeOf(fs, c));     // 02745 stays set-group-ID
        // A writer with CAP_FSETID (setIds false) keeps both, and nothing is written.
        Ok(fs.DropPrivileges(d, setIds: false, out changed));
        Assert.False(changed);
        Assert.Equal(0xDEDu, ModeOf(fs, d));
        // Nothing left to drop: no change the second time.
        Ok(fs.DropPrivileges(b, setIds: true, out changed));
        Assert.False(changed);
    }

    [Fact]
    public void SecurityCapabilityGoesOnEveryWriteButDirectoriesKeepEverything()
    {
        using var fs = Mount(NewDevice());
        ulong f = FileWithMode(fs, "f", 0x1ED);
        Ok(fs.SetXattr(f, "security.capability", new byte[20]));
        Ok(fs.SetXattr(f, "user.other", [7]));
        Ok(fs.DropPrivileges(f, setIds: false, out bool changed));
        Assert.True(changed);
        Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "security.capability", out _));
        Ok(fs.GetXattr(f, "user.other", out var v));
        Assert.Equal([7], v);
        // Set again after the first drop (the inode's memory of it must follow setxattr).
        Ok(fs.SetXattr(f, "security.capability", new byte[20]));
        Ok(fs.DropPrivileges(f, setIds: false, out changed));
        Assert.True(changed);
        Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "security.capability", out _));

        Ok(fs.Mkdir(Root, "d", 0xDED, 0, 0, out var dir));
        Ok(fs.SetXattr(dir.Ino, "security.capability", new byte[20]));
        Ok(fs.DropPrivileges(dir.Ino, setIds: true, out changed));
        Assert.False(changed);
        Assert.Equal(0xDEDu, ModeOf(fs, dir.Ino));
        Ok(fs.GetXattr(dir.Ino, "security.capability", out _));
    }

    [Fact]
    public void TheDropIsDurable()
    {
        var dev = NewDevice();
        ulong f;
        using (var fs = Mount(dev))
        {
            f = FileWithMode(fs, "f", 0xDED);
            Ok(fs.SetXattr(f, "security.capability", new byte[20]));
            Ok(fs.DropPrivileges(f, setIds: true, out _));
            Ok(fs.Sync());
        }
        using (var fs = Mount(dev))
        {
            Assert.Equal(0x1EDu, ModeOf(fs, f));
            Assert.Equal(Errno.ENODATA, fs.GetXattr(f, "security.capability", out _));
        }
    }
}

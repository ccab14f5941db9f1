using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// Access times kept by the engine with the kernel's rules (FUSE leaves them to the
/// filesystem): relatime updates an atime not later than the mtime or ctime, or a day old;
/// noatime never; strictatime always; listing a directory counts unless nodiratime; a read of a
/// read-only subvolume updates nothing and still succeeds. The mount's suite compares the
/// relatime cases with ext4 (PosixSuiteTests.NamespaceRulesMatchExt4).
/// </summary>
public class AtimeTests
{
    private const ulong Root = Filesystem.RootIno;
    private static readonly Timespec Past = new(1_577_836_800, 0); // 2020-01-01

    private static Timespec Atime(Filesystem fs, ulong ino)
    {
        Ok(fs.GetAttr(ino, out var a));
        return a.Atime;
    }

    private static void SetTimes(Filesystem fs, ulong ino, Timespec atime, Timespec mtime) =>
        Ok(fs.SetAttr(ino, new SetAttrRequest { Mask = SetAttrMask.Atime | SetAttrMask.Mtime, Atime = atime, Mtime = mtime }, out _));

    private static void ReadAll(Filesystem fs, ulong ino) => Ok(fs.Read(ino, 0, new byte[16], out _));

    [Fact]
    public void RelatimeUpdatesAnAtimeNotLaterThanTheMtimeOrADayOld()
    {
        using var fs = Mount(NewDevice());
        ulong f = CreateFile(fs, Root, "f", [1, 2, 3]);
        SetTimes(fs, f, Past, Past);                        // atime = mtime: due
        ReadAll(fs, f);
        var first = Atime(fs, f);
        Assert.True(first.Sec > Past.Sec);
        ReadAll(fs, f);                                     // now later than mtime and ctime
        Assert.Equal(first, Atime(fs, f));
        var old = new Timespec(Timespec.Now().Sec - 2 * 86400, 0);
        SetTimes(fs, f, old, new Timespec(old.Sec - 86400, 0)); // later than mtime, but ctime is now
        ReadAll(fs, f);
        Assert.True(Atime(fs, f).Sec > old.Sec);
        // Listing a directory from its start reads it.
        Ok(fs.Mkdir(Root, "d", 0x1ED, 0, 0, out var d));
        SetTimes(fs, d.Ino, Past, Past);
        Ok(fs.ReadDir(d.Ino, 0, _ => true));
        Assert.True(Atime(fs, d.Ino).Sec > Past.Sec);
    }

    [Theory]
    [InlineData(AtimeMode.NoAtime, false)]
    [InlineData(AtimeMode.StrictAtime, true)]
    public void NoatimeNeverAndStrictatimeAlways(AtimeMode mode, bool updates)
    {
        using var fs = Mount(NewDevice(), new MountOptions { CommitIntervalMs = 0, Atime = mode });
        ulong f = CreateFile(fs, Root, "f", [1]);
        var later = new Timespec(Timespec.Now().Sec + 3600, 0);     // atime after mtime and ctime
        SetTimes(fs, f, later, Past);
        ReadAll(fs, f);
        Assert.Equal(updates, Atime(fs, f) != later);
    }

    [Fact]
    public void NodiratimeLeavesDirectoriesAndAReadOnlySubvolumeIsOnlyRead()
    {
        var dev = NewDevice();
        ulong f;
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, NoDirAtime = true }))
        {
            Ok(fs.CreateSubvolume(Root, "vol", 0, 0, out var vol));
            f = CreateFile(fs, vol.Ino, "f", [1]);
            SetTimes(fs, f, Past, Past);
            SetTimes(fs, vol.Ino, Past, Past);
            Ok(fs.ReadDir(vol.Ino, 0, _ => true));
            Assert.Equal(Past, Atime(fs, vol.Ino));
            Ok(fs.SetSubvolumeReadOnly(vol.Ino, true));
            ReadAll(fs, f);                                   // succeeds, changes nothing
            Assert.Equal(Past, Atime(fs, f));
            Ok(fs.Sync());
        }
        FsckAssert.Clean(dev);
    }
}

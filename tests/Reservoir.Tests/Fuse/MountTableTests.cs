using Reservoir.Fuse.Session;
using Xunit;

namespace Reservoir.Tests.Fuse;

/// <summary>
/// /proc/self/mountinfo as `reservoir umount` reads it (proc(5)): fields found around the
/// optional ones, paths unescaped, and which mounts below a Reservoir mount are its subvolumes'.
/// The lines are written here by hand in the kernel's format, not taken from a run.
/// </summary>
public class MountTableTests
{
    [Fact]
    public void FieldsAreFoundAroundOptionalOnesAndPathsAreUnescaped()
    {
        var m = MountInfo.Parse(@"45 27 7:0 / /tmp/my\040disk\134x rw,nosuid,nodev,relatime shared:1 master:2 - fuseblk.reservoir /dev/loop0 rw,user_id=0,group_id=0");
        Assert.NotNull(m);
        Assert.Equal((45, 27), (m!.Id, m.ParentId));
        Assert.Equal(@"/tmp/my disk\x", m.MountPoint);
        Assert.Equal("fuseblk.reservoir", m.FsType);
        Assert.Equal("/dev/loop0", m.Source);
        Assert.True(m.IsReservoir);
        var plain = MountInfo.Parse("30 1 0:26 / /run rw,nosuid - tmpfs tmpfs rw,size=100k");
        Assert.Equal(("/run", "tmpfs", false), (plain!.MountPoint, plain.FsType, plain.IsReservoir));
        Assert.Null(MountInfo.Parse("garbage"));
    }

    [Fact]
    public void TheSubvolumesMountsAreTheOnesWithTheSameSourceBelowIt()
    {
        var table = new List<MountInfo>
        {
            new(1, 0, "/", "ext4", "/dev/vda"),
            new(10, 1, "/mnt", "fuseblk.reservoir", "/dev/loop3"),
            new(11, 10, "/mnt/a", "fuse.reservoir", "/dev/loop3"),
            new(12, 11, "/mnt/a/b", "fuse.reservoir", "/dev/loop3"),
            new(13, 11, "/mnt/a/t", "tmpfs", "tmpfs"),
            new(14, 13, "/mnt/a/t/inner", "fuse.reservoir", "/dev/loop3"), // below a foreign mount: not ours
            new(15, 10, "/mnt/other", "fuse.reservoir", "/images/other.img"), // another image mounted inside
            new(16, 1, "/elsewhere", "fuse.reservoir", "/dev/loop3"),
        };
        var (ours, foreign) = MountTreeUnmount.Below(table, table[1]);
        Assert.Equal(["/mnt/a", "/mnt/a/b"], ours.Select(m => m.MountPoint).Order());
        Assert.Equal(["/mnt/a/t", "/mnt/a/t/inner", "/mnt/other"], foreign.Select(m => m.MountPoint).Order());
    }

    [Fact]
    public void AnImageIsFoundWhereItIsMountedNotAtItsSubvolumesMounts()
    {
        var table = new List<MountInfo>
        {
            new(1, 0, "/", "ext4", "/dev/vda"),
            new(10, 1, "/mnt", "fuse.reservoir", "/images/d.img"),
            new(11, 10, "/mnt/a", "fuse.reservoir", "/images/d.img"),
            new(12, 1, "/other", "fuse.reservoir", "/images/e.img"),
            new(13, 1, "/plain", "ext4", "/images/d.img"),
        };
        Assert.Equal("/mnt", MountTreeUnmount.MountOfImage(table, "/images/d.img")?.MountPoint);
        Assert.Equal("/other", MountTreeUnmount.MountOfImage(table, "/images/e.img")?.MountPoint);
        Assert.Null(MountTreeUnmount.MountOfImage(table, "/images/f.img"));
    }
}

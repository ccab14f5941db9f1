using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Format.Items;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>Higher-level qgroups: groups of subvolumes' groups, whose limits every member's
/// writes reserve against (all or nothing), whose numbers are their members' sums, and whose
/// relations survive a remount and pass fsck's recount.</summary>
public class QgroupHierarchyTests
{
    private const ulong Root = Filesystem.RootIno;
    private static ulong Q(ushort level, ulong id) => QgroupId.Of(level, id);

    private static (ulong Referenced, ulong Exclusive) Usage(Filesystem fs, ulong id)
    {
        var g = fs.Qgroups().Single(x => x.Id == id);
        return (g.Referenced, g.Exclusive);
    }

    [Fact]
    public void AParentGroupsLimitHoldsForAllItsMembersTogether()
    {
        var dev = NewDevice(128UL << 20);
        var mib = new byte[1 << 20];
        new Random(1).NextBytes(mib);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Root, "a", 0, 0, out var a));
            Ok(fs.CreateSubvolume(Root, "b", 0, 0, out var b));
            ulong qa = Q(0, 256), qb = Q(0, 257), team = Q(1, 100), org = Q(2, 1);
            Assert.Equal(Errno.EINVAL, fs.CreateQgroup(Q(0, 999)));     // level 0 comes with a subvolume
            Ok(fs.CreateQgroup(team));
            Assert.Equal(Errno.EEXIST, fs.CreateQgroup(team));
            Ok(fs.CreateQgroup(org));
            Assert.Equal(Errno.EINVAL, fs.AssignQgroup(team, qa));       // a parent is a higher level
            Assert.Equal(Errno.ENOENT, fs.AssignQgroup(Q(0, 999), team));
            ulong fa = CreateFile(fs, a.Ino, "f", mib);                 // 1 MiB before joining
            Ok(fs.Sync());
            Ok(fs.AssignQgroup(qa, team));
            Assert.Equal(Errno.EEXIST, fs.AssignQgroup(qa, team));
            Ok(fs.AssignQgroup(qb, team));
            Ok(fs.AssignQgroup(team, org));
            Assert.Equal((1UL << 20, 1UL << 20), Usage(fs, team));     // a's MiB, counted on joining
            Assert.Equal((1UL << 20, 1UL << 20), Usage(fs, org));
            Ok(fs.SetQgroupLimit(team, 3UL << 20, ulong.MaxValue));
            Ok(fs.Write(fa, 1 << 20, mib, out _));                      // a: 2 MiB
            ulong fb = CreateFile(fs, b.Ino, "f");
            Ok(fs.Write(fb, 0, mib, out _));                            // 1 MiB fits: 3 in all
            Assert.Equal(Errno.EDQUOT, fs.Write(fb, 1 << 20, new byte[4096], out int n)); // not a block more
            Assert.Equal(0, n);
            Ok(fs.Sync());
            Assert.Equal((3UL << 20, 3UL << 20), Usage(fs, team));
            Assert.Equal(Usage(fs, qa).Referenced + Usage(fs, qb).Referenced, Usage(fs, team).Referenced);
            Assert.Equal(Usage(fs, team), Usage(fs, org));
            // Out of the team, b is limited by nothing again.
            Ok(fs.RemoveQgroupRelation(qb, team));
            Ok(fs.Write(fb, 1 << 20, mib, out _));
            Ok(fs.Sync());
            Assert.Equal((2UL << 20, 2UL << 20), Usage(fs, team));
            Assert.Equal(Errno.EBUSY, fs.DestroyQgroup(team));          // it has members
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            Assert.Equal(new[] { (Q(0, 256), Q(1, 100)), (Q(1, 100), Q(2, 1)) }, fs.QgroupRelations().ToArray());
            // A member's subvolume deleted: its group and its memberships go, the parents' sums drop.
            Ok(fs.DeleteSubvolume(Root, "a"));
            Ok(fs.SyncSubvolumeDeletions());
            Ok(fs.Sync());
            Assert.Equal((0UL, 0UL), Usage(fs, Q(1, 100)));
            Assert.DoesNotContain(fs.QgroupRelations(), r => r.Child == Q(0, 256));
            Ok(fs.RemoveQgroupRelation(Q(1, 100), Q(2, 1)));
            Ok(fs.DestroyQgroup(Q(1, 100)));
            Ok(fs.DestroyQgroup(Q(2, 1)));
            Assert.DoesNotContain(fs.Qgroups(), g => QgroupId.Level(g.Id) > 0);
        }
        FsckAssert.Clean(dev);
    }
}

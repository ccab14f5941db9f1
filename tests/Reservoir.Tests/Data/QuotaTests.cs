using Reservoir.Common;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Data;

public class QuotaTests
{
    [Fact]
    public void LimitIsEnforcedAtWriteTimeAndUsageIsExact()
    {
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            CreateFile(fs, Filesystem.RootIno, "before", new byte[100_000]);
            var e = fs.EnableQuota();
            Assert.True(e == Errno.OK, string.Join("\n", fs.Warnings));
            var g = fs.Qgroups().Single();
            Assert.Equal(5UL, g.Id);
            Assert.Equal(Reservoir.Common.Units.AlignUp(100_000, 4096), g.Referenced);
            Ok(fs.SetQuotaLimit(1UL << 20));
            ulong ino = CreateFile(fs, Filesystem.RootIno, "a");
            ulong room = (1UL << 20) - g.Referenced;
            Ok(fs.Write(ino, 0, new byte[room], out int n));
            Assert.Equal((int)room, n);
            Assert.Equal(Errno.EDQUOT, fs.Write(ino, room, new byte[1], out n));
            Assert.Equal(0, n);
            Ok(fs.Sync());
            Assert.Equal(1UL << 20, fs.Qgroups().Single().Referenced);
            // Overwriting in place within the limit needs new space only until the commit frees the old.
            Ok(fs.Unlink(Filesystem.RootIno, "before"));
            Ok(fs.Sync());
            Assert.Equal(room, fs.Qgroups().Single().Referenced);
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(dev);
        using (var fs = Mount(dev))
        {
            var g = fs.Qgroups().Single();
            Assert.Equal(1UL << 20, g.MaxReferenced);
            Assert.True(fs.QuotaEnabled);
        }
    }
}

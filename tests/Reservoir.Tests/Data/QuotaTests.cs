using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
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

    /// <summary>
    /// Punch, zero range and truncate at a full quota: each either completes or answers EDQUOT
    /// with the file exactly as it was. A punch whose two partial edge blocks need two blocks
    /// of quota, with one left, once zeroed the first edge and then failed on the second; a
    /// zero range punched and then failed to preallocate; a truncate dropped dirty pages past
    /// the new size before failing to zero the tail of its last block.
    /// </summary>
    [Fact]
    public void PunchZeroRangeAndTruncateAtAFullQuotaFailWithoutChangingTheFile()
    {
        const int bs = 4096;
        var dev = NewDevice(64UL << 20);
        using (var fs = Mount(dev))
        {
            Ok(fs.EnableQuota());
            var data = new byte[4 * bs];
            new Random(7).NextBytes(data);
            ulong ino = CreateFile(fs, Filesystem.RootIno, "f", data);
            // A fifth block, preallocated (mode 0 extends the size): writing it later is in place
            // and needs no quota.
            Ok(fs.Fallocate(ino, 0, 4 * bs, bs));
            Ok(fs.Sync());
            var want = new byte[5 * bs];
            data.CopyTo(want, 0);

            // One block of room; the punch needs two (both edges are partial, in written blocks).
            Ok(fs.SetQuotaLimit(fs.Qgroups().Single().Referenced + bs));
            Assert.Equal(Errno.EDQUOT, fs.Fallocate(ino, FallocateMode.PunchHole | FallocateMode.KeepSize, 100, 3 * bs));
            Assert.Equal(want, ReadAll(fs, ino));
            // Zero range reserves its whole range first: three blocks and more than one is free.
            Assert.Equal(Errno.EDQUOT, fs.Fallocate(ino, FallocateMode.ZeroRange | FallocateMode.KeepSize, 100, 3 * bs));
            Assert.Equal(want, ReadAll(fs, ino));

            // No room at all; dirty data past the new size (in place, in the preallocated block),
            // and a truncate into the middle of a written block, whose tail it must zero.
            Ok(fs.SetQuotaLimit(fs.Qgroups().Single().Referenced));
            var fifth = new byte[bs];
            Array.Fill(fifth, (byte)0xEE);
            Ok(fs.Write(ino, 4 * bs, fifth, out int n));
            Assert.Equal(bs, n);
            fifth.CopyTo(want, 4 * bs);
            Assert.Equal(Errno.EDQUOT, fs.Truncate(ino, bs + 100));
            Assert.Equal(want, ReadAll(fs, ino));

            // With room, all three work.
            Ok(fs.SetQuotaLimit(64UL << 20));
            Ok(fs.Fallocate(ino, FallocateMode.PunchHole | FallocateMode.KeepSize, 100, 3 * bs));
            Array.Clear(want, 100, 3 * bs);
            Assert.Equal(want, ReadAll(fs, ino));
            Ok(fs.Truncate(ino, bs + 100));
            Assert.Equal(want.AsSpan(0, bs + 100).ToArray(), ReadAll(fs, ino));
            Ok(fs.Sync());
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(dev);
    }
}

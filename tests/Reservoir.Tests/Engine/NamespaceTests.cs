using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Format;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

public class NamespaceTests
{
    [Fact]
    public void ReaddirCookiesStayValidWhileTheDirectoryChanges()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        for (int i = 0; i < 600; i++) CreateFile(fs, Filesystem.RootIno, "e" + i);
        // Read the first 250 entries (after . and ..), then change the directory.
        var seen = new List<string>();
        ulong cookie = 0;
        Ok(fs.ReadDir(Filesystem.RootIno, 0, d =>
        {
            if (seen.Count == 252) return false;
            seen.Add(d.Name);
            cookie = d.Cookie;
            return true;
        }));
        Assert.Equal(".", seen[0]);
        Assert.Equal("..", seen[1]);
        for (int i = 0; i < 100; i++) Ok(fs.Unlink(Filesystem.RootIno, "e" + (i * 3)));          // some before, some after
        for (int i = 0; i < 50; i++) CreateFile(fs, Filesystem.RootIno, "new" + i);            // appended
        var rest = new List<string>();
        Ok(fs.ReadDir(Filesystem.RootIno, cookie, d => { rest.Add(d.Name); return true; }));
        // No entry twice; every entry that existed throughout is seen exactly once.
        var all = seen.Skip(2).Concat(rest).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        for (int i = 0; i < 600; i++)
            if (i % 3 != 0 || i / 3 >= 100) Assert.Contains("e" + i, all);
        for (int i = 0; i < 50; i++) Assert.Contains("new" + i, rest);
    }

    [Fact]
    public void CorruptedDataBlockReadsAsEioNotAsWrongData()
    {
        var dev = NewDevice();
        ulong ino;
        using (var fs = Mount(dev))
        {
            ino = CreateFile(fs, Filesystem.RootIno, "f", Enumerable.Repeat((byte)7, 20_000).ToArray());
            Ok(fs.Sync());
            Ok(fs.ExtentMap(ino, out var map));
            dev.Write(map[0].DiskBytenr + 4096 + 10, new byte[] { 8 });
        }
        using (var fs = Mount(dev))
        {
            var buf = new byte[4096];
            Ok(fs.Read(ino, 0, buf, out _)); // the first block is intact
            Assert.Equal(Errno.EIO, fs.Read(ino, 4096, buf, out _));
            Assert.Contains(fs.Warnings, w => w.Contains("checksum mismatch") && w.Contains($"inode {ino}"));
        }
        var r = Reservoir.Engine.Check.Fsck.Run(dev, new() { CheckDataCsums = true });
        Assert.Contains(r.Errors, f => f.Message.Contains("checksum mismatch"));
    }

    [Fact]
    public void TimestampsKeepNanosecondsAndFollowPosix()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        ulong ino = CreateFile(fs, Filesystem.RootIno, "t");
        var at = new Timespec(1_000_000_000, 123_456_789);
        var mt = new Timespec(1_100_000_000, 987_654_321);
        Ok(fs.SetAttr(ino, new SetAttrRequest { Mask = SetAttrMask.Atime | SetAttrMask.Mtime, Atime = at, Mtime = mt }, out var a));
        Assert.Equal(at, a.Atime);
        Assert.Equal(mt, a.Mtime);
        Ok(fs.GetAttr(Filesystem.RootIno, out var before));
        Thread.Sleep(5);
        CreateFile(fs, Filesystem.RootIno, "u");
        Ok(fs.GetAttr(Filesystem.RootIno, out var after));
        Assert.True(after.Mtime.ToDateTime() > before.Mtime.ToDateTime(), "creating a name changes the directory's mtime");
        Ok(fs.Write(ino, 0, new byte[] { 1 }, out _));
        Ok(fs.GetAttr(ino, out var w));
        Assert.True(w.Mtime.ToDateTime() > mt.ToDateTime());
        Ok(fs.SetAttr(ino, new SetAttrRequest { Mask = SetAttrMask.Uid | SetAttrMask.Gid, Uid = 1000, Gid = 100 }, out var o));
        Assert.Equal((1000u, 100u), (o.Uid, o.Gid));
        fs.Dispose();
        using var fs2 = Mount(dev);
        Ok(fs2.GetAttr(ino, out var re));
        Assert.Equal(at, re.Atime);
        Assert.Equal((1000u, 100u), (re.Uid, re.Gid));
    }

    [Fact]
    public void StatfsReflectsUsage()
    {
        var dev = NewDevice(64UL << 20);
        using var fs = Mount(dev);
        Ok(fs.StatFs(out var s0));
        Assert.Equal(4096u, s0.BlockSize);
        Assert.True(s0.Blocks > 15_000 && s0.Blocks <= (64UL << 20) / 4096);
        CreateFile(fs, Filesystem.RootIno, "big", new byte[8 << 20]);
        Ok(fs.Sync());
        Ok(fs.StatFs(out var s1));
        Assert.True(s0.BlocksAvail - s1.BlocksAvail >= (8 << 20) / 4096, $"{s0.BlocksAvail} -> {s1.BlocksAvail}");
        Assert.True(s1.BlocksFree <= s0.BlocksFree - (8 << 20) / 4096);
        Assert.Equal(255u, s1.NameMax);
    }

    [Fact]
    public void SparseFilesAndTruncateReadZeros()
    {
        var dev = NewDevice();
        using var fs = Mount(dev);
        ulong ino = CreateFile(fs, Filesystem.RootIno, "sparse");
        Ok(fs.Write(ino, 10_000_000, "end"u8, out _));
        Ok(fs.GetAttr(ino, out var a));
        Assert.Equal(10_000_003UL, a.Size);
        Assert.True(a.Blocks <= 8, "a hole takes no space");
        var buf = new byte[100];
        Ok(fs.Read(ino, 5_000_000, buf, out int n));
        Assert.Equal(100, n);
        Assert.All(buf, b => Assert.Equal(0, b));
        Ok(fs.Write(ino, 0, Enumerable.Repeat((byte)9, 9000).ToArray(), out _));
        Ok(fs.Truncate(ino, 5000));
        Ok(fs.Truncate(ino, 9000));
        var back = ReadAll(fs, ino);
        Assert.All(back.AsSpan(0, 5000).ToArray(), b => Assert.Equal(9, b));
        Assert.All(back.AsSpan(5000).ToArray(), b => Assert.Equal(0, b));
        Ok(fs.Sync());
        Ok(fs.ExtentMap(ino, out var map));
        Assert.True(map.Sum(m => (long)m.Length) <= 8192);
    }

    [Fact]
    public void DirectIoDeviceWorksForUnalignedAccess()
    {
        string path = Path.Combine(Path.GetTempPath(), $"odirect-{Environment.ProcessId}.img");
        try
        {
            FileBlockDevice.Create(path, 32UL << 20).Dispose();
            using (var dev = FileBlockDevice.Open(path, direct: true))
            {
                Filesystem.Format(dev);
                using var fs = Mount(dev);
                var data = new byte[12345];
                new Random(4).NextBytes(data);
                ulong ino = CreateFile(fs, Filesystem.RootIno, "d", data);
                Assert.Equal(data, ReadAll(fs, ino));
                var odd = new byte[7];
                dev.Read(65536 + 3, odd); // unaligned read through the bounce buffer
            }
            using var dev2 = FileBlockDevice.Open(path, readOnly: true);
            FsckAssert.Clean(dev2);
        }
        finally { File.Delete(path); }
    }
}

using Reservoir.Common;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

public class SmokeTests
{
    [Fact]
    public void CreateWriteReadRemount()
    {
        var dev = NewDevice();
        var data = new byte[100_000];
        new Random(1).NextBytes(data);
        ulong ino;
        using (var fs = Mount(dev))
        {
            ino = CreateFile(fs, Filesystem.RootIno, "hello.bin", data);
            Assert.Equal(data, ReadAll(fs, ino));
            Ok(fs.Mkdir(Filesystem.RootIno, "dir", 0x1ED, 0, 0, out var d));
            CreateFile(fs, d.Ino, "inner", "abc"u8.ToArray());
        }
        using (var fs = Mount(dev))
        {
            Ok(fs.Lookup(Filesystem.RootIno, "hello.bin", out var a));
            Assert.Equal(ino, a.Ino);
            Assert.Equal(data, ReadAll(fs, a.Ino));
            Ok(fs.Lookup(Filesystem.RootIno, "dir", out var d));
            Ok(fs.Lookup(d.Ino, "inner", out var i));
            Assert.Equal("abc"u8.ToArray(), ReadAll(fs, i.Ino));
            Assert.Equal(Errno.ENOENT, fs.Lookup(Filesystem.RootIno, "nope", out _));
        }
        FsckAssert.Clean(dev);
        {
        }
    }
}

using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// open(O_TMPFILE) in the engine (<see cref="Filesystem.Tmpfile"/>): a nameless file whose
/// orphan item deletes it when nothing names it, after the last close or after a crash, and
/// which linkat keeps. The mount's suite compares the calls with ext4
/// (PosixSuiteTests.TmpfilesAreMadeAndNamedAsOnExt4).
/// </summary>
public class TmpfileTests
{
    [Fact]
    public void ATmpfileGoesUnlessNamedEvenAfterACrash()
    {
        var dev = NewDevice(64UL << 20);
        var data = new byte[256 << 10];
        new Random(7).NextBytes(data);
        ulong kept, lost, closed;
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Ok(fs.Tmpfile(Filesystem.RootIno, 0x1B6, 0, 0, out var a, umask: 0x12));
            Assert.Equal(0u, a.Nlink);
            Assert.Equal(0x1A4u, a.Mode & 0xFFF);
            Ok(fs.Open(a.Ino, true, out _));
            Ok(fs.Write(a.Ino, 0, data, out _));
            Ok(fs.Link(a.Ino, Filesystem.RootIno, "kept", out _));
            Ok(fs.Release(a.Ino));
            kept = a.Ino;
            Ok(fs.Tmpfile(Filesystem.RootIno, 0x1B6, 0, 0, out var c));
            Ok(fs.Open(c.Ino, true, out _));
            Ok(fs.Write(c.Ino, 0, data, out _));
            Ok(fs.Release(c.Ino));                        // closed with no name: gone now
            closed = c.Ino;
            Assert.Equal(Errno.ENOENT, fs.GetAttr(closed, out _));
            Ok(fs.Tmpfile(Filesystem.RootIno, 0x1B6, 0, 0, out var b));
            Ok(fs.Open(b.Ino, true, out _));
            Ok(fs.Write(b.Ino, 0, data, out _));
            Ok(fs.Fsync(b.Ino));                          // durable, and still open at the "crash"
            lost = b.Ino;
            Assert.Equal([".", "..", "kept"], DirNames(fs, Filesystem.RootIno));
            Ok(fs.Sync());
            // "Crash" with the file still open: the commit holds its orphan item.
        }
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            Assert.Equal(data, ReadAll(fs, kept));
            Assert.Equal(Errno.ENOENT, fs.GetAttr(lost, out _)); // the orphan item deleted it
            Assert.Contains(fs.Warnings, w => w.Contains("orphan"));
            Assert.Equal([".", "..", "kept"], DirNames(fs, Filesystem.RootIno));
        }
        FsckAssert.Clean(dev);
    }
}

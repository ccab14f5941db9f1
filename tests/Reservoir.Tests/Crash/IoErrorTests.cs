using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>Device errors injected into operations: a failure halfway through tree changes
/// aborts the transaction (no further writes; the image keeps its last commit); a failed data
/// write before any tree change returns EIO and leaks nothing.</summary>
public class IoErrorTests
{
    [Fact]
    public void NodeReadErrorMidOperationAbortsTheTransaction()
    {
        var dev = new CrashSimDevice(NewDevice(64UL << 20, 4096));
        using (var fs = Mount(dev))
        {
            for (int i = 0; i < 3000; i++) CreateFile(fs, Filesystem.RootIno, "f" + i);
        }
        var before = Reservoir.Stress.PowerCutSimulator.Capture(Mount(dev, new MountOptions { ReadOnly = true, CommitIntervalMs = 0 }));
        using (var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0, NodeCacheBytes = 1 }))
        {
            // Fail node reads, but only while an operation is changing trees (its lookups before
            // that would simply answer EIO).
            dev.FailWhen = (write, off, len) => !write && len == 4096 && Reservoir.Engine.Tx.TransHandle.ChangingOnThisThread > 0;
            Errno e = Errno.OK;
            for (int i = 0; i < 3000 && e == Errno.OK; i += 97) e = fs.Unlink(Filesystem.RootIno, "f" + i);
            Assert.Equal(Errno.EIO, e);
            dev.FailWhen = null;
            Assert.Contains(fs.Warnings, w => w.Contains("transaction aborted"));
            Assert.Equal(Errno.EIO, fs.Create(Filesystem.RootIno, "more", 0x1A4, 0, 0, out _));
        }
        FsckAssert.Clean(dev);
        using var fs2 = Mount(dev, new MountOptions { ReadOnly = true, CommitIntervalMs = 0 });
        Assert.Equal(before, Reservoir.Stress.PowerCutSimulator.Capture(fs2));
    }

    [Fact]
    public void WritebackErrorIsReportedByFsyncAndLeaksNothing()
    {
        var dev = new CrashSimDevice(NewDevice(64UL << 20, 4096));
        using (var fs = Mount(dev))
        {
            ulong ino = CreateFile(fs, Filesystem.RootIno, "f", new byte[10_000]);
            Ok(fs.Sync());
            var s0 = fs.Space();
            var data = new byte[1 << 20];
            new Random(3).NextBytes(data);
            dev.FailWhen = (write, off, len) => write && len >= 4096 && off >= (5UL << 20);
            Ok(fs.Write(ino, 0, data, out int n), "a buffered write succeeds");
            Assert.Equal(data.Length, n);
            Assert.Equal(Errno.EIO, fs.Fsync(ino));
            dev.FailWhen = null;
            Ok(fs.Fsync(ino), "the error is reported once");
            var s1 = fs.Space();
            Assert.Equal(s0.DataUsed, s1.DataUsed);
            Assert.Equal(0UL, s1.DataMayUse);
            Assert.Equal(0UL, s1.MetaMayUse);
            Assert.DoesNotContain(fs.Warnings, w => w.Contains("transaction aborted"));
            // The filesystem goes on working.
            Ok(fs.Write(ino, 0, data, out n));
            Ok(fs.Fsync(ino));
            Assert.Equal(data, ReadAll(fs, ino));
        }
        FsckAssert.Clean(dev);
    }
}

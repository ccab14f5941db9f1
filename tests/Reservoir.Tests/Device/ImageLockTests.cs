using System.Diagnostics;
using Reservoir.Common;
using Reservoir.Device;
using Xunit;

namespace Reservoir.Tests.Device;

/// <summary>
/// The image's lock (flock): a read-write open excludes every other open, so two mounts of
/// one image fail instead of corrupting it; but a lock held only for a moment (a child between
/// fork and exec holds copies of its parent's descriptors, and their locks) is waited out,
/// so an image just closed is not called "in use" because another thread started a process.
/// </summary>
public sealed class ImageLockTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AHeldImageIsInUseAndOneLetGoOfSoonOpens(bool direct)
    {
        string path = Path.Combine(Path.GetTempPath(), $"lock-{Environment.ProcessId}-{direct}.img");
        try
        {
            FileBlockDevice.Create(path, 1UL << 20).Dispose();
            using (FileBlockDevice.Open(path, direct: direct))
            {
                var sw = Stopwatch.StartNew();
                var busy = Assert.Throws<FsException>(() => FileBlockDevice.Open(path, direct: direct));
                Assert.Equal(Errno.EBUSY, busy.Errno);
                Assert.Contains(path, busy.Message);
                Assert.True(sw.ElapsedMilliseconds >= 1500, $"gave up after {sw.ElapsedMilliseconds} ms");
                Assert.Throws<FsException>(() => FileBlockDevice.Open(path, readOnly: true, direct: direct));
            }

            // Held for a moment by another open, then let go: the open waits and succeeds.
            // (A thread of its own: a task waited for a thread-pool thread under the full
            // suite's load past the open's 2 s of patience, once.)
            var holder = FileBlockDevice.Open(path, direct: direct);
            var release = new Thread(() => { Thread.Sleep(300); holder.Dispose(); });
            release.Start();
            using (var dev = FileBlockDevice.Open(path, direct: direct)) Assert.Equal(1UL << 20, dev.Size);
            release.Join();
        }
        finally { File.Delete(path); }
    }
}

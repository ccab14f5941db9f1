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
    public async Task AHeldImageIsInUseAndOneLetGoOfSoonOpens(bool direct)
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
            var holder = FileBlockDevice.Open(path, direct: direct);
            var release = Task.Run(async () => { await Task.Delay(300); holder.Dispose(); });
            using (var dev = FileBlockDevice.Open(path, direct: direct)) Assert.Equal(1UL << 20, dev.Size);
            await release;
        }
        finally { File.Delete(path); }
    }
}

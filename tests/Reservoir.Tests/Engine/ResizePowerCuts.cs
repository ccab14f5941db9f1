using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// A power cut at every device operation of one resize (ResizeTests, RelocationTests): for cut
/// 0, 1, 2, … a copy of <c>initial</c> is mounted, the resize runs until the device dies at that
/// operation (EIO, or done when the cut falls past its last operation), and the durable image
/// and two images after a power cut (one with torn writes) each pass fsck, mount at the old size
/// or the new, and pass the caller's check.
/// </summary>
internal static class ResizePowerCuts
{
    /// <param name="before">Runs on each mount before the power cut is armed.</param>
    /// <param name="after">Checks the resize's answer on the dying mount (errno, reason, cut).</param>
    /// <param name="check">Checks each image after its mount.</param>
    /// <returns>How many images were checked, and the sizes they mounted at.</returns>
    public static (int Images, HashSet<ulong> Sizes) EveryCut(MemoryBlockDevice initial, ulong from, ulong to, long maxCuts,
        Action<Filesystem, CrashSimDevice> before, Action<Filesystem, CrashSimDevice, Errno, string?, long> after, Action<Filesystem> check)
    {
        int images = 0;
        var sizes = new HashSet<ulong>();
        for (long cut = 0; ; cut++)
        {
            var dev = new CrashSimDevice(initial);
            bool finished = false;
            using (var fs = Mount(dev))
            {
                before(fs, dev);
                dev.CutAfterOps = dev.Ops + cut;
                try
                {
                    var e = fs.Resize(to, out _, out var why);
                    finished = e == Errno.OK;
                    Assert.True(finished || e == Errno.EIO, $"cut {cut}: {e} {why}");
                    after(fs, dev, e, why, cut);
                }
                catch (FsException) { }
                try { fs.Dispose(); } catch (FsException) { }
            }
            for (int k = 0; k < 3; k++)
            {
                var img = k == 0 ? dev.DurableImage() : dev.ImageAfterPowerCut(new Random(k), tear: k == 2);
                FsckAssert.Clean(img);
                using var fs2 = Mount(img);
                Assert.True(fs2.TotalBytes == from || fs2.TotalBytes == to, $"cut {cut}: size {fs2.TotalBytes}");
                sizes.Add(fs2.TotalBytes);
                check(fs2);
                images++;
            }
            if (finished) return (images, sizes);
            Assert.True(cut < maxCuts, $"the resize to {to} never finished");
        }
    }
}

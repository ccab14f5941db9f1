using Reservoir.Common;
using Reservoir.Device;
using Xunit;

namespace Reservoir.Tests.Device;

public class GatherWriteTests
{
    private static List<ReadOnlyMemory<byte>> Pieces() =>
        Enumerable.Range(0, 5).Select(i => (ReadOnlyMemory<byte>)Enumerable.Repeat((byte)(i + 1), 4096 * (i + 1)).ToArray()).ToList();

    private static byte[] Expected() => Pieces().SelectMany(p => p.ToArray()).ToArray();

    [Fact]
    public void FileDeviceWritesBuffersBackToBack()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gather-{Guid.NewGuid():N}.img");
        try
        {
            using (var dev = FileBlockDevice.Create(path, 1 << 20)) dev.WriteGather(8192, Pieces());
            using (var dev = FileBlockDevice.Open(path))
            {
                var got = new byte[Expected().Length];
                dev.Read(8192, got);
                Assert.Equal(Expected(), got);
                var before = new byte[8192];
                dev.Read(0, before);
                Assert.All(before, b => Assert.Equal(0, b));
                Assert.Throws<DeviceIOException>(() => dev.WriteGather(dev.Size - 4096, Pieces()));
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void DirectDeviceWritesAlignedFramesWithoutBouncingAndBouncesTheRest()
    {
        string path = Path.Combine("/var/tmp", $"gather-direct-{Guid.NewGuid():N}.img");
        try
        {
            using (var dev = FileBlockDevice.Create(path, 1 << 20)) { }
            using var arena = new Reservoir.Engine.Inodes.PageArena(4096);
            var frames = Enumerable.Range(0, 4).Select(i => { var f = arena.Rent(zeroed: false); f.Span.Fill((byte)(0x40 + i)); return f; }).ToList();
            using (var dev = FileBlockDevice.Open(path, direct: true))
            {
                dev.WriteGather(16384, frames.Select(f => (ReadOnlyMemory<byte>)f.Memory).ToList()); // aligned: straight from the frames
                dev.WriteGather(4096 + 512, Pieces().Take(1).ToList());                            // unaligned: bounced
            }
            using (var dev = FileBlockDevice.Open(path))
            {
                var got = new byte[4 * 4096];
                dev.Read(16384, got);
                Assert.Equal(frames.SelectMany(f => f.Span.ToArray()).ToArray(), got);
                var small = new byte[4096];
                dev.Read(4096 + 512, small);
                Assert.Equal(Pieces()[0].ToArray(), small);
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void CrashSimulatorSeesAGatheredWriteAsOneWrite()
    {
        var dev = new CrashSimDevice(new MemoryBlockDevice(1 << 20));
        long before = dev.Writes;
        ((IBlockDevice)dev).WriteGather(4096, Pieces());
        Assert.Equal(before + 1, dev.Writes);
        var got = new byte[Expected().Length];
        dev.Read(4096, got);
        Assert.Equal(Expected(), got);
    }
}

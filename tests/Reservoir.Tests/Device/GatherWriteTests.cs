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

    /// <summary>The device's own pwritev: more buffers than one system call takes (IOV_MAX,
    /// 1,024), buffers of odd sizes and empty ones, in order, with nothing before or after
    /// touched (fails if a batch or an empty buffer is skipped or written twice).</summary>
    [Fact]
    public void FileDeviceWritesMoreBuffersThanOneSystemCallTakesInOrder()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gather-many-{Guid.NewGuid():N}.img");
        var rng = new Random(7);
        var pieces = Enumerable.Range(0, 2_500).Select(i =>
        {
            var b = new byte[i % 97 == 0 ? 0 : rng.Next(1, 700)];
            rng.NextBytes(b);
            return (ReadOnlyMemory<byte>)b;
        }).ToList();
        var expected = pieces.SelectMany(p => p.ToArray()).ToArray();
        try
        {
            using (var dev = FileBlockDevice.Create(path, 4 << 20)) dev.WriteGather(4096, pieces);
            var all = File.ReadAllBytes(path);
            Assert.Equal(expected, all.AsSpan(4096, expected.Length).ToArray());
            Assert.All(all.AsSpan(0, 4096).ToArray(), b => Assert.Equal(0, b));
            Assert.All(all.AsSpan(4096 + expected.Length, 4096).ToArray(), b => Assert.Equal(0, b));
        }
        finally { File.Delete(path); }
    }

    /// <summary>A host that refuses the write (a full host filesystem: /dev/full answers
    /// ENOSPC) is a DeviceIOException naming the error, not a crash or a silent loss.</summary>
    [Fact]
    public void AHostErrorOfAGatheredWriteIsADeviceError()
    {
        using var handle = File.OpenHandle("/dev/full", FileMode.Open, FileAccess.Write);
        var ex = Assert.Throws<IOException>(() => GatherWrite.WriteAll(handle, 0, Pieces()));
        Assert.Contains("errno 28", ex.Message);
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

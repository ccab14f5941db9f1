using Reservoir.Api.Send;
using Reservoir.Engine.Data;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>A send finds a new file's data from its extent map instead of SEEK_DATA and
/// SEEK_HOLE (two requests fewer per file through a mount): both must give the same ranges, for
/// files of written ranges, holes, preallocated ranges, punched holes and inline data.</summary>
public sealed class ExtentMapsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void DataRangesFromTheMapAreWhatSeekDataAndSeekHoleSay(int seed)
    {
        var rng = new Random(seed);
        using var fs = ReservoirFileSystem.Open(TestFs.NewDevice(128UL << 20), new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        fs.CreateDirectory("/d");
        for (int n = 0; n < 12; n++)
        {
            string p = $"/d/f{n}";
            fs.WriteAllBytes(p, n == 0 ? "tiny"u8 : []); // the first inline
            TestFs.Ok(fs.Posix.Lstat(p, out var a));
            for (int k = 0; k < rng.Next(1, 8); k++)
            {
                ulong off = (ulong)rng.Next(0, 64) * 4096 + (ulong)(rng.Next(2) == 0 ? 0 : rng.Next(4096));
                ulong len = (ulong)rng.Next(1, 5 * 4096);
                switch (rng.Next(3))
                {
                    case 0: TestFs.Ok(fs.Engine.Write(a.Ino, off, new byte[len].Select(_ => (byte)1).ToArray(), out _)); break;
                    case 1: TestFs.Ok(fs.Engine.Fallocate(a.Ino, rng.Next(2) == 0 ? FallocateMode.Allocate : FallocateMode.KeepSize, off, len)); break;
                    default: TestFs.Ok(fs.Engine.Fallocate(a.Ino, FallocateMode.PunchHole | FallocateMode.KeepSize, off, len)); break;
                }
            }
            fs.Sync(); // written back: the map is what the extents say
            TestFs.Ok(fs.Engine.GetAttr(a.Ino, out a));
            TestFs.Ok(fs.Engine.ExtentMap(a.Ino, out var map));
            long size = (long)a.Size;
            for (long pos = 0; pos < size; pos += 1024)
            {
                (long, long)? bySeek = null;
                var e = fs.Engine.Seek(a.Ino, (ulong)pos, data: true, out ulong d);
                if (e == Reservoir.Common.Errno.OK && (long)d < size)
                {
                    TestFs.Ok(fs.Engine.Seek(a.Ino, d, data: false, out ulong h));
                    bySeek = ((long)d, Math.Min((long)h, size));
                }
                Assert.True(bySeek == ExtentMaps.NextData(map, pos, size),
                    $"{p} at {pos}: seek says {bySeek}, the map {ExtentMaps.NextData(map, pos, size)}; map {string.Join(";", map.Select(m => $"{m.FileOffset}+{m.Length}:{m.Type}@{m.DiskBytenr}"))}");
            }
        }
    }
}

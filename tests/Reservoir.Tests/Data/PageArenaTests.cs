using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Data;

public class PageArenaTests
{
    [Fact]
    public void FramesAreDistinctAndRecycledFramesAreZeroedOnRequest()
    {
        using var arena = new PageArena(4096);
        var frames = Enumerable.Range(0, 600).Select(_ => arena.Rent(zeroed: true)).ToList(); // more than one chunk
        Assert.Equal(600, arena.FramesInUse);
        Assert.Equal(2L * PageArena.ChunkBytes, arena.BytesReserved);
        for (int i = 0; i < frames.Count; i++)
        {
            Assert.All(frames[i].Span.ToArray(), b => Assert.Equal(0, b));
            frames[i].Span.Fill((byte)(i % 251 + 1));
        }
        // No two frames share memory: every frame still holds its own pattern.
        for (int i = 0; i < frames.Count; i++) Assert.All(frames[i].Span.ToArray(), b => Assert.Equal((byte)(i % 251 + 1), b));
        // Memory (for gathered writes) and Span show the same bytes.
        Assert.True(frames[7].Memory.Span.SequenceEqual(frames[7].Span));

        foreach (var f in frames.Take(10)) arena.Return(f);
        var again = Enumerable.Range(0, 10).Select(_ => arena.Rent(zeroed: true)).ToList();
        Assert.All(again, f => Assert.All(f.Span.ToArray(), b => Assert.Equal(0, b)));
        Assert.Equal(2L * PageArena.ChunkBytes, arena.BytesReserved); // reused, not new memory
        var dirty = arena.Rent(zeroed: false);
        Assert.Equal(601, arena.FramesInUse);
        arena.Return(dirty);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void FreeChunksGoBackBeyondTheSpareAllowance(int spareChunks)
    {
        using var arena = new PageArena(4096, spareChunks * (long)PageArena.ChunkBytes);
        int per = arena.FramesPerChunk;
        var frames = Enumerable.Range(0, per * 4).Select(_ => arena.Rent(zeroed: false)).ToList();
        Assert.Equal(4L * PageArena.ChunkBytes, arena.BytesReserved);
        foreach (var f in frames) arena.Return(f);
        Assert.Equal(0, arena.FramesInUse);
        Assert.Equal((long)spareChunks * PageArena.ChunkBytes, arena.BytesReserved);
        // Spares are used before new memory, and become spares again.
        frames = Enumerable.Range(0, per * spareChunks).Select(_ => arena.Rent(zeroed: false)).ToList();
        Assert.Equal((long)spareChunks * PageArena.ChunkBytes, arena.BytesReserved);
        frames.Add(arena.Rent(zeroed: false));
        Assert.Equal((spareChunks + 1L) * PageArena.ChunkBytes, arena.BytesReserved);
        foreach (var f in frames) arena.Return(f);
        Assert.Equal((long)spareChunks * PageArena.ChunkBytes, arena.BytesReserved);
    }

    [Fact]
    public void NewPagesOverRecycledFramesReadAsZerosOutsideWhatWasWritten()
    {
        // Fill the cache with a pattern, write it back and drop it so that its frames are free
        // and dirty; then partial writes into new pages must not show the old bytes.
        var dev = NewDevice(64UL << 20);
        using var fs = Mount(dev, new MountOptions { CommitIntervalMs = 0 });
        var pattern = Enumerable.Repeat((byte)0xAB, 4 << 20).ToArray();
        CreateFile(fs, Filesystem.RootIno, "old", pattern);
        Ok(fs.Sync());
        Assert.True(fs.DropIdleMappings() >= 1);

        ulong b = CreateFile(fs, Filesystem.RootIno, "new");
        Ok(fs.Write(b, 100, new byte[] { 1, 2, 3 }, out _));       // partial first page
        Ok(fs.Write(b, 3 * 4096 + 7, new byte[] { 9 }, out _));     // partial page after a hole
        Ok(fs.Truncate(b, 5 * 4096));                                // a tail of pages never written
        var got = ReadAll(fs, b);
        var want = new byte[5 * 4096];
        want[100] = 1; want[101] = 2; want[102] = 3; want[3 * 4096 + 7] = 9;
        Assert.Equal(want, got);
        Ok(fs.Sync());
        fs.DropIdleMappings();
        Assert.Equal(want, ReadAll(fs, b));
        Assert.Equal(pattern, ReadAll(fs, fs.Lookup(Filesystem.RootIno, "old", out var a) == Reservoir.Common.Errno.OK ? a.Ino : 0));
    }
}

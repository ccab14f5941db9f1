using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Format;
using Reservoir.Stress;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>
/// Damaged images (bit flips in superblocks and tree nodes, nodes swapped for others, truncated
/// files) must produce a clear FsException or fsck finding: never another exception type,
/// never a hang.
/// </summary>
public class CorruptionTests
{
    private static MemoryBlockDevice Populated(out List<ulong> nodes)
    {
        var dev = NewDevice(32UL << 20, 4096);
        using (var fs = Mount(dev))
        {
            var rng = new Random(3);
            for (int i = 0; i < 40; i++)
            {
                ulong dir = Filesystem.RootIno;
                if (i % 5 == 0) { Ok(fs.Mkdir(Filesystem.RootIno, "d" + i, 0x1ED, 0, 0, out var d)); dir = d.Ino; }
                var data = new byte[rng.Next(1, 30_000)];
                rng.NextBytes(data);
                CreateFile(fs, dir, "f" + i, data);
                Ok(fs.SetXattr(Filesystem.RootIno, "user.x" + i, data.AsSpan(0, Math.Min(100, data.Length))));
            }
        }
        using (var fs = Mount(dev, new() { ReadOnly = true, CommitIntervalMs = 0 }))
            nodes = TreeDump.Trees.SelectMany(t => TreeDump.Nodes(fs, t.Id)).Select(n => n.Bytenr).ToList();
        return dev;
    }

    /// <summary>fsck, repair, mount and a full walk, tree dump: only FsException may come out,
    /// within 30 s (the fuzzer's consumer, `reservoir fuzz`).</summary>
    private static void Exercise(MemoryBlockDevice dev)
    {
        var problem = ImageFuzzer.Exercise(dev, TimeSpan.FromSeconds(30), out _);
        Assert.True(problem == null, problem);
    }

    /// <summary>The fuzzer over every kind of damage, including stale nodes from an older
    /// generation and trees looping back on themselves with valid checksums (a loop once made
    /// the mount fail with an index out of range: a cached node was not checked for the level
    /// its new parent expected). Real damage is always reported.</summary>
    [Fact]
    public void FuzzedImagesGetAClearAnswerFromEveryTool()
    {
        var r = ImageFuzzer.Run(seed: 21, count: 12, TimeSpan.FromSeconds(30));
        Assert.True(r.Ok, string.Join("\n", r.Failures.Take(10)));
        foreach (var kind in new[] { "bitflip", "swap", "stale", "loop", "truncate" })
            Assert.True(r.Images.GetValueOrDefault(kind) > 0 && r.Detected.GetValueOrDefault(kind) == r.Images[kind],
                $"{kind}: {r.Detected.GetValueOrDefault(kind)} of {r.Images.GetValueOrDefault(kind)} damaged images reported");
    }

    [Fact]
    public void BitFlipsInTreeNodesAreCaught()
    {
        var clean = Populated(out var nodes);
        var rng = new Random(11);
        int found = 0;
        for (int i = 0; i < 150; i++)
        {
            var dev = clean.Clone();
            ulong node = nodes[rng.Next(nodes.Count)];
            var b = new byte[1];
            ulong at = node + (ulong)rng.Next(4096);
            dev.Read(at, b);
            b[0] ^= (byte)(1 << rng.Next(8));
            dev.Write(at, b);
            var report = Fsck.Run(dev);
            // Every byte of a node is under its checksum: a flip is always reported.
            Assert.True(!report.Clean, $"flip at {at} in node {node} went unnoticed");
            found++;
            Exercise(dev);
        }
        Assert.Equal(150, found);
    }

    [Fact]
    public void SwappedNodesAreCaught()
    {
        var clean = Populated(out var nodes);
        var rng = new Random(12);
        for (int i = 0; i < 40; i++)
        {
            var dev = clean.Clone();
            ulong a = nodes[rng.Next(nodes.Count)], b = nodes[rng.Next(nodes.Count)];
            if (a == b) continue;
            var buf = new byte[4096];
            dev.Read(b, buf);
            dev.Write(a, buf); // a valid node, at the wrong address
            Assert.False(Fsck.Run(dev).Clean);
            Exercise(dev);
        }
    }

    [Fact]
    public void DamagedPrimarySuperblockFallsBackToACopy()
    {
        var dev = Populated(out _);
        var junk = new byte[512];
        new Random(1).NextBytes(junk);
        dev.Write(FormatConstants.SuperblockOffsets[0] + 100, junk);
        var report = Fsck.Run(dev);
        Assert.True(report.Clean, string.Join("\n", report.Errors));
        Assert.Contains(report.Findings, f => f.Kind == FindingKind.Notice && f.Message.Contains("checksum"));
        using var fs = Mount(dev, new() { ReadOnly = true, CommitIntervalMs = 0 });
        Ok(fs.Lookup(Filesystem.RootIno, "f1", out _));
        Assert.Contains(fs.Warnings, w => w.Contains("superblock copy at 65536"));
    }

    [Fact]
    public void AllSuperblocksDamagedGivesAClearError()
    {
        var dev = Populated(out _);
        foreach (var off in FormatConstants.SuperblockOffsets.Where(o => o < dev.Size))
            dev.Write(off + 64, new byte[] { 0xFF, 0xEE });
        var ex = Assert.Throws<FsException>(() => Mount(dev));
        Assert.Contains("not a valid Reservoir filesystem", ex.Message);
        var report = Fsck.Run(dev);
        Assert.Equal(8, report.ExitCode);
        Exercise(dev);
    }

    [Fact]
    public void RandomFlipsAnywhereNeverCrash()
    {
        var clean = Populated(out _);
        var rng = new Random(13);
        for (int i = 0; i < 60; i++)
        {
            var dev = clean.Clone();
            for (int j = 0; j < 20; j++)
            {
                ulong at = (ulong)rng.NextInt64(0, (long)Math.Min(dev.Size, 12UL << 20));
                dev.Write(at, new[] { (byte)rng.Next(256) });
            }
            Exercise(dev);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4096)]
    [InlineData(70_000)]
    [InlineData(300_000)]
    [InlineData(9_000_000)]
    [InlineData(20_000_000)]
    public void TruncatedImagesGiveAClearError(int length)
    {
        var clean = Populated(out _);
        var dev = new MemoryBlockDevice((ulong)length);
        var buf = new byte[length];
        clean.Read(0, buf);
        if (length > 0) dev.Write(0, buf);
        var ex = Assert.Throws<FsException>(() => Mount(dev));
        Assert.False(string.IsNullOrWhiteSpace(ex.Message));
        Assert.Equal(8, Fsck.Run(dev).ExitCode);
    }
}

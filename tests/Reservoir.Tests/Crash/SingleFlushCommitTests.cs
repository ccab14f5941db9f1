using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>
/// A commit writes its nodes and its superblock before one flush (SPEC.md §1), so a power cut
/// during that flush can leave any subset of them. Each torn state is built exactly here: the
/// mount must take the new commit only when all of it is on the device, and otherwise the one
/// before it, which the other primary superblock slot keeps.
/// </summary>
public class SingleFlushCommitTests
{
    private static readonly byte[] A = Bytes(1, 300_000), B = Bytes(2, 1 << 20);

    private static byte[] Bytes(int seed, int n)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static bool IsSuper(ulong off) => FormatConstants.SuperblockOffsets.Contains(off);

    /// <summary>File "a" committed and flushed; then "b" written and fsync'd, with the power cut
    /// at that fsync's flush. Returns the device, to build images from its unflushed writes.</summary>
    private static CrashSimDevice CutDuringACommitFlush(int nodeSize)
    {
        var dev = new CrashSimDevice(NewDevice(64UL << 20, nodeSize));
        var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }, new DataOptions { WritebackIntervalMs = 0 });
        CreateFile(fs, Filesystem.RootIno, "a", A);
        Ok(fs.Sync());
        ulong b = CreateFile(fs, Filesystem.RootIno, "b", B);
        dev.CutAtNextFlush = true;
        Assert.NotEqual(Errno.OK, fs.Fsync(b));
        try { fs.Dispose(); } catch (FsException) { }
        Assert.True(dev.PendingWrites > 0);
        return dev;
    }

    private static void AssertState(MemoryBlockDevice img, bool newCommit)
    {
        using (var fs = Mount(img))
        {
            Ok(fs.Lookup(Filesystem.RootIno, "a", out var a));
            Assert.Equal(A, ReadAll(fs, a.Ino));
            var e = fs.Lookup(Filesystem.RootIno, "b", out var b);
            if (newCommit)
            {
                Ok(e);
                Assert.Equal(B, ReadAll(fs, b.Ino));
                Assert.DoesNotContain(fs.Warnings, w => w.Contains("did not reach the device whole"));
            }
            else
            {
                Assert.Equal(Errno.ENOENT, e);
                Assert.Contains(fs.Warnings, w => w.Contains("did not reach the device whole"));
            }
        }
        FsckAssert.Clean(img);
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void EverythingOnTheDeviceGivesTheNewCommit(int nodeSize) =>
        AssertState(CutDuringACommitFlush(nodeSize).ImageAfterPowerCut((_, _) => true), newCommit: true);

    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void OnlyTheSuperblockOnTheDeviceGivesThePreviousCommit(int nodeSize) =>
        AssertState(CutDuringACommitFlush(nodeSize).ImageAfterPowerCut((off, _) => IsSuper(off)), newCommit: false);

    /// <summary>Every node and superblock landed, the file's data did not: the nodes alone are
    /// a valid tree, so only the data check against the new checksums can tell.</summary>
    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void NodesWithoutTheirDataGiveThePreviousCommit(int nodeSize) =>
        AssertState(CutDuringACommitFlush(nodeSize).ImageAfterPowerCut((off, len) => IsSuper(off) || len <= nodeSize), newCommit: false);

    /// <summary>One node of the new commit missing, whichever it is.</summary>
    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void AnyOneNodeMissingGivesThePreviousCommit(int nodeSize)
    {
        var dev = CutDuringACommitFlush(nodeSize);
        var nodeWrites = new List<ulong>();
        dev.ImageAfterPowerCut((off, len) => { if (len == nodeSize && !IsSuper(off)) nodeWrites.Add(off); return false; });
        Assert.NotEmpty(nodeWrites);
        foreach (var missing in nodeWrites)
            AssertState(dev.ImageAfterPowerCut((off, len) => off != missing || len != nodeSize), newCommit: false);
    }

    /// <summary>A commit that did reach the device, then a flipped bit in one of its blocks
    /// before the mount that checks it: the check fails as for a torn commit (a clear answer,
    /// the previous commit), never a crash or a damaged tree taken as whole.</summary>
    [Fact]
    public void ABitFlipInAnUncheckedCommitFallsBackCleanly()
    {
        var dev = CutDuringACommitFlush(4096);
        var whole = dev.ImageAfterPowerCut((_, _) => true);
        var nodeWrites = new List<ulong>();
        dev.ImageAfterPowerCut((off, len) => { if (len == 4096 && !IsSuper(off)) nodeWrites.Add(off); return false; });
        var rng = new Random(5);
        var b = new byte[1];
        for (int i = 0; i < 24; i++)
        {
            var img = whole.Clone();
            ulong at = nodeWrites[rng.Next(nodeWrites.Count)] + (ulong)rng.Next(4096);
            img.Read(at, b);
            b[0] ^= (byte)(1 << rng.Next(8));
            img.Write(at, b);
            AssertState(img, newCommit: false);
        }
    }

    [Fact]
    public void ACleanUnmountLeavesASuperblockThatNeedsNoCheck()
    {
        var dev = NewDevice();
        using (var fs = Mount(dev)) CreateFile(fs, Filesystem.RootIno, "a", A);
        var (sb, _) = Filesystem.ReadSuperblock(dev);
        Assert.Equal(0UL, sb.Incompat & Features.IncompatUnverifiedCommit);
        // The primary slots: the last commit's own copy, still marked, and the clean one.
        var buf = new byte[FormatConstants.SuperblockSize];
        var copies = FormatConstants.SuperblockOffsets.Take(2).Select(off =>
        {
            dev.Read(off, buf);
            return Superblock.TryRead(buf, off, out _)!;
        }).ToList();
        Assert.All(copies, c => Assert.Equal(sb.Generation, c.Generation));
        Assert.Single(copies, c => (c.Incompat & Features.IncompatUnverifiedCommit) != 0);
    }

    /// <summary>A torn commit, the mount that fell back from it, and a second commit torn the
    /// same way: the torn commit's superblock copies (backups the second one did not reach)
    /// must not be mistaken for the second commit's, nor overwrite the only whole commit.</summary>
    [Theory]
    [InlineData(4096)]
    [InlineData(16384)]
    public void ASecondTornCommitAfterAFallbackStillLeavesAWholeCommit(int nodeSize)
    {
        var first = CutDuringACommitFlush(nodeSize).ImageAfterPowerCut((off, _) => IsSuper(off));
        var dev = new CrashSimDevice(first);
        var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }, new DataOptions { WritebackIntervalMs = 0 });
        Assert.Contains(fs.Warnings, w => w.Contains("did not reach the device whole"));
        ulong c = CreateFile(fs, Filesystem.RootIno, "c", B);
        dev.CutAtNextFlush = true;
        Assert.NotEqual(Errno.OK, fs.Fsync(c));
        try { fs.Dispose(); } catch (FsException) { }
        // Only the primary slot the second commit wrote (not its backups), or only its backups.
        foreach (var keep in new Func<ulong, int, bool>[] { (off, _) => off < (1UL << 20) && IsSuper(off), (off, _) => off >= (1UL << 20) && IsSuper(off) })
        {
            var img = dev.ImageAfterPowerCut(keep);
            using (var m = Mount(img))
            {
                Ok(m.Lookup(Filesystem.RootIno, "a", out var a));
                Assert.Equal(A, ReadAll(m, a.Ino));
                Assert.Equal(Errno.ENOENT, m.Lookup(Filesystem.RootIno, "b", out _));
                Assert.Equal(Errno.ENOENT, m.Lookup(Filesystem.RootIno, "c", out _));
            }
            FsckAssert.Clean(img);
        }
        // With all of it on the device, the second commit is there whole.
        var whole = dev.ImageAfterPowerCut((_, _) => true);
        using (var m = Mount(whole))
        {
            Ok(m.Lookup(Filesystem.RootIno, "c", out var cc));
            Assert.Equal(B, ReadAll(m, cc.Ino));
        }
        FsckAssert.Clean(whole);
    }
}

using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Crash;

/// <summary>
/// The fsync log (SPEC.md §9): an fsync of a file changed only in its data writes one log block
/// and flushes, without a commit; a power cut right after it loses nothing the fsync promised,
/// whatever the unflushed writes after it did; changes the log does not carry make fsync commit.
/// </summary>
public class FsyncLogTests(ITestOutputHelper log)
{
    private static readonly MountOptions NoTimer = new() { CommitIntervalMs = 0 };
    private static readonly DataOptions NoFlusher = new() { WritebackIntervalMs = 0 };

    private static Filesystem MountSim(IBlockDevice dev, MountOptions? o = null) => Filesystem.Mount(dev, o ?? NoTimer, NoFlusher);

    /// <summary>The power goes after the last operation; every unflushed write is dropped or
    /// kept at random (8 images).</summary>
    private static IEnumerable<MemoryBlockDevice> AfterCut(CrashSimDevice dev)
    {
        for (int i = 0; i < 8; i++) yield return dev.ImageAfterPowerCut(new Random(i), tear: i % 2 == 1);
    }

    [Fact]
    public void AppendsMadeDurableByFsyncSurviveAPowerCutWithoutACommit()
    {
        var dev = new CrashSimDevice(NewDevice(48UL << 20, 16384));
        var expect = new byte[0];
        long commitsBefore, logWrites;
        using (var fs = MountSim(dev))
        {
            ulong ino = CreateFile(fs, Filesystem.RootIno, "wal", new byte[100]);
            Ok(fs.Sync());
            expect = new byte[100];
            commitsBefore = fs.Stats.Commits;
            long flushes = dev.Flushes;
            var rng = new Random(1);
            for (int i = 0; i < 20; i++)
            {
                var rec = new byte[rng.Next(1, 9000)];
                rng.NextBytes(rec);
                Ok(fs.Write(ino, (ulong)expect.Length, rec, out _));
                expect = Overlay(expect, expect.Length, rec);
                Ok(fs.Fsync(ino));
            }
            Assert.Equal(commitsBefore, fs.Stats.Commits); // not one commit
            logWrites = fs.Stats.FsyncLogWrites;
            Assert.Equal(20, logWrites);
            Assert.Equal(20, dev.Flushes - flushes); // one flush per fsync
            // Not fsynced: may or may not survive, must not disturb the rest.
            Ok(fs.Write(ino, (ulong)expect.Length, new byte[5000], out _));
            fs.Data.Writeback(fs.Data.MappingOf(Inode(fs, ino)), 0, ulong.MaxValue, wait: true);
            dev.CutAfterOps = dev.Ops;
            try { fs.Dispose(); } catch (FsException) { }
        }
        foreach (var img in AfterCut(dev))
        {
            FsckAssert.Clean(img); // the committed state, log not yet applied
            var report = Reservoir.Engine.Check.Fsck.Run(img);
            Assert.Contains(report.Findings, f => f.Kind == Reservoir.Engine.Check.FindingKind.Notice && f.Message.StartsWith("20 record(s)"));
            using (var fs2 = MountSim(img))
            {
                Assert.Equal(20, fs2.Stats.LogRecordsReplayed);
                Ok(fs2.Lookup(Filesystem.RootIno, "wal", out var a));
                Assert.Equal(expect, ReadAll(fs2, a.Ino));
            }
            FsckAssert.Clean(img);
        }
        log.WriteLine($"{logWrites} fsyncs through the log, {commitsBefore} commits before them");
    }

    private static Reservoir.Engine.Inodes.Inode Inode(Filesystem fs, ulong ino)
    {
        Ok(fs.Get(ino, out var inode));
        fs.Put(inode);
        return inode;
    }

    /// <summary>Random writes (overwrites inside and across extents, appends, writes past the
    /// end leaving holes) on two files in a snapshotted subvolume with quotas on, each followed
    /// by an fsync of the file written; the power goes after the last fsync. The files must read
    /// as they were at their last fsync, and fsck (with its qgroup recount) must be clean after
    /// the replay.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void RandomOverwritesReplayExactlyWithSnapshotsAndQuotas(int seed)
    {
        var dev = new CrashSimDevice(NewDevice(64UL << 20, 4096));
        var rng = new Random(seed);
        var expect = new Dictionary<string, byte[]>();
        var ino = new Dictionary<string, ulong>();
        ulong subvol;
        using (var fs = MountSim(dev))
        {
            Ok(fs.EnableQuota());
            Ok(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
            subvol = sv.Ino;
            foreach (var name in new[] { "a", "b" })
            {
                var data = new byte[rng.Next(0, 300_000)];
                rng.NextBytes(data);
                ino[name] = CreateFile(fs, subvol, name, data);
                expect[name] = data;
            }
            Ok(fs.Sync());
            Ok(fs.CreateSnapshot(subvol, Filesystem.RootIno, "snap", false, out _));
            Ok(fs.Sync());
            long commits = fs.Stats.Commits;
            for (int step = 0; step < 40; step++)
            {
                string name = rng.Next(2) == 0 ? "a" : "b";
                var cur = expect[name];
                int at = rng.Next(4) switch
                {
                    0 => cur.Length,                                  // append
                    1 => cur.Length + rng.Next(1, 100_000),           // past the end: a hole
                    _ => cur.Length == 0 ? 0 : rng.Next(cur.Length),  // overwrite
                };
                var data = new byte[rng.Next(1, rng.Next(2) == 0 ? 5000 : 150_000)];
                rng.NextBytes(data);
                Ok(fs.Write(ino[name], (ulong)at, data, out _));
                expect[name] = Overlay(cur, at, data);
                Ok(fs.Fsync(ino[name]));
            }
            Assert.Equal(commits, fs.Stats.Commits);
            Assert.Equal(40, fs.Stats.FsyncLogWrites);
            dev.CutAfterOps = dev.Ops;
            try { fs.Dispose(); } catch (FsException) { }
        }
        foreach (var img in AfterCut(dev).Take(3))
        {
            using (var fs2 = MountSim(img))
            {
                Assert.Equal(40, fs2.Stats.LogRecordsReplayed);
                Ok(fs2.Lookup(Filesystem.RootIno, "sv", out var sv));
                foreach (var (name, data) in expect)
                {
                    Ok(fs2.Lookup(sv.Ino, name, out var a));
                    Assert.Equal(data, ReadAll(fs2, a.Ino));
                }
                Assert.Equal(0, fs2.LeakedBytes);
            }
            FsckAssert.Clean(img);
        }
    }

    /// <summary>A name, an xattr, a truncate, fallocate or a clone into the file is not in the
    /// log: the fsync after one commits (and so the change survives the cut too). A write
    /// alone does not commit. (Were any of these logged, the replay would put back an inode
    /// item whose link count, size or extents disagree with the committed tree: fsck fails.)</summary>
    [Theory]
    [InlineData("write", false)]
    [InlineData("link", true)]
    [InlineData("rename", true)]
    [InlineData("setxattr", true)]
    [InlineData("truncate", true)]
    [InlineData("fallocate", true)]
    [InlineData("punch", true)]
    [InlineData("clone", true)]
    [InlineData("new-file", true)]
    public void ChangesTheLogDoesNotCarryMakeFsyncCommit(string op, bool commits)
    {
        var dev = new CrashSimDevice(NewDevice(48UL << 20, 4096));
        ulong f;
        using (var fs = MountSim(dev))
        {
            f = CreateFile(fs, Filesystem.RootIno, "f", new byte[64 << 10]);
            ulong other = CreateFile(fs, Filesystem.RootIno, "other", Enumerable.Repeat((byte)7, 32 << 10).ToArray());
            Ok(fs.Sync());
            long before = fs.Stats.Commits;
            switch (op)
            {
                case "write": Ok(fs.Write(f, 4096, new byte[] { 1, 2, 3 }, out _)); break;
                case "link": Ok(fs.Link(f, Filesystem.RootIno, "f2", out _)); break;
                case "rename": Ok(fs.Rename(Filesystem.RootIno, "f", Filesystem.RootIno, "g")); break;
                case "setxattr": Ok(fs.SetXattr(f, "user.k", "v"u8)); break;
                case "truncate": Ok(fs.Truncate(f, 5000)); break;
                case "fallocate": Ok(fs.Fallocate(f, FallocateMode.KeepSize, 1 << 20, 1 << 20)); break;
                case "punch": Ok(fs.Fallocate(f, FallocateMode.PunchHole | FallocateMode.KeepSize, 8192, 16384)); break;
                case "clone": Ok(fs.CloneRange(other, 0, f, 0, 32 << 10)); break;
                case "new-file": f = CreateFile(fs, Filesystem.RootIno, "new", new byte[10]); break;
            }
            Ok(fs.Fsync(f));
            Assert.Equal(commits ? before + 1 : before, fs.Stats.Commits);
            Assert.Equal(commits ? 0 : 1, fs.Stats.FsyncLogWrites);
            dev.CutAfterOps = dev.Ops;
            try { fs.Dispose(); } catch (FsException) { }
        }
        foreach (var img in AfterCut(dev).Take(2))
        {
            using (var fs2 = MountSim(img))
            {
                string name = op switch { "rename" => "g", "new-file" => "new", _ => "f" };
                Ok(fs2.Lookup(Filesystem.RootIno, name, out var a), $"{name} after {op}");
                Ok(fs2.GetAttr(a.Ino, out var attr));
                ulong want = op switch { "truncate" => 5000, "new-file" => 10, _ => 64 << 10 };
                Assert.Equal(want, attr.Size);
                if (op == "link") Assert.Equal(2u, attr.Nlink);
            }
            FsckAssert.Clean(img);
        }
    }

    /// <summary>The power goes during an fsync's flush. If its log block landed but its data
    /// did not, the record must not be replayed (its fsync never returned): the file reads as
    /// at the fsync before. If the log block is torn, likewise. Both ways fsck is clean.</summary>
    [Theory]
    [InlineData("data-lost")]
    [InlineData("log-torn")]
    [InlineData("all-landed")]
    public void AnFsyncCutDuringItsFlushIsReplayedOnlyIfWhole(string how)
    {
        var dev = new CrashSimDevice(NewDevice(48UL << 20, 4096));
        byte[] before, after;
        IReadOnlyList<BlockGroupInfo> groups;
        using (var fs = MountSim(dev))
        {
            var p0 = Enumerable.Range(0, 100_000).Select(i => (byte)i).ToArray();
            ulong f = CreateFile(fs, Filesystem.RootIno, "f", p0);
            Ok(fs.Sync());
            // Eight pages apart from each other: eight extents, a record of several sectors.
            byte[] Change(byte[] cur, int shift, byte fill)
            {
                for (int i = 0; i < 8; i++)
                {
                    var chunk = Enumerable.Repeat(fill, 300).ToArray();
                    Ok(fs.Write(f, (ulong)(i * 12288 + shift), chunk, out _));
                    cur = Overlay(cur, i * 12288 + shift, chunk);
                }
                return cur;
            }
            before = Change(p0, 0, 0x11);
            Ok(fs.Fsync(f)); // logged and flushed
            after = Change(before, 4096, 0xAB);
            dev.CutAtNextFlush = true;
            Assert.NotEqual(Errno.OK, fs.Fsync(f));
            groups = fs.BlockGroups();
            try { fs.Dispose(); } catch (FsException) { }
        }
        bool InMeta(ulong off) => groups.Any(g => g.Type == "metadata" && off >= g.Start && off < g.Start + g.Length);
        Assert.True(dev.PendingWrites >= 2, $"{dev.PendingWrites} writes pending at the cut");
        var img = how switch
        {
            "data-lost" => dev.ImageAfterPowerCut((off, len) => InMeta(off)),
            "log-torn" => TornLog(dev, InMeta),
            _ => dev.ImageAfterPowerCut((_, _) => true),
        };
        using (var fs2 = MountSim(img))
        {
            Ok(fs2.Lookup(Filesystem.RootIno, "f", out var a));
            Assert.Equal(how == "all-landed" ? after : before, ReadAll(fs2, a.Ino));
            Assert.Equal(how == "all-landed" ? 2 : 1, fs2.Stats.LogRecordsReplayed);
        }
        FsckAssert.Clean(img);
    }

    private static MemoryBlockDevice TornLog(CrashSimDevice dev, Func<ulong, bool> inMeta)
    {
        // Every write lands except the log block, of which only the first sector does.
        var img = dev.ImageAfterPowerCut((off, _) => !inMeta(off));
        var whole = dev.ImageNow();
        var sector = new byte[512];
        var torn = dev.ImageAfterPowerCut((off, _) => inMeta(off));
        foreach (var off in Enumerable.Range(0, (int)(img.Size / 4096)).Select(i => (ulong)i * 4096).Where(inMeta))
        {
            var a = new byte[4096]; var b = new byte[4096];
            torn.Read(off, a); dev.DurableImage().Read(off, b);
            if (a.AsSpan().SequenceEqual(b)) continue;
            whole.Read(off, sector);
            img.Write(off, sector);
        }
        return img;
    }

    /// <summary>A log block checksummed whole but made to lie (an extent item naming space past
    /// the end of the device): the mount says so and stops the replay there, fsck stays
    /// clean, and the file shows its committed state.</summary>
    [Fact]
    public void ACraftedLogRecordStopsTheReplayNotTheMount()
    {
        var dev = new CrashSimDevice(NewDevice(48UL << 20, 4096));
        var committed = Enumerable.Repeat((byte)5, 8192).ToArray();
        using (var fs = MountSim(dev))
        {
            ulong f = CreateFile(fs, Filesystem.RootIno, "f", committed);
            Ok(fs.Sync());
            Ok(fs.Write(f, 0, Enumerable.Repeat((byte)9, 4096).ToArray(), out _));
            Ok(fs.Fsync(f));
            Assert.Equal(1, fs.Stats.FsyncLogWrites);
            dev.CutAfterOps = dev.Ops;
            try { fs.Dispose(); } catch (FsException) { }
        }
        var img = dev.DurableImage();
        var (sb, _) = Filesystem.ReadSuperblock(img);
        var block = new byte[sb.NodeSize];
        img.Read(sb.LogStart, block);
        Assert.True(Reservoir.Format.LogBlock.TryRead(block, sb.Fsid, sb.Generation, 0, out ulong next, out int len, out _, out _));
        var rec = Reservoir.Format.LogInodeRecord.TryRead(block.AsSpan(Reservoir.Format.LogBlock.HeaderSize, len - Reservoir.Format.LogBlock.HeaderSize), out _, out _)!;
        var (pos, fe) = rec.Extents[0];
        fe.DiskBytenr = sb.TotalBytes + (1UL << 20);
        rec.Extents[0] = (pos, fe);
        Array.Clear(block);
        int l2 = Reservoir.Format.LogBlock.HeaderSize + rec.Write(block.AsSpan(Reservoir.Format.LogBlock.HeaderSize));
        Reservoir.Format.LogBlock.WriteHeader(block, sb.Fsid, sb.Generation, 0, next, l2, 1);
        img.Write(sb.LogStart, block);
        using (var fs2 = MountSim(img))
        {
            Assert.Contains(fs2.Warnings, w => w.Contains("not replayed") && w.Contains("does not fit"));
            Assert.Equal(0, fs2.Stats.LogRecordsReplayed);
            Ok(fs2.Lookup(Filesystem.RootIno, "f", out var a));
            Assert.Equal(committed, ReadAll(fs2, a.Ino));
        }
        FsckAssert.Clean(img);
    }

    [Fact]
    public void WithTheLogOffEveryFsyncCommits()
    {
        var dev = NewDevice(48UL << 20, 4096);
        using var fs = MountSim(dev, new MountOptions { CommitIntervalMs = 0, FsyncLog = false });
        ulong f = CreateFile(fs, Filesystem.RootIno, "f", new byte[10]);
        Ok(fs.Sync());
        long c = fs.Stats.Commits;
        Ok(fs.Write(f, 10, new byte[10], out _));
        Ok(fs.Fsync(f));
        Assert.Equal(c + 1, fs.Stats.Commits);
        Assert.Equal(0, fs.Stats.FsyncLogWrites);
    }
}

using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Common;
using Reservoir.Format;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>
/// Incremental send against random changes: a subvolume is filled at random and snapshotted,
/// changed at random (renames over names and across directories, swaps, directories moved into
/// others, deletions of files and whole directories, new files, writes, truncations, holes,
/// links added and removed, modes, owners, xattrs, times) and snapshotted again, three rounds,
/// the image remounted between them (so freed inode numbers are handed out again). One image
/// receives the full stream of the first snapshot and then each incremental stream; every
/// received snapshot must equal its source: names, types, modes, owners, sizes, mtimes, link
/// targets, device numbers, xattrs, hard links and every byte.
/// </summary>
public sealed class IncrementalSendTests
{
    private const int Rounds = 3;
    private static readonly string[] Names = ["a", "b", "c", "d", "e", "f", "g", "h"];

    private sealed class Changer(ReservoirFileSystem fs, Random rng)
    {
        private PosixApi P => fs.Posix;

        /// <summary>Whether the name exists (a dangling symbolic link too).</summary>
        private bool Has(string path) => P.Lstat(path, out _) == Errno.OK;

        /// <summary>Every path under /sv, directories and the rest.</summary>
        private (List<string> Dirs, List<string> Others) Tree()
        {
            var dirs = new List<string> { "/sv" };
            var others = new List<string>();
            for (int i = 0; i < dirs.Count; i++)
                foreach (var e in fs.EnumerateEntries(dirs[i]))
                    (e.IsDirectory ? dirs : others).Add(e.Path);
            return (dirs, others);
        }

        private T Pick<T>(List<T> l) => l[rng.Next(l.Count)];
        private string NewName(string dir) => dir + "/" + Pick([.. Names]) + (rng.Next(3) == 0 ? "x" : "");

        private byte[] Bytes(int n)
        {
            var b = new byte[n];
            rng.NextBytes(b);
            if (rng.Next(3) == 0) Array.Fill(b, (byte)rng.Next(3)); // runs of one byte, zeros among them
            return b;
        }

        private void Write(string path, long at, byte[] data)
        {
            using var s = fs.OpenFile(path, FileMode.Open, FileAccess.Write);
            s.Seek(at, SeekOrigin.Begin);
            s.Write(data);
        }

        public void Step()
        {
            var (dirs, others) = Tree();
            string dir = Pick(dirs);
            string? any = others.Count > 0 ? Pick(others) : null;
            switch (rng.Next(18))
            {
                case 0 or 1:
                {
                    string p = NewName(dir);
                    if (Has(p)) return;
                    fs.WriteAllBytes(p, Bytes(rng.Next(4) == 0 ? rng.Next(200_000) : rng.Next(6000)));
                    if (rng.Next(4) == 0) Write(p, 300_000 + rng.Next(100_000), Bytes(rng.Next(1, 9000))); // a hole before it
                    break;
                }
                case 2:
                    if (!Has(NewName(dir))) fs.CreateDirectory(NewName(dir) is var d && !Has(d) ? d : dir + "/new");
                    break;
                case 3:
                {
                    string p = NewName(dir);
                    if (Has(p)) return;
                    if (rng.Next(2) == 0) fs.CreateSymbolicLink(p, Pick([.. Names]));
                    else TestFs.Ok(P.Mknod(p, 0x1000 | 0x1A4));
                    break;
                }
                case 4 when any != null && fs.GetInfo(any).IsFile:
                {
                    string p = NewName(dir);
                    if (!Has(p)) fs.CreateHardLink(p, any);
                    break;
                }
                case 5 or 6:
                {
                    // Rename anything anywhere, over a non-directory of its kind where one is.
                    string from = rng.Next(3) == 0 && dirs.Count > 1 ? Pick(dirs.Skip(1).ToList()) : any ?? dir;
                    if (from == "/sv") return;
                    string to = NewName(dir);
                    bool isDir = fs.GetInfo(from).IsDirectory;
                    if (isDir && (to + "/").StartsWith(from + "/", StringComparison.Ordinal)) return;
                    if (Has(to) && (isDir || fs.GetInfo(to).IsDirectory)) return;
                    TestFs.Ok(P.Rename(from, to), $"rename {from} {to}");
                    break;
                }
                case 7 when others.Count > 1:
                {
                    // Swap two names through a third.
                    string x = Pick(others), y = Pick(others);
                    if (x == y || Has("/sv/tmp")) return;
                    TestFs.Ok(P.Rename(x, "/sv/tmp"));
                    TestFs.Ok(P.Rename(y, x));
                    TestFs.Ok(P.Rename("/sv/tmp", y));
                    break;
                }
                case 8 when any != null:
                    TestFs.Ok(P.Unlink(any));
                    break;
                case 9 when dirs.Count > 1 && rng.Next(3) == 0:
                    fs.Delete(Pick(dirs.Skip(1).ToList()), recursive: true);
                    break;
                case 10 or 11 when any != null && fs.GetInfo(any).IsFile:
                {
                    long size = fs.GetInfo(any).Length;
                    switch (rng.Next(3))
                    {
                        case 0: Write(any, rng.NextInt64(size + 1), Bytes(rng.Next(1, 70_000))); break;
                        case 1: TestFs.Ok(P.Truncate(any, (ulong)rng.NextInt64(size + 100_000))); break;
                        default: Write(any, size, Bytes(rng.Next(1, 5000))); break;
                    }
                    break;
                }
                case 12 when any != null && !fs.GetInfo(any).IsSymlink:
                    TestFs.Ok(P.Chmod(any, (uint)rng.Next(0x1000) | (rng.Next(4) == 0 ? 0x800u : 0)));
                    break;
                case 13:
                {
                    // lchown: a symbolic link's own owner
                    var req = new Reservoir.Engine.SetAttrRequest { Mask = Reservoir.Engine.SetAttrMask.Uid | Reservoir.Engine.SetAttrMask.Gid, Uid = (uint)rng.Next(3) * 1000, Gid = (uint)rng.Next(3) * 1000 };
                    TestFs.Ok(fs.Engine.SetAttr(fs.GetInfo(any ?? dir).Attr.Ino, req, out _));
                    break;
                }
                case 14:
                {
                    string p = any ?? dir;
                    if (fs.GetInfo(p).IsSymlink) return;
                    if (rng.Next(3) == 0) P.RemoveXattr(p, "user." + Pick([.. Names]));
                    else TestFs.Ok(P.SetXattr(p, "user." + Pick([.. Names]), Bytes(rng.Next(0, 40))));
                    break;
                }
                case 15 when any != null && fs.GetInfo(any).IsFile:
                {
                    // A reflink of a whole file, or of a block-aligned range into another file.
                    string p = NewName(dir);
                    if (rng.Next(2) == 0) { if (!Has(p)) fs.CloneFile(any, p); }
                    else if (others.FirstOrDefault(o => o != any && fs.GetInfo(o).IsFile) is { } other)
                    {
                        ulong len = (ulong)fs.GetInfo(any).Length / 4096 * 4096;
                        // EINVAL as FICLONERANGE answers it: inline data, or two names of one file.
                        if (len > 0 && P.CloneRange(any, 0, other, (ulong)rng.Next(4) * 4096, len) is var e && e is not (Errno.OK or Errno.EINVAL))
                            TestFs.Ok(e, $"clone {any} {other}");
                    }
                    break;
                }
                case 16 when any != null && fs.GetInfo(any).IsFile:
                {
                    // fallocate: preallocated (unwritten) ranges, in or past the size; holes
                    // punched; ranges zeroed.
                    var modes = new[] { Reservoir.Engine.Data.FallocateMode.Allocate, Reservoir.Engine.Data.FallocateMode.KeepSize,
                        Reservoir.Engine.Data.FallocateMode.PunchHole | Reservoir.Engine.Data.FallocateMode.KeepSize, Reservoir.Engine.Data.FallocateMode.ZeroRange };
                    long size = fs.GetInfo(any).Length;
                    ulong off = (ulong)rng.NextInt64(size + 8192), len = (ulong)rng.Next(1, 100_000);
                    var e = fs.Engine.Fallocate(fs.GetInfo(any).Attr.Ino, modes[rng.Next(modes.Length)], off, len);
                    if (e is not (Errno.OK or Errno.ENOSPC)) TestFs.Ok(e, $"fallocate {any}");
                    break;
                }
                default:
                {
                    string p = any ?? dir;
                    if (!fs.GetInfo(p).IsSymlink)
                        TestFs.Ok(P.Utimens(p, new Timespec(rng.Next(), (uint)rng.Next(999_999_999)), new Timespec(rng.Next(), (uint)rng.Next(999_999_999))));
                    break;
                }
            }
        }
    }

    /// <summary>A source that hides its <see cref="IChangeTrackingSource"/> side, so that the
    /// send walks both snapshots whole (as through sources that cannot tell what changed).</summary>
    private sealed class WalkedWhole(ISendSource s) : ISendSource
    {
        public SendStat Lstat(string path) => s.Lstat(path);
        public IReadOnlyList<string> List(string dir) => s.List(dir);
        public string ReadLink(string path) => s.ReadLink(path);
        public IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path) => s.Xattrs(path);
        public ISendFile Open(string path) => s.Open(path);
    }

    private static byte[] Send(ReservoirFileSystem fs, string snap, string? parent, bool walkWhole = false, int version = 1)
    {
        ISendSource Source(string at) => walkWhole ? new WalkedWhole(new ImageSendSource(fs, at)) : new ImageSendSource(fs, at);
        var subs = fs.ListSubvolumes();
        var info = subs.Single(s => "/" + s.Path == snap);
        var ms = new MemoryStream();
        if (parent == null) FullSend.Run(new ImageSendSource(fs, snap), snap.TrimStart('/'), info.Uuid, info.Generation, ms, options: new(version));
        else
        {
            var p = subs.Single(s => "/" + s.Path == parent);
            IncrementalSend.Run(Source(snap), snap.TrimStart('/'), info.Uuid, info.Generation,
                Source(parent), p.Uuid, p.Generation, ms, options: new(version));
        }
        return ms.ToArray();
    }

    /// <summary>The source snapshot and the received one, compared whole (atimes aside: a
    /// send carries the times of what changed, and reads between snapshots move only atimes).</summary>
    private static int AssertSame(ReservoirFileSystem from, ReservoirFileSystem to, string snap, string what)
    {
        var a = SubvolumeListing.Walk(from, snap);
        var b = SubvolumeListing.Walk(to, snap);
        var la = a.Select(x => x with { Ino = 0, Atime = default, Mtime = x.Path.Length == 0 ? default : x.Mtime }).ToList();
        var lb = b.Select(x => x with { Ino = 0, Atime = default, Mtime = x.Path.Length == 0 ? default : x.Mtime }).ToList();
        Assert.True(la.SequenceEqual(lb), $"{what}: the received {snap} differs:\n" +
            string.Join("\n", la.Except(lb).Take(5).Select(x => "source:   " + x)) + "\n" + string.Join("\n", lb.Except(la).Take(5).Select(x => "received: " + x)));
        // Hard links: the same paths share an inode on both sides.
        static string Links(List<SubvolumeListing.Seen> l) => string.Join(";", l.Where(x => (x.Mode & 0xF000) != 0x4000).GroupBy(x => x.Ino)
            .Select(g => string.Join(",", g.Select(x => x.Path).Order(StringComparer.Ordinal))).Order(StringComparer.Ordinal));
        Assert.Equal(Links(a), Links(b));
        foreach (var f in a.Where(x => (x.Mode & 0xF000) == 0x8000))
            Assert.True(from.ReadAllBytes(snap + "/" + f.Path).AsSpan().SequenceEqual(to.ReadAllBytes(snap + "/" + f.Path)), $"{what}: {snap}/{f.Path}'s data differs");
        return a.Count;
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void ReceivedSnapshotsEqualTheirSourcesAfterRandomChanges(int seed, bool walkWhole, int version)
    {
        var rng = new Random(seed);
        var source = TestFs.NewDevice(256UL << 20);
        var target = TestFs.NewDevice(256UL << 20);
        var opts = new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 };
        var streams = new List<byte[]>();
        int compared = 0;
        var fs = ReservoirFileSystem.Open(source, opts);
        try
        {
            fs.CreateSubvolume("/sv");
            var ch = new Changer(fs, rng);
            for (int i = 0; i < 60; i++) ch.Step();
            fs.CreateSnapshot("/sv", "/s0", readOnly: true);
            streams.Add(Send(fs, "/s0", null, version: version));
            for (int round = 1; round <= Rounds; round++)
            {
                fs.Dispose(); // remounted: inode numbers freed at the end are handed out again
                fs = ReservoirFileSystem.Open(source, opts);
                ch = new Changer(fs, rng);
                for (int i = 0; i < 25; i++) ch.Step();
                fs.CreateSnapshot("/sv", $"/s{round}", readOnly: true);
                streams.Add(Send(fs, $"/s{round}", $"/s{round - 1}", walkWhole, version));
            }

            using var to = ReservoirFileSystem.Open(target, opts);
            for (int round = 0; round <= Rounds; round++)
            {
                Receiver.Run(new MemoryStream(streams[round]), new ImageReceiveTarget(to, "/"));
                compared += AssertSame(fs, to, $"/s{round}", $"seed {seed}, round {round}");
            }
            // The earlier snapshots are as they were received.
            for (int round = 0; round < Rounds; round++) AssertSame(fs, to, $"/s{round}", $"seed {seed}, after all rounds");
        }
        finally { fs.Dispose(); }
        // Random deletions may empty a round's tree (only its root left): not the whole run.
        Assert.True(compared > 2 * (Rounds + 1), $"seed {seed}: only {compared} inodes compared in {Rounds + 1} snapshots");
        FsckAssert.Clean(source);
        FsckAssert.Clean(target);
    }

    /// <summary>A change-tracking source that counts what the send asks of it.</summary>
    private sealed class Counted(ImageSendSource s) : IChangeTrackingSource
    {
        public int Stats, Lists, Names;
        public SendStat Lstat(string path) { Stats++; return s.Lstat(path); }
        public IReadOnlyList<string> List(string dir) { Lists++; return s.List(dir); }
        public string ReadLink(string path) => s.ReadLink(path);
        public IReadOnlyList<(byte[] Name, byte[] Value)> Xattrs(string path) => s.Xattrs(path);
        public ISendFile Open(string path) => s.Open(path);
        public IReadOnlyCollection<ulong>? ChangedSince(ISendSource parent) => s.ChangedSince(((Counted)parent).Inner);
        public IReadOnlyList<(ulong Dir, string Name)> NamesOf(ulong ino) { Names++; return s.NamesOf(ino); }
        public IReadOnlyCollection<ulong>? InodesReferencing(ulong bytenr) => s.InodesReferencing(bytenr);
        public ImageSendSource Inner => s;
    }

    [Fact]
    public void AnIncrementalSendLooksAtWhatChangedNotAtEverything()
    {
        var source = TestFs.NewDevice(256UL << 20);
        var target = TestFs.NewDevice(256UL << 20);
        var opts = new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 };
        using var fs = ReservoirFileSystem.Open(source, opts);
        fs.CreateSubvolume("/sv");
        for (int d = 0; d < 10; d++)
        {
            fs.CreateDirectory($"/sv/d{d}");
            for (int f = 0; f < 200; f++) fs.WriteAllBytes($"/sv/d{d}/f{f}", new byte[f % 7 * 1000]);
        }
        fs.CreateSnapshot("/sv", "/s0", readOnly: true);
        fs.WriteAllBytes("/sv/d3/f17", [1, 2, 3]);
        fs.Move("/sv/d5/f2", "/sv/d6/moved");
        fs.WriteAllBytes("/sv/d7/new", new byte[5000]);
        fs.Posix.Chmod("/sv/d1", 0x1C0);
        fs.Move("/sv/d8", "/sv/d9/d8");
        fs.CloneFile("/sv/d2/f6", "/sv/d2/copy"); // an unchanged file's extent in a new file
        fs.CreateSnapshot("/sv", "/s1", readOnly: true);

        var subs = fs.ListSubvolumes();
        var (i0, i1) = (subs.Single(s => s.Path == "s0"), subs.Single(s => s.Path == "s1"));
        var (newer, older) = (new Counted(new ImageSendSource(fs, "/s1")), new Counted(new ImageSendSource(fs, "/s0")));
        var ms = new MemoryStream();
        var sum = IncrementalSend.Run(newer, "s1", i1.Uuid, i1.Generation, older, i0.Uuid, i0.Generation, ms);
        // The changed inodes (two files, two new ones, the directories around them) and the
        // directories above them, each once; the two root directories listed for orphan names;
        // the file the copy's extent came from, found by the extent's back-references. Walking
        // both snapshots would stat over 4,000 inodes.
        int asked = newer.Stats + older.Stats + newer.Lists + older.Lists;
        Assert.True(asked < 40, $"{newer.Stats} + {older.Stats} stats, {newer.Lists} + {older.Lists} listings, {newer.Names} + {older.Names} name lookups");
        Assert.Equal(2, newer.Lists + older.Lists);

        using var to = ReservoirFileSystem.Open(target, opts);
        Receiver.Run(new MemoryStream(Send(fs, "/s0", null)), new ImageReceiveTarget(to, "/"));
        Receiver.Run(new MemoryStream(ms.ToArray()), new ImageReceiveTarget(to, "/"));
        // 10 directories, 2,000 files, 2 new ones, the root.
        Assert.Equal(2013, AssertSame(fs, to, "/s1", "after the increment"));
        Assert.True(sum.Inodes <= 12, $"{sum.Inodes} inodes in the stream");
        // The copy went as a clone of d2/f6 in the parent: its 6,000 bytes but the last partial
        // block, which is written (a clone that does not reach the end of its file is whole
        // blocks).
        Assert.Equal(4096, sum.CloneBytes);
        Assert.Equal(to.DiskUsage("/s1/d2/f6").Shared.Single().Start, to.DiskUsage("/s1/d2/copy").Shared.Single().Start);
    }

    /// <summary>24 seeds reading only what the engine's tree comparison says changed, 8 of them
    /// again walking both snapshots whole, and 8 as version-2 streams (holes punched).</summary>
    public static IEnumerable<object[]> Seeds() =>
        Enumerable.Range(1, 24).Select(i => new object[] { i, false, 1 })
            .Concat(Enumerable.Range(1, 8).Select(i => new object[] { i, true, 1 }))
            .Concat(Enumerable.Range(1, 8).Select(i => new object[] { i, false, 2 }));
}

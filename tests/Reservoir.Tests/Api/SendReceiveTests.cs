using System.Text;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>
/// Send and receive in btrfs's stream format (version 1): a stream written by btrfs-progs
/// (Fixtures/btrfs-send-v1.stream, made as Fixtures/README.md says) is received into an image as
/// the tree that made it; a subvolume with every kind of inode survives send and receive; a
/// damaged, truncated or hostile stream is refused and leaves nothing behind.
/// </summary>
public sealed class SendReceiveTests
{
    private static string Fixture => Path.Combine(AppContext.BaseDirectory, "Fixtures", "btrfs-send-v1.stream");

    /// <summary>The fixture's first command, as btrfs wrote it: SUBVOL "fxs", ctransid 11 and
    /// the uuid in Fixtures/README.md. Writing the same command must give the same bytes, crc
    /// included (btrfs_crc32c(0, …): no inversions, unlike the usual CRC32C).</summary>
    [Fact]
    public void AFramedCommandIsByteForByteWhatBtrfsWrites()
    {
        byte[] theirs = File.ReadAllBytes(Fixture);
        byte[] uuid = Convert.FromHexString("9cd1eb75a11f3b4aa53eaa19c5ac9c20");
        var ms = new MemoryStream();
        new SendStreamWriter(ms).Begin(SendCommand.Subvol).Path(SendAttr.Path, "fxs").Uuid(SendAttr.Uuid, new Guid(uuid))
            .U64(SendAttr.Ctransid, 11).Finish();
        byte[] ours = ms.ToArray();
        Assert.Equal(17 + 10 + 39, ours.Length); // header; command header; 3 + 16 + 8 bytes of values, 4 per attribute
        Assert.Equal(theirs.AsSpan(0, ours.Length).ToArray(), ours);
    }

    /// <summary>btrfs's stream becomes the tree the fixture's commands made, down to the nanosecond,
    /// the hole, the hard link, the set-user-ID bit, the device number and the clone, which shares
    /// its source's extent here too.</summary>
    [Fact]
    public void AStreamFromBtrfsSendBecomesTheTreeItWasSentFrom()
    {
        var dev = TestFs.NewDevice(64UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateDirectory("/backup");
            List<ReceivedSubvolume> got;
            using (var input = File.OpenRead(Fixture))
                got = Receiver.Run(input, new ImageReceiveTarget(fs, "/backup"));
            Assert.Equal("fxs", Assert.Single(got).Name);
            Assert.Equal(new Guid(Convert.FromHexString("9cd1eb75a11f3b4aa53eaa19c5ac9c20")), got[0].Uuid);
            Assert.Equal(11UL, got[0].Ctransid);

            const string R = "/backup/fxs";
            Assert.Equal(["a", "cdev", "d", "empty", "ff", "orig", "sl", "sparse"], fs.EnumerateEntries(R).Select(e => e.Name).Order(StringComparer.Ordinal));
            var a = fs.GetInfo(R + "/a").Attr;
            Assert.Equal(("hello\n", 0x89EDu, 2u), (fs.ReadAllText(R + "/a"), a.Mode, a.Nlink));
            Assert.Equal(a.Ino, fs.GetInfo(R + "/d/hl").Attr.Ino);
            TestFs.Ok(fs.Posix.GetXattr(R + "/a", "user.k", out var v));
            Assert.Equal("val"u8.ToArray(), v);
            Assert.Equal("a", fs.ReadLink(R + "/sl"));
            Assert.Equal(0x11A4u, fs.GetInfo(R + "/ff").Attr.Mode);
            var cdev = fs.GetInfo(R + "/cdev").Attr;
            Assert.Equal((0x21A4u, 0x103UL), (cdev.Mode, cdev.Rdev)); // c 1 3
            var empty = fs.GetInfo(R + "/empty").Attr;
            Assert.Equal((0UL, 1000u, 1000u), (empty.Size, empty.Uid, empty.Gid));
            Assert.Equal(0x416Du, fs.GetInfo(R + "/d").Attr.Mode); // 0555, set after its children arrived

            byte[] sparse = fs.ReadAllBytes(R + "/sparse");
            Assert.Equal(1 << 20, sparse.Length);
            Assert.Equal("xyz"u8.ToArray(), sparse.AsSpan(300000, 3).ToArray());
            Assert.Equal(1 << 20, sparse.Count(b => b == 0) + 3);
            Assert.Equal(4096UL, fs.DiskUsage(R + "/sparse").Total); // one block of data: the rest stayed a hole

            byte[] r10k = Enumerable.Repeat((byte)'r', 10000).ToArray();
            Assert.Equal(r10k, fs.ReadAllBytes(R + "/orig"));
            Assert.Equal(r10k, fs.ReadAllBytes(R + "/d/e/clone"));
            Assert.Equal(new Timespec(1577934245, 123456789), fs.GetInfo(R + "/d/e/clone").Attr.Mtime);
            var clone = fs.DiskUsage(R + "/d/e/clone");
            Assert.Equal(0UL, clone.Exclusive); // CLONE shared orig's extent, as btrfs did
            Assert.Equal(12288UL, clone.Total);

            TestFs.Ok(fs.Engine.GetSubvolumeReadOnly(fs.GetInfo(R).Attr.Ino, out bool ro));
            Assert.True(ro);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>`btrfs send -e fe1 fe2` (Fixtures/README.md) writes both subvolumes as one stream:
    /// a SUBVOL inside a stream ends the subvolume before it. Both are received, read-only, as
    /// btrfs had them; with stopAtEnd (`receive -e`) the receive stops at the END, reading not a
    /// byte past it, where by default it goes on to the next stream on the input.</summary>
    [Fact]
    public void SeveralSubvolumesInOneStreamFromBtrfsSendEAreAllReceived()
    {
        byte[] stream = File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Fixtures", "btrfs-send-e.stream"));
        var dev = TestFs.NewDevice(64UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateDirectory("/in");
            fs.CreateDirectory("/again");
            var got = Receiver.Run(new MemoryStream(stream), new ImageReceiveTarget(fs, "/in"));
            Assert.Equal(["fe1", "fe2"], got.Select(g => g.Name));
            Assert.Equal("one\n", fs.ReadAllText("/in/fe1/a"));
            Assert.Equal(["a"], fs.EnumerateEntries("/in/fe1").Select(e => e.Name));
            Assert.Equal(["a", "b", "c"], fs.EnumerateEntries("/in/fe2").Select(e => e.Name).Order(StringComparer.Ordinal));
            Assert.Equal(("two\n", 2u), (fs.ReadAllText("/in/fe2/b"), fs.GetInfo("/in/fe2/c").Attr.Nlink));
            Assert.Equal(fs.GetInfo("/in/fe2/a").Attr.Ino, fs.GetInfo("/in/fe2/c").Attr.Ino);
            foreach (var sv in new[] { "/in/fe1", "/in/fe2" })
            {
                TestFs.Ok(fs.Engine.GetSubvolumeReadOnly(fs.GetInfo(sv).Attr.Ino, out bool ro));
                Assert.True(ro, sv);
            }

            // The stream, then whatever else: -e reads to the END and no further.
            var input = new MemoryStream([.. stream, .. "not a stream at all"u8]);
            Assert.Equal(2, Receiver.Run(input, new ImageReceiveTarget(fs, "/again"), stopAtEnd: true).Count);
            Assert.Equal(stream.Length, input.Position);
            Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream([.. stream, .. "not a stream at all"u8]), new ImageReceiveTarget(fs, "/")));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>`send -e` writes several subvolumes as one stream as btrfs's does (one header,
    /// one END after the last), and it is received whole; sent apart, the same subvolumes make
    /// two streams whose bytes, less one header and one END, are the same.</summary>
    [Fact]
    public void SendEWritesSeveralSubvolumesAsOneStream()
    {
        using var fs = ReservoirFileSystem.Open(TestFs.NewDevice(64UL << 20), new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        fs.CreateSubvolume("/sv");
        fs.WriteAllText("/sv/a", "one");
        fs.CreateSnapshot("/sv", "/s1", readOnly: true);
        fs.WriteAllText("/sv/b", "two");
        fs.CreateSnapshot("/sv", "/s2", readOnly: true);
        var one = new MemoryStream();
        fs.Send("/s1", one, options: new SendOptions { OmitEnd = true });
        fs.Send("/s2", one, cloneSources: ["/s1"], options: new SendOptions { OmitStreamHeader = true });
        var apart = new MemoryStream();
        fs.Send("/s1", apart);
        fs.Send("/s2", apart, cloneSources: ["/s1"]);
        // Apart: a header and an END more (17 bytes and a 10-byte command).
        Assert.Equal(one.Length + 17 + 10, apart.Length);
        Assert.Equal(1, Count(one.ToArray(), SendStreamFormat.Magic));
        fs.CreateDirectory("/in");
        one.Position = 0;
        var got = Receiver.Run(one, new ImageReceiveTarget(fs, "/in"));
        Assert.Equal(["s1", "s2"], got.Select(g => g.Name));
        Assert.Equal(("one", "two"), (fs.ReadAllText("/in/s2/a"), fs.ReadAllText("/in/s2/b")));

        static int Count(byte[] haystack, ReadOnlySpan<byte> needle)
        {
            int n = 0;
            for (int at = 0; (at = haystack.AsSpan(at).IndexOf(needle)) >= 0; at += needle.Length) n++;
            return n;
        }
    }

    private static string Incremental => Path.Combine(AppContext.BaseDirectory, "Fixtures", "btrfs-send-v1-incremental.stream");

    /// <summary>btrfs's incremental stream (Fixtures/README.md) applied to the subvolume received
    /// from the full one gives the tree the changes made: renames through orphan names, a swap
    /// of two names, a directory moved, an xattr removed and one added, an append to a hard-linked
    /// file, a truncation, a new file. The parent is left as it was; the new subvolume is
    /// read-only and records what it was received from.</summary>
    [Fact]
    public void AnIncrementalStreamFromBtrfsAppliesToTheReceivedParent()
    {
        var dev = TestFs.NewDevice(64UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateDirectory("/backup");
            using (var input = File.OpenRead(Fixture)) Receiver.Run(input, new ImageReceiveTarget(fs, "/backup"));
            using (var input = File.OpenRead(Incremental))
                Assert.Equal("fxs2", Assert.Single(Receiver.Run(input, new ImageReceiveTarget(fs, "/backup"))).Name);

            const string R = "/backup/fxs2";
            Assert.Equal(["a", "cdev", "d2", "dd", "empty", "fresh", "orig", "sl2", "sparse"], fs.EnumerateEntries(R).Select(e => e.Name).Order(StringComparer.Ordinal));
            Assert.Equal(["e"], fs.EnumerateEntries(R + "/d2").Select(e => e.Name));
            Assert.Empty(fs.EnumerateEntries(R + "/d2/e"));
            Assert.Equal(["hl", "moved"], fs.EnumerateEntries(R + "/dd").Select(e => e.Name).Order(StringComparer.Ordinal));
            var a = fs.GetInfo(R + "/a").Attr;
            Assert.Equal(("hello\nmore\n", 0x89EDu, 2u), (fs.ReadAllText(R + "/a"), a.Mode, a.Nlink));
            Assert.Equal(a.Ino, fs.GetInfo(R + "/dd/hl").Attr.Ino);
            TestFs.Ok(fs.Posix.ListXattr(R + "/a", out var names));
            Assert.Equal(["user.new"], names);
            Assert.Equal("a", fs.ReadLink(R + "/sl2"));
            var empty = fs.GetInfo(R + "/empty").Attr; // the old sparse file, under the other's name
            Assert.Equal((1UL << 20, 0u), (empty.Size, empty.Uid));
            Assert.Equal("xyz"u8.ToArray(), fs.ReadAllBytes(R + "/empty").AsSpan(300000, 3).ToArray());
            var sparse = fs.GetInfo(R + "/sparse").Attr; // the old empty one
            Assert.Equal((0UL, 1000u, 0x8180u), (sparse.Size, sparse.Uid, sparse.Mode));
            Assert.Equal(Enumerable.Repeat((byte)'r', 100).ToArray(), fs.ReadAllBytes(R + "/orig"));
            Assert.Equal(Enumerable.Repeat((byte)'r', 10000).ToArray(), fs.ReadAllBytes(R + "/dd/moved"));
            Assert.Equal("new", fs.ReadAllText(R + "/fresh"));

            // The parent is the snapshot it was, untouched.
            Assert.Equal(["a", "cdev", "d", "empty", "ff", "orig", "sl", "sparse"], fs.EnumerateEntries("/backup/fxs").Select(e => e.Name).Order(StringComparer.Ordinal));
            Assert.Equal("hello\n", fs.ReadAllText("/backup/fxs/a"));

            var subs = fs.ListSubvolumes().ToDictionary(s => s.Path);
            Assert.Equal((new Guid(Convert.FromHexString("9cd1eb75a11f3b4aa53eaa19c5ac9c20")), 11UL, true), (subs["backup/fxs"].ReceivedUuid, subs["backup/fxs"].Stransid, subs["backup/fxs"].ReadOnly));
            Assert.Equal((new Guid(Convert.FromHexString("db181a4137127c45bb932b225f161749")), 13UL, true), (subs["backup/fxs2"].ReceivedUuid, subs["backup/fxs2"].Stransid, subs["backup/fxs2"].ReadOnly));
            Assert.Equal(subs["backup/fxs"].Uuid, subs["backup/fxs2"].ParentUuid); // a snapshot of the received parent
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>An incremental stream needs its parent, unchanged: without it (nothing received
    /// yet, or the received parent made writable, which forgets what it was received from, as
    /// btrfs does) the receive says which subvolume it needs and leaves nothing behind.</summary>
    [Fact]
    public void AnIncrementalStreamWithoutItsParentIsRefused()
    {
        var dev = TestFs.NewDevice(64UL << 20);
        using var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        var e = Assert.Throws<FsException>(() => Receiver.Run(File.OpenRead(Incremental), new ImageReceiveTarget(fs, "/")));
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.Contains("9cd1eb75", e.Message.Replace("-", ""));
        Assert.Empty(fs.EnumerateEntries("/"));

        using (var input = File.OpenRead(Fixture)) Receiver.Run(input, new ImageReceiveTarget(fs, "/"));
        TestFs.Ok(fs.Engine.SetSubvolumeReadOnly(fs.GetInfo("/fxs").Attr.Ino, false));
        TestFs.Ok(fs.Engine.SetSubvolumeReadOnly(fs.GetInfo("/fxs").Attr.Ino, true));
        Assert.Equal(Guid.Empty, fs.ListSubvolumes().Single().ReceivedUuid);
        e = Assert.Throws<FsException>(() => Receiver.Run(File.OpenRead(Incremental), new ImageReceiveTarget(fs, "/")));
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.Equal(["fxs"], fs.EnumerateEntries("/").Select(x => x.Name));
    }

    /// <summary>A subvolume with every kind of inode, holes, hard links across directories, xattrs
    /// (on a symbolic link too), owners, set-user-ID and nanosecond times, a read-only directory
    /// with files in it and a nested subvolume (not part of the send, as on btrfs): sent from a
    /// read-only snapshot and received into another image, it comes back equal, read-only, with
    /// its holes still holes; both images stay clean.</summary>
    [Fact]
    public void AFullSendRoundTripsEveryKindOfInode()
    {
        var devA = TestFs.NewDevice(128UL << 20);
        var devB = TestFs.NewDevice(128UL << 20);
        var stream = new MemoryStream();
        List<SubvolumeListing.Seen> sent;
        using (var fs = ReservoirFileSystem.Open(devA, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateSubvolume("/sv");
            var P = fs.Posix;
            fs.CreateDirectory("/sv/dir/sub");
            fs.WriteAllText("/sv/dir/sub/f", "in a read-only directory");
            using (var s = fs.OpenFile("/sv/holes", FileMode.Create))
            {
                s.Write(Enumerable.Repeat((byte)7, 5000).ToArray());
                s.Seek(5 << 20, SeekOrigin.Begin);
                s.Write("tail"u8);
                s.SetLength(8 << 20); // ends in a hole: TRUNCATE must give the size
            }
            fs.WriteAllBytes("/sv/big", Enumerable.Range(0, 300_000).Select(i => (byte)(i * 31 + (i >> 9))).ToArray());
            fs.CreateHardLink("/sv/dir/big-link", "/sv/big");
            fs.CreateHardLink("/sv/dir/sub/big-link2", "/sv/big");
            fs.WriteAllBytes("/sv/empty", []);
            fs.CreateSymbolicLink("/sv/sym", "dir/sub/f");
            TestFs.Ok(P.Mknod("/sv/fifo", 0x1000 | 0x1B0));
            TestFs.Ok(P.Mknod("/sv/sock", 0xC000 | 0x1ED));
            TestFs.Ok(P.Mknod("/sv/blk", 0x6000 | 0x180, (8 << 8) | 1));
            TestFs.Ok(P.SetXattr("/sv/big", "user.color", "blue"u8));
            TestFs.Ok(P.SetXattr("/sv/big", "trusted.x", new byte[] { 0, 1, 2, 255 }));
            TestFs.Ok(fs.Engine.SetXattr(fs.GetInfo("/sv/sym").Attr.Ino, "trusted.onlink", "L"u8));
            TestFs.Ok(P.Chown("/sv/empty", 1000, 1001));
            TestFs.Ok(P.Chmod("/sv/big", 0x9ED)); // 04755
            fs.CloneFile("/sv/big", "/sv/reflink"); // shared in the source; sent as data
            TestFs.Ok(P.Utimens("/sv/empty", new Timespec(1_000_000_000, 1), new Timespec(1_234_567_890, 987_654_321)));
            fs.CreateSubvolume("/sv/nested");
            fs.WriteAllText("/sv/nested/not-sent", "x");
            TestFs.Ok(P.Chmod("/sv/dir/sub", 0x16D)); // 0555
            fs.CreateSnapshot("/sv", "/snap", readOnly: true);
            sent = SubvolumeListing.Walk(fs, "/snap");
            var info = fs.ListSubvolumes().Single(s => s.Path == "snap");
            var sum = FullSend.Run(new ImageSendSource(fs, "/snap"), "snap", info.Uuid, info.Generation, stream);
            // Holes are not sent; data goes in whole blocks, as SEEK_DATA/SEEK_HOLE find them (as
            // btrfs's send does): holes' 5000 bytes and "tail" are blocks 0-1 and one at 5 MiB.
            // The reflink is a CLONE of big's 73 whole blocks (299,008 bytes) and its last 992
            // bytes written (a clone of a partial block must reach the end of the file).
            Assert.Equal(300_000 + 992 + 2 * 4096 + 4096 + "in a read-only directory".Length, sum.DataBytes);
            Assert.Equal(299_008, sum.CloneBytes);
        }
        FsckAssert.Clean(devA);
        Assert.DoesNotContain(sent, s => s.Path.StartsWith("nested/", StringComparison.Ordinal));

        stream.Position = 0;
        using (var fs = ReservoirFileSystem.Open(devB, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            Receiver.Run(stream, new ImageReceiveTarget(fs, "/"));
            var got = SubvolumeListing.Walk(fs, "/snap");
            Assert.Equal(sent.Count, got.Count);
            // The root's times: the nested subvolume's entry is not sent, so its mtime is the one
            // the stream set; everything else compared whole, inode numbers aside.
            foreach (var (s, g) in sent.Zip(got))
                Assert.Equal(s with { Ino = 0 }, g with { Ino = 0 });
            // Hard links: the same three names share one inode on the receiving side.
            var big = got.Where(g => g.Path is "big" or "dir/big-link" or "dir/sub/big-link2").Select(g => g.Ino).Distinct();
            Assert.Single(big);
            Assert.Equal(3u, fs.GetInfo("/snap/big").Attr.Nlink);
            Assert.Equal(fs.ReadAllBytes("/snap/big"), fs.ReadAllBytes("/snap/reflink"));
            Assert.Equal(4096UL, fs.DiskUsage("/snap/reflink").Exclusive); // shares all but its last block with big, as at the source
            Assert.Equal("in a read-only directory", fs.ReadAllText("/snap/dir/sub/f"));
            var holes = fs.ReadAllBytes("/snap/holes");
            Assert.Equal(8 << 20, holes.Length);
            Assert.Equal("tail"u8.ToArray(), holes.AsSpan(5 << 20, 4).ToArray());
            Assert.Equal(12288UL, fs.DiskUsage("/snap/holes").Total); // 5000 bytes (two blocks) and "tail" (one): the rest holes
            TestFs.Ok(fs.Engine.GetSubvolumeReadOnly(fs.GetInfo("/snap").Attr.Ino, out bool ro));
            Assert.True(ro);
        }
        FsckAssert.Clean(devB);
    }

    private static byte[] SmallStream()
    {
        var dev = TestFs.NewDevice();
        using var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        fs.CreateSubvolume("/sv");
        fs.CreateDirectory("/sv/d");
        fs.WriteAllBytes("/sv/d/f", Enumerable.Range(0, 100_000).Select(i => (byte)i).ToArray());
        fs.CreateSnapshot("/sv", "/s", readOnly: true);
        var ms = new MemoryStream();
        var info = fs.ListSubvolumes().Single(s => s.Path == "s");
        FullSend.Run(new ImageSendSource(fs, "/s"), "s", info.Uuid, info.Generation, ms);
        return ms.ToArray();
    }

    private static (FsException Error, IReadOnlyList<SubvolumeInfo> After, Reservoir.Device.MemoryBlockDevice Dev) ReceiveBroken(byte[] stream)
    {
        var dev = TestFs.NewDevice();
        FsException? error;
        IReadOnlyList<SubvolumeInfo> after;
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            error = Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream(stream), new ImageReceiveTarget(fs, "/")));
            after = fs.ListSubvolumes();
            Assert.Empty(fs.EnumerateEntries("/")); // the partial subvolume went with the failure
        }
        return (error, after, dev);
    }

    /// <summary>A receive that fails removes what it made (no half subvolume is left looking
    /// like a backup), and says what was wrong and where.</summary>
    [Fact]
    public void ADamagedTruncatedOrHostileStreamIsRefusedAndLeavesNothing()
    {
        byte[] good = SmallStream();

        var flipped = (byte[])good.Clone();
        flipped[good.Length / 2] ^= 0x40; // inside a WRITE's data
        var (e, after, dev) = ReceiveBroken(flipped);
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("checksum does not match", e.Message);
        Assert.DoesNotContain(after, s => s.Path == "s");
        FsckAssert.Clean(dev);

        (e, _, dev) = ReceiveBroken(good[..(good.Length - 30)]);
        Assert.Contains("ends", e.Message);
        FsckAssert.Clean(dev);

        var magic = (byte[])good.Clone();
        magic[0] = (byte)'x';
        Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream(magic), new NeverCalled()));

        // A path that climbs out of the subvolume it makes.
        var ms = new MemoryStream();
        var w = new SendStreamWriter(ms);
        w.Begin(SendCommand.Subvol).Path(SendAttr.Path, "evil").Uuid(SendAttr.Uuid, Guid.NewGuid()).U64(SendAttr.Ctransid, 1).Finish();
        w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, "../outside").U64(SendAttr.Ino, 257).Finish();
        w.Begin(SendCommand.End).Finish();
        (e, _, dev) = ReceiveBroken(ms.ToArray());
        Assert.Contains("leaves the subvolume", e.Message);
        FsckAssert.Clean(dev);
    }

    /// <summary>A stream that makes a symbolic link and then names a path through it, or writes
    /// to it, would reach outside the subvolume it makes (here: the image's root; through a
    /// mount as root: anywhere on the host). Each is refused (ELOOP) before anything is written
    /// there, and the partial subvolume goes.</summary>
    public static byte[] Escaping(string linkTarget, bool throughDirectory)
    {
        var ms = new MemoryStream();
        var w = new SendStreamWriter(ms);
        w.Begin(SendCommand.Subvol).Path(SendAttr.Path, "evil").Uuid(SendAttr.Uuid, Guid.NewGuid()).U64(SendAttr.Ctransid, 1).Finish();
        w.Begin(SendCommand.Symlink).Path(SendAttr.Path, "x").U64(SendAttr.Ino, 257).Path(SendAttr.PathLink, linkTarget).Finish();
        if (throughDirectory)
        {
            w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, "x/escaped").U64(SendAttr.Ino, 258).Finish();
            w.Begin(SendCommand.Write).Path(SendAttr.Path, "x/escaped").U64(SendAttr.FileOffset, 0).Bytes(SendAttr.Data, "owned"u8).Finish();
        }
        else w.Begin(SendCommand.Write).Path(SendAttr.Path, "x").U64(SendAttr.FileOffset, 0).Bytes(SendAttr.Data, "owned"u8).Finish();
        w.Begin(SendCommand.End).Finish();
        return ms.ToArray();
    }

    [Fact]
    public void AStreamCannotReachOutThroughASymbolicLink()
    {
        var dev = TestFs.NewDevice();
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateDirectory("/in");
            fs.WriteAllText("/victim", "mine");
            var e = Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream(Escaping("/", throughDirectory: true)), new ImageReceiveTarget(fs, "/in")));
            Assert.Equal(Errno.ELOOP, e.Errno);
            Assert.False(fs.Exists("/escaped"));
            e = Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream(Escaping("/victim", throughDirectory: false)), new ImageReceiveTarget(fs, "/in")));
            Assert.Equal(Errno.ELOOP, e.Errno);
            Assert.Equal("mine", fs.ReadAllText("/victim"));
            Assert.Empty(fs.EnumerateEntries("/in"));
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A → B → C: a snapshot received on B is sent on to C under the uuid it was
    /// received as (btrfs's rule), so C can then take the next increment straight from A; and B
    /// can send its own increment against what it received to C as well.</summary>
    [Fact]
    public void SnapshotsPassedOnFromAReceivedCopyTakeIncrementsFromTheOriginal()
    {
        var opts = new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 };
        using var a = ReservoirFileSystem.Open(TestFs.NewDevice(), opts);
        using var b = ReservoirFileSystem.Open(TestFs.NewDevice(), opts);
        using var c = ReservoirFileSystem.Open(TestFs.NewDevice(), opts);
        byte[] Send(ReservoirFileSystem fs, string snap, string? parent = null)
        {
            var ms = new MemoryStream();
            fs.Send(snap, ms, parent);
            return ms.ToArray();
        }
        a.CreateSubvolume("/sv");
        a.WriteAllText("/sv/f", "one");
        a.CreateSnapshot("/sv", "/s1", readOnly: true);
        b.Receive(new MemoryStream(Send(a, "/s1")), "/");
        c.Receive(new MemoryStream(Send(b, "/s1")), "/"); // B passes it on
        Assert.Equal(a.ListSubvolumes().Single(x => x.Path == "s1").Uuid, c.ListSubvolumes().Single().ReceivedUuid);

        a.WriteAllText("/sv/f", "two");
        a.CreateSnapshot("/sv", "/s2", readOnly: true);
        c.Receive(new MemoryStream(Send(a, "/s2", "/s1")), "/"); // the increment straight from A
        Assert.Equal("two", c.ReadAllText("/s2/f"));

        b.CreateSnapshot("/s1", "/b1");
        b.WriteAllText("/b1/g", "on b");
        b.CreateSnapshot("/b1", "/b2", readOnly: true);
        c.Receive(new MemoryStream(Send(b, "/b2", "/s1")), "/"); // B's own increment against what it received
        Assert.Equal(("one", "on b"), (c.ReadAllText("/b2/f"), c.ReadAllText("/b2/g")));
    }

    /// <summary>
    /// `send -c`: data a clone source holds goes as a CLONE of its file, found by the extent's
    /// back-references whichever subvolume the file was copied from, and the receiver shares it
    /// with its copy of the clone source; a stream that names a clone source the receiver lacks
    /// is refused.
    /// </summary>
    [Fact]
    public void DataAlreadyInACloneSourceGoesAsAClone()
    {
        var opts = new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 };
        using var a = ReservoirFileSystem.Open(TestFs.NewDevice(256UL << 20), opts);
        using var b = ReservoirFileSystem.Open(TestFs.NewDevice(256UL << 20), opts);
        var data = new byte[1 << 20];
        new Random(5).NextBytes(data);
        a.CreateSubvolume("/sv");
        a.WriteAllBytes("/sv/data", data);
        a.CreateSnapshot("/sv", "/base", readOnly: true);
        a.CreateSubvolume("/other");
        a.CloneFile("/sv/data", "/other/copy"); // across subvolumes: the same extent
        a.WriteAllText("/other/own", "only here");
        a.CreateSnapshot("/other", "/o1", readOnly: true);

        var full = new MemoryStream();
        a.Send("/base", full);
        b.Receive(new MemoryStream(full.ToArray()), "/");
        var withClones = new MemoryStream();
        var sum = a.Send("/o1", withClones, cloneSources: ["/base"]);
        Assert.Equal(1 << 20, sum.CloneBytes);
        Assert.Equal(sum.DataBytes, "only here".Length);
        var without = new MemoryStream();
        Assert.Equal(0, a.Send("/o1", without).CloneBytes);
        Assert.True(withClones.Length < without.Length / 100, $"{withClones.Length} bytes with the clone source, {without.Length} without");

        using (var c = ReservoirFileSystem.Open(TestFs.NewDevice(256UL << 20), opts))
        {
            var refused = Assert.Throws<FsException>(() => c.Receive(new MemoryStream(withClones.ToArray()), "/"));
            Assert.Contains("not here", refused.Message);
            Assert.Empty(c.ListSubvolumes());
        }
        b.Receive(new MemoryStream(withClones.ToArray()), "/");
        Assert.Equal(data, b.ReadAllBytes("/o1/copy"));
        Assert.Equal("only here", b.ReadAllText("/o1/own"));
        Assert.Equal(b.DiskUsage("/base/data").Shared.Single(), b.DiskUsage("/o1/copy").Shared.Single());
    }

    /// <summary>Without -p, `send -c` takes for parent the clone source the subvolume is a
    /// snapshot of, else the snapshot of the same source nearest in time (btrfs's choice), and
    /// none for an unrelated one.</summary>
    [Fact]
    public void TheParentChosenAmongCloneSourcesIsTheNearestRelative()
    {
        using var a = ReservoirFileSystem.Open(TestFs.NewDevice(), new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        a.CreateSubvolume("/sv");
        foreach (var n in new[] { "s1", "s2", "s3" })
        {
            a.WriteAllText("/sv/f", n);
            a.Sync(); // each snapshot a transaction of its own
            a.CreateSnapshot("/sv", "/" + n, readOnly: true);
        }
        a.CreateSnapshot("/s1", "/s1child", readOnly: true);
        a.CreateSubvolume("/x");
        a.CreateSnapshot("/x", "/x1", readOnly: true);
        SubvolumeInfo Info(string p) => a.ListSubvolumes().Single(s => "/" + s.Path == p);
        string? Pick(string p, params string[] among) =>
            ReservoirFileSystem.GoodParent(Info(p), among.Select(Info)) is { } g ? "/" + g.Path : null;
        Assert.Equal("/s2", Pick("/s3", "/s1", "/s2", "/x1"));      // siblings: the nearest
        Assert.Equal("/s2", Pick("/s1", "/s3", "/s2"));
        Assert.Equal("/s1", Pick("/s1child", "/s2", "/s1", "/s3")); // its source first
        Assert.Null(Pick("/x1", "/s1", "/s2"));                     // unrelated: a full send
        Assert.Null(Pick("/s1", "/s1"));                            // not itself
    }

    /// <summary>`send --no-data`: the places of the data as UPDATE_EXTENT commands instead of the
    /// data (what changed, for `receive --dump`): a stream of a few hundred bytes for 3 MB, an
    /// increment that names the one changed range of the changed file without reading it, and
    /// received (as btrfs receive does) files of the right sizes without their data.</summary>
    [Fact]
    public void ANoDataStreamSaysWhereDataIsWithoutIt()
    {
        var opts = new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 };
        using var a = ReservoirFileSystem.Open(TestFs.NewDevice(128UL << 20), opts);
        using var b = ReservoirFileSystem.Open(TestFs.NewDevice(128UL << 20), opts);
        var data = new byte[3_000_000];
        new Random(4).NextBytes(data);
        a.CreateSubvolume("/sv");
        a.WriteAllBytes("/sv/big", data);
        a.WriteAllText("/sv/small", "hello");
        a.CreateSnapshot("/sv", "/n0", readOnly: true);
        using (var s = a.OpenFile("/sv/big", FileMode.Open, FileAccess.Write)) { s.Seek(1_000_000, SeekOrigin.Begin); s.Write(new byte[10_000]); }
        a.CreateSnapshot("/sv", "/n1", readOnly: true);

        var full = new MemoryStream();
        var sum = a.Send("/n0", full, options: new(NoData: true));
        Assert.Equal(0, sum.DataBytes);
        Assert.True(full.Length < 1000, $"{full.Length} bytes");
        var inc = new MemoryStream();
        a.Send("/n1", inc, "/n0", options: new(NoData: true));
        var cmds = Commands(inc.ToArray());
        Assert.DoesNotContain(cmds, c => c.Command == SendCommand.Write);
        // The 10,000 bytes at 1,000,000 lie in the 48 KiB pieces around them, no others.
        var updates = cmds.Where(c => c.Command == SendCommand.UpdateExtent).ToList();
        Assert.NotEmpty(updates);
        Assert.All(updates, u => Assert.InRange(u.Offset, 1_000_000 - 49_152, 1_010_000));

        b.Receive(new MemoryStream(full.ToArray()), "/");
        Assert.Equal(3_000_000, b.GetInfo("/n0/big").Length);
        Assert.Equal(new byte[3_000_000], b.ReadAllBytes("/n0/big"));
        b.Receive(new MemoryStream(inc.ToArray()), "/");
        Assert.Equal(5, b.GetInfo("/n1/small").Length);
    }

    private static List<(SendCommand Command, long Offset)> Commands(byte[] stream)
    {
        var r = new SendStreamReader(new MemoryStream(stream));
        var list = new List<(SendCommand, long)>();
        while (r.Next()) list.Add((r.Command, r.Has(SendAttr.FileOffset) ? (long)r.U64(SendAttr.FileOffset) : -1));
        return list;
    }

    /// <summary>Two streams one after the other on one input (`cat a b | receive`) make two
    /// subvolumes.</summary>
    [Fact]
    public void ConcatenatedStreamsMakeOneSubvolumeEach()
    {
        byte[] one = SmallStream();
        var dev = TestFs.NewDevice();
        using var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
        fs.CreateDirectory("/a");
        fs.CreateDirectory("/b");
        Receiver.Run(new MemoryStream(one), new ImageReceiveTarget(fs, "/a"));
        var both = new MemoryStream([.. one, .. File.ReadAllBytes(Fixture)]);
        var got = Receiver.Run(both, new ImageReceiveTarget(fs, "/b"));
        Assert.Equal(["s", "fxs"], got.Select(g => g.Name));
        Assert.Equal(fs.ReadAllBytes("/a/s/d/f"), fs.ReadAllBytes("/b/s/d/f"));
        Assert.Equal("hello\n", fs.ReadAllText("/b/fxs/a"));
    }

    /// <summary>A stream whose commands the target partly refuses: a write to a file the
    /// stream never made (gathered, so it fails when the next command flushes it), an attribute
    /// in a namespace nobody takes, a chown of a missing path. By default the first failure
    /// stops the receive and the partial subvolume goes; with btrfs receive's -E the failures
    /// up to the limit are said and passed over and every other command still applies, the
    /// subvolume finished read-only with its received uuid; at the limit it stops as at the
    /// first.</summary>
    internal static byte[] PartlyRefused()
    {
        var ms = new MemoryStream();
        var w = new SendStreamWriter(ms);
        w.Begin(SendCommand.Subvol).Path(SendAttr.Path, "part").Uuid(SendAttr.Uuid, new Guid("0f9e8d7c-6b5a-4938-2716-050403020100")).U64(SendAttr.Ctransid, 7).Finish();
        w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, "a").U64(SendAttr.Ino, 257).Finish();
        w.Begin(SendCommand.Write).Path(SendAttr.Path, "a").U64(SendAttr.FileOffset, 0).Bytes(SendAttr.Data, "alpha"u8).Finish();
        w.Begin(SendCommand.Write).Path(SendAttr.Path, "ghost").U64(SendAttr.FileOffset, 0).Bytes(SendAttr.Data, "boo"u8).Finish();
        w.Begin(SendCommand.SetXattr).Path(SendAttr.Path, "a").Path(SendAttr.XattrName, "nonsense.k").Bytes(SendAttr.XattrData, "v"u8).Finish();
        w.Begin(SendCommand.Mkfile).Path(SendAttr.Path, "b").U64(SendAttr.Ino, 258).Finish();
        w.Begin(SendCommand.Write).Path(SendAttr.Path, "b").U64(SendAttr.FileOffset, 0).Bytes(SendAttr.Data, "beta"u8).Finish();
        w.Begin(SendCommand.Chown).Path(SendAttr.Path, "missing").U64(SendAttr.Uid, 1).U64(SendAttr.Gid, 1).Finish();
        w.Begin(SendCommand.Chmod).Path(SendAttr.Path, "b").U64(SendAttr.Mode, 0x180).Finish();
        w.Begin(SendCommand.End).Finish();
        return ms.ToArray();
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(2, 0)]
    [InlineData(3, 0)]
    [InlineData(4, 3)]
    [InlineData(0, 3)]
    public void MaxErrorsPassesOverRefusedCommandsUpToItsLimit(int maxErrors, int passedOverWhenKept)
    {
        var dev = TestFs.NewDevice(64UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 }))
        {
            fs.CreateDirectory("/in");
            var said = new List<string>();
            bool kept = passedOverWhenKept > 0;
            if (!kept)
            {
                var e = Assert.Throws<FsException>(() => Receiver.Run(new MemoryStream(PartlyRefused()), new ImageReceiveTarget(fs, "/in"), maxErrors: maxErrors, error: said.Add));
                Assert.Contains(maxErrors switch { 1 => "ghost", 2 => "nonsense", _ => "missing" }, e.Message);
                Assert.Equal(maxErrors - 1, said.Count);
                Assert.Empty(fs.EnumerateEntries("/in"));
            }
            else
            {
                var got = Receiver.Run(new MemoryStream(PartlyRefused()), new ImageReceiveTarget(fs, "/in"), maxErrors: maxErrors, error: said.Add);
                Assert.Equal(3, Assert.Single(got).Errors);
                Assert.Equal(3, said.Count);
                Assert.Contains("ghost", said[0]);
                Assert.Contains("nonsense", said[1]);
                Assert.Contains("missing", said[2]);
                Assert.All(said, l => Assert.StartsWith("part: ", l));
                Assert.Equal(("alpha", "beta"), (fs.ReadAllText("/in/part/a"), fs.ReadAllText("/in/part/b")));
                Assert.Equal(0x8180u, fs.GetInfo("/in/part/b").Attr.Mode); // the chmod after the failures applied
                Assert.Equal(["a", "b"], fs.EnumerateEntries("/in/part").Select(e => e.Name).Order(StringComparer.Ordinal));
                TestFs.Ok(fs.Engine.GetSubvolumeReadOnly(fs.GetInfo("/in/part").Attr.Ino, out bool ro));
                Assert.True(ro);
            }
            fs.Sync();
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>A target a refused stream must never reach.</summary>
    private sealed class NeverCalled : IReceiveTarget
    {
        private static Exception Fail() => new Xunit.Sdk.XunitException("a refused stream reached the target");
        public void BeginSubvolume(string name) => throw Fail();
        public void BeginSnapshot(string name, string parent) => throw Fail();
        public string? FindSubvolume(Guid uuid, ulong ctransid) => throw Fail();
        public void Mkfile(string path) => throw Fail();
        public void Mkdir(string path) => throw Fail();
        public void Mknod(string path, uint mode, ulong rdev) => throw Fail();
        public void Symlink(string path, string target) => throw Fail();
        public void Rename(string from, string to) => throw Fail();
        public void Link(string path, string existing) => throw Fail();
        public void Unlink(string path) => throw Fail();
        public void Rmdir(string path) => throw Fail();
        public void SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) => throw Fail();
        public void RemoveXattr(string path, ReadOnlySpan<byte> name) => throw Fail();
        public void Write(string path, long offset, ReadOnlySpan<byte> data) => throw Fail();
        public void Clone(string path, long offset, long length, string? sourceSubvolume, string source, long sourceOffset) => throw Fail();
        public void Fallocate(string path, int mode, long offset, long length) => throw Fail();
        public void Truncate(string path, long size) => throw Fail();
        public void Chmod(string path, uint mode) => throw Fail();
        public void Chown(string path, uint uid, uint gid) => throw Fail();
        public void Utimes(string path, Timespec atime, Timespec mtime) => throw Fail();
        public void EndSubvolume(Guid receivedUuid, ulong stransid) => throw Fail();
        public void Abandon() => throw Fail();
    }
}

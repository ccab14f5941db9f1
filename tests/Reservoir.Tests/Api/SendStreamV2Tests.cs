using System.Buffers.Binary;
using System.Text;
using Reservoir.Api.Send;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>
/// Send streams of version 2 from the kernel's btrfs (`btrfs send --proto 2 --compressed-data`,
/// Fixtures/README.md): compressed extents sent as they lie on btrfs's disk (ENCODED_WRITE with
/// zlib, LZO and zstd data) decode to the files btrfs had, an incremental one's FALLOCATE punches
/// its hole, and damaged compressed data or impossible lengths are refused with the image
/// left clean.
/// </summary>
public sealed class SendStreamV2Tests
{
    private static byte[] Fixture(string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Fixtures", name));

    private static readonly Reservoir.Engine.Tx.MountOptions Opts = new() { CommitIntervalMs = 0 };

    /// <summary>What the fixtures' files hold, made again here: `yes hello | head -c 200000`
    /// and `seq 1 30000`.</summary>
    private static byte[] Text() => Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("hello\n", 200000 / 6 + 1)))[..200000];
    private static byte[] Numbers() => Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(1, 30000).Select(i => i + "\n")));

    [Theory]
    [InlineData("zlib")]
    [InlineData("lzo")]
    [InlineData("zstd")]
    public void CompressedExtentsFromBtrfsDecodeToItsFiles(string compression)
    {
        var dev = TestFs.NewDevice(128UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, Opts))
        {
            var got = fs.Receive(new MemoryStream(Fixture($"v2-{compression}.stream")), "/");
            Assert.Equal("s1", got.Single().Name);
            Assert.Equal(Text(), fs.ReadAllBytes("/s1/text"));
            Assert.Equal(Numbers(), fs.ReadAllBytes("/s1/numbers"));
            Assert.True(fs.ListSubvolumes().Single().ReadOnly);
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>An ENCODED_WRITE without the ENCRYPTION attribute (no encryption) decodes as
    /// one with it: a receive of a stream from the kernel's btrfs through the mount once failed
    /// with "EncodedWrite: attribute Encryption missing". The fixture's ENCODED_WRITEs are framed
    /// again without it.</summary>
    [Fact]
    public void AnEncodedWriteWithoutItsEncryptionAttributeIsUnencrypted()
    {
        var original = Fixture("v2-zstd.stream");
        var ms = new MemoryStream();
        ms.Write(original, 0, 17); // the stream header
        int stripped = 0;
        foreach (var (at, len, type) in Commands(original))
        {
            int body = at + SendStreamFormat.CommandHeaderSize;
            var kept = new List<byte>();
            for (int p = body; p < body + len;)
            {
                int t = BinaryPrimitives.ReadUInt16LittleEndian(original.AsSpan(p));
                if (t == (int)SendAttr.Data) { kept.AddRange(original.AsSpan(p, body + len - p).ToArray()); break; }
                int l = BinaryPrimitives.ReadUInt16LittleEndian(original.AsSpan(p + 2));
                if (type == (ushort)SendCommand.EncodedWrite && t == (int)SendAttr.Encryption) stripped++;
                else kept.AddRange(original.AsSpan(p, 4 + l).ToArray());
                p += 4 + l;
            }
            var cmd = new byte[SendStreamFormat.CommandHeaderSize + kept.Count];
            BinaryPrimitives.WriteUInt32LittleEndian(cmd, (uint)kept.Count);
            BinaryPrimitives.WriteUInt16LittleEndian(cmd.AsSpan(4), type);
            kept.CopyTo(cmd, SendStreamFormat.CommandHeaderSize);
            BinaryPrimitives.WriteUInt32LittleEndian(cmd.AsSpan(6), SendStreamFormat.Crc(cmd));
            ms.Write(cmd);
        }
        Assert.Equal(4, stripped);
        var dev = TestFs.NewDevice(128UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, Opts))
        {
            Assert.Equal("s1", fs.Receive(new MemoryStream(ms.ToArray()), "/").Single().Name);
            Assert.Equal(Text(), fs.ReadAllBytes("/s1/text"));
            Assert.Equal(Numbers(), fs.ReadAllBytes("/s1/numbers"));
        }
        FsckAssert.Clean(dev);
    }

    [Fact]
    public void AnIncrementalVersion2StreamPunchesItsHole()
    {
        var dev = TestFs.NewDevice(128UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, Opts))
        {
            fs.Receive(new MemoryStream(Fixture("v2-zstd.stream")), "/");
            fs.Receive(new MemoryStream(Fixture("v2-zstd-inc.stream")), "/");
            Assert.Equal([.. Text(), .. "appended\n"u8.ToArray()], fs.ReadAllBytes("/s2/text"));
            var numbers = Numbers();
            Array.Clear(numbers, 65536, 65536);
            Assert.Equal(numbers, fs.ReadAllBytes("/s2/numbers"));
            // A hole, not 64 KiB of written zeros.
            TestFs.Ok(fs.Posix.Lstat("/s2/numbers", out var a));
            TestFs.Ok(fs.Engine.ExtentMap(a.Ino, out var map));
            Assert.DoesNotContain(map, m => m.FileOffset < 131072 && m.FileOffset + m.Length > 65536);
            Assert.Equal(Numbers(), fs.ReadAllBytes("/s1/numbers")); // the parent as it was
        }
        FsckAssert.Clean(dev);
    }

    /// <summary>The commands of a stream: (offset of the command, its payload length, type).</summary>
    private static List<(int At, int Len, ushort Type)> Commands(byte[] s)
    {
        var list = new List<(int, int, ushort)>();
        for (int p = SendStreamFormat.StreamHeaderSize; p < s.Length;)
        {
            int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(p));
            list.Add((p, len, BinaryPrimitives.ReadUInt16LittleEndian(s.AsSpan(p + 4))));
            p += SendStreamFormat.CommandHeaderSize + len;
        }
        return list;
    }

    private static void Recrc(byte[] s, int at, int len)
    {
        var cmd = s.AsSpan(at, SendStreamFormat.CommandHeaderSize + len);
        cmd[6..10].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(cmd[6..], SendStreamFormat.Crc(cmd));
    }

    /// <summary>Bytes of the compressed data changed (crc made right again), or an attribute's
    /// number set to what no extent has: each stream is received or refused with an
    /// FsException, never another exception, and the image stays fsck-clean.</summary>
    [Theory]
    [InlineData("zlib")]
    [InlineData("lzo")]
    [InlineData("zstd")]
    public void DamagedCompressedDataIsRefusedCleanly(string compression)
    {
        var original = Fixture($"v2-{compression}.stream");
        var writes = Commands(original).Where(c => c.Type == (ushort)SendCommand.EncodedWrite).ToList();
        Assert.Equal(4, writes.Count);
        var rng = new Random(compression.Length);
        int refused = 0;
        var dev = TestFs.NewDevice(128UL << 20);
        using (var fs = ReservoirFileSystem.Open(dev, Opts))
        {
            for (int round = 0; round < 60; round++)
            {
                var s = (byte[])original.Clone();
                var (at, len, _) = writes[rng.Next(writes.Count)];
                int body = at + SendStreamFormat.CommandHeaderSize;
                if (round % 6 == 5)
                {
                    // unencoded_len (attribute 28) beyond any extent, or compression 9.
                    for (int p = body; p < body + len;)
                    {
                        int type = BinaryPrimitives.ReadUInt16LittleEndian(s.AsSpan(p)), l = BinaryPrimitives.ReadUInt16LittleEndian(s.AsSpan(p + 2));
                        if (type == (int)SendAttr.Data) break;
                        if (type == (int)SendAttr.UnencodedLen && round % 12 == 5) BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(p + 4), 1UL << 40);
                        if (type == (int)SendAttr.Compression && round % 12 == 11) BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(p + 4), 9);
                        p += 4 + l;
                    }
                }
                else
                {
                    // The data is the command's last bytes (at least 4 KiB of them).
                    for (int k = rng.Next(1, 8); k > 0; k--) s[body + len - 1 - rng.Next(4000)] ^= (byte)rng.Next(1, 256);
                }
                Recrc(s, at, len);
                string dir = $"/r{round}";
                fs.CreateDirectory(dir);
                try { fs.Receive(new MemoryStream(s), dir); }
                catch (FsException) { refused++; Assert.Empty(fs.EnumerateEntries(dir)); }
            }
        }
        // Impossible numbers are always refused; most damaged data too (a changed literal may
        // still decode).
        Assert.True(refused >= 10, $"{refused} of 60 refused");
        FsckAssert.Clean(dev);
    }

    /// <summary>Our version-2 framing of a WRITE (DATA without a length, last) and a FALLOCATE
    /// is byte for byte btrfs's: the increment fixture's commands, written again from what they
    /// say.</summary>
    [Fact]
    public void Version2CommandsAreFramedAsBtrfsFramesThem()
    {
        var theirs = Fixture("v2-zstd-inc.stream");
        var r = new SendStreamReader(new MemoryStream(theirs));
        var ms = new MemoryStream();
        var w = new SendStreamWriter(ms, version: 2);
        int matched = 0;
        while (r.Next())
        {
            if (r.Command == SendCommand.Write)
                w.Begin(SendCommand.Write).Path(SendAttr.Path, r.Path(SendAttr.Path)).U64(SendAttr.FileOffset, r.U64(SendAttr.FileOffset)).Bytes(SendAttr.Data, r.Bytes(SendAttr.Data)).Finish();
            else if (r.Command == SendCommand.Fallocate)
                w.Begin(SendCommand.Fallocate).Path(SendAttr.Path, r.Path(SendAttr.Path)).U32(SendAttr.FallocateMode, (uint)r.Number(SendAttr.FallocateMode))
                    .U64(SendAttr.FileOffset, r.U64(SendAttr.FileOffset)).U64(SendAttr.Size, r.U64(SendAttr.Size)).Finish();
            else continue;
            var ours = ms.ToArray()[^(int)(ms.Length - 17 - Commands(ms.ToArray()).Take(matched).Sum(c => 10 + c.Len))..];
            int at = (int)r.Position;
            Assert.Equal(theirs.AsSpan(at, ours.Length).ToArray(), ours);
            matched++;
        }
        Assert.Equal(2, matched);
        Assert.Equal(2, BinaryPrimitives.ReadInt32LittleEndian(ms.ToArray().AsSpan(13)));
        Assert.Throws<InvalidOperationException>(() => w.Begin(SendCommand.Write).Bytes(SendAttr.Data, [1]).U64(SendAttr.FileOffset, 0));
    }

    /// <summary>`send --proto 2`: a hole punched into a file since the parent goes as a FALLOCATE,
    /// not as zeros (version 1 writes the zeros, as btrfs's v1 does), and arrives as a hole.</summary>
    [Fact]
    public void AVersion2IncrementPunchesTheHolesAFileGained()
    {
        var dev = TestFs.NewDevice(256UL << 20);
        var target = TestFs.NewDevice(256UL << 20);
        using var fs = ReservoirFileSystem.Open(dev, Opts);
        var data = new byte[4 << 20];
        new Random(3).NextBytes(data);
        fs.CreateSubvolume("/sv");
        fs.WriteAllBytes("/sv/f", data);
        fs.CreateSnapshot("/sv", "/s0", readOnly: true);
        TestFs.Ok(fs.Posix.Lstat("/sv/f", out var a));
        TestFs.Ok(fs.Engine.Fallocate(a.Ino, Reservoir.Engine.Data.FallocateMode.PunchHole | Reservoir.Engine.Data.FallocateMode.KeepSize, 1 << 20, 2 << 20));
        fs.CreateSnapshot("/sv", "/s1", readOnly: true);
        Array.Clear(data, 1 << 20, 2 << 20);
        // The punch moved the file's times, in the snapshot too (they stayed in memory, and an
        // increment took the file for unchanged, until the punch wrote them with its extents).
        Assert.True(fs.GetInfo("/s1/f").LastWriteTimeUtc > fs.GetInfo("/s0/f").LastWriteTimeUtc);

        var v1 = new MemoryStream();
        var sum1 = fs.Send("/s1", v1, "/s0");
        Assert.InRange(sum1.DataBytes, 2 << 20, (2 << 20) + 2 * 48 * 1024); // zeros, in 48 KiB writes that need not start at the hole
        var v2 = new MemoryStream();
        var sum2 = fs.Send("/s1", v2, "/s0", options: new(Version: 2));
        Assert.Equal((0L, 2L << 20), (sum2.DataBytes, sum2.HoleBytes));
        Assert.True(v2.Length < 4096, $"{v2.Length} bytes");

        using (var to = ReservoirFileSystem.Open(target, Opts))
        {
            var full = new MemoryStream();
            fs.Send("/s0", full, options: new(Version: 2));
            to.Receive(new MemoryStream(full.ToArray()), "/");
            to.Receive(new MemoryStream(v2.ToArray()), "/");
            Assert.Equal(data, to.ReadAllBytes("/s1/f"));
            TestFs.Ok(to.Posix.Lstat("/s1/f", out var b));
            TestFs.Ok(to.Engine.ExtentMap(b.Ino, out var map));
            Assert.DoesNotContain(map, m => m.FileOffset < (3UL << 20) && m.FileOffset + m.Length > (1UL << 20));
            Assert.Equal(2UL << 20, to.DiskUsage("/s1/f").Total); // the 2 MiB the parent still shares, no more
        }
        FsckAssert.Clean(target);
    }

    /// <summary>Version-2 streams, btrfs's and ours (an increment with punched holes and
    /// 128 KiB writes), with bytes of one command changed anywhere (headers of attributes,
    /// lengths, numbers, data; the crc made right again): each is received or refused with an
    /// FsException, and the image stays fsck-clean.</summary>
    [Fact]
    public void Version2StreamsWithChangedBytesAreReceivedOrRefusedCleanly()
    {
        var dev = TestFs.NewDevice(256UL << 20);
        var rng = new Random(77);
        using (var fs = ReservoirFileSystem.Open(dev, Opts))
        {
            // Ours: a full stream and an increment with a hole punched and a file rewritten.
            var data = new byte[600_000];
            rng.NextBytes(data);
            fs.CreateSubvolume("/sv");
            fs.WriteAllBytes("/sv/a", data);
            fs.WriteAllText("/sv/b", "small");
            fs.CreateSnapshot("/sv", "/o0", readOnly: true);
            TestFs.Ok(fs.Posix.Lstat("/sv/a", out var a));
            TestFs.Ok(fs.Engine.Fallocate(a.Ino, Reservoir.Engine.Data.FallocateMode.PunchHole | Reservoir.Engine.Data.FallocateMode.KeepSize, 131072, 200_000));
            fs.WriteAllText("/sv/b", "changed");
            fs.CreateSnapshot("/sv", "/o1", readOnly: true);
            var full = new MemoryStream();
            fs.Send("/o0", full, options: new(Version: 2));
            var inc = new MemoryStream();
            fs.Send("/o1", inc, "/o0", options: new(Version: 2));
            fs.CreateDirectory("/base");
            fs.Receive(new MemoryStream(Fixture("v2-zstd.stream")), "/base");
            var sources = new[] { full.ToArray(), inc.ToArray(), Fixture("v2-zstd.stream"), Fixture("v2-zstd-inc.stream"), Fixture("v2-lzo.stream") };
            int refused = 0;
            for (int round = 0; round < 150; round++)
            {
                var s = (byte[])sources[round % sources.Length].Clone();
                var cmds = Commands(s);
                var (at, len, _) = cmds[rng.Next(1, cmds.Count)];
                for (int k = rng.Next(1, 4); k > 0 && len > 0; k--)
                    s[at + SendStreamFormat.CommandHeaderSize + rng.Next(Math.Min(len, 64))] ^= (byte)rng.Next(1, 256);
                Recrc(s, at, len);
                // Our increment applies to a copy of its parent, received into the same directory
                // first (the fixture's increment finds its parent in /base).
                string dir = $"/r{round}";
                fs.CreateDirectory(dir);
                try
                {
                    if (round % sources.Length == 1) fs.Receive(new MemoryStream(full.ToArray()), dir);
                    fs.Receive(new MemoryStream(s), dir);
                }
                catch (FsException) { refused++; }
            }
            Assert.True(refused > 30, $"{refused} of 150 refused"); // most changed bytes are in headers, lengths and numbers
        }
        FsckAssert.Clean(dev);
    }
}

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
}

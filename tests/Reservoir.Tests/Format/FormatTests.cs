using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Format;
using Reservoir.Format.Items;
using Xunit;

namespace Reservoir.Tests.Format;

/// <summary>Pins the encodings to docs/SPEC.md: sizes, offsets and hashes, with expected values
/// derived independently of the code under test.</summary>
public class FormatTests
{
    /// <summary>A bit-at-a-time CRC32C, written from the definition (reflected polynomial
    /// 0x82F63B78), independent of the library's table/instruction version.</summary>
    private static uint ReferenceCrc(ReadOnlySpan<byte> data, uint register)
    {
        foreach (byte b in data)
        {
            register ^= b;
            for (int i = 0; i < 8; i++) register = (register & 1) != 0 ? (register >> 1) ^ 0x82F63B78u : register >> 1;
        }
        return ~register;
    }

    [Fact]
    public void Crc32cMatchesTheStandardCheckValueAndTheSpecSeeds()
    {
        // RFC 3720 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        var rng = new Random(1);
        for (int n = 0; n < 70; n++)
        {
            var d = new byte[n];
            rng.NextBytes(d);
            Assert.Equal(ReferenceCrc(d, 0xFFFFFFFF), Crc32C.Compute(d));
            // SPEC §0: crc32c(data; seed) starts the register at NOT seed.
            Assert.Equal(ReferenceCrc(d, ~0xFFFFFFFEu), Crc32C.Compute(d, 0xFFFFFFFE));
        }
        // Long buffers take the three-lane path (3 × 1360 bytes per round) and its joins:
        // lengths around the round size, whole blocks and nodes, and odd tails.
        foreach (int n in new[] { 4079, 4080, 4081, 4096, 4096 + 13, 8160, 8161, 16384, 65536 + 7 })
        {
            var d = new byte[n];
            rng.NextBytes(d);
            Assert.Equal(ReferenceCrc(d, 0xFFFFFFFF), Crc32C.Compute(d));
            Assert.Equal(ReferenceCrc(d, ~0x12345678u), Crc32C.Compute(d, 0x12345678));
        }
        Assert.Equal((ulong)ReferenceCrc("hello"u8, 1), NameHash.Of("hello"u8));
    }

    [Fact]
    public void KeyIsSeventeenBytesOrderedByObjectidTypeOffset()
    {
        var b = new byte[Key.Size];
        new Key(0x0102030405060708, 0x09, 0x0A0B0C0D0E0F1011).Write(b);
        Assert.Equal(Convert.FromHexString("0807060504030201" + "09" + "11100F0E0D0C0B0A"), b);
        Assert.True(new Key(1, 200, 0) < new Key(2, 0, 0));
        Assert.True(new Key(1, 1, 9) < new Key(1, 2, 0));
        Assert.True(new Key(1, 1, 1) < new Key(1, 1, 2));
    }

    [Fact]
    public void SuperblockFieldsSitAtTheirSpecOffsets()
    {
        var sb = new Superblock
        {
            Bytenr = 65536, BlockSize = 4096, NodeSize = 16384, Generation = 0x1122, RootTreeBytenr = 1 << 20,
            RootTreeLevel = 2, TotalBytes = 1 << 30, BytesUsed = 777, Fsid = Guid.NewGuid(), Label = "lbl",
        };
        var buf = new byte[4096];
        sb.Write(buf);
        Assert.Equal("RSRVOIR1", System.Text.Encoding.ASCII.GetString(buf, 0x20, 8));
        Assert.Equal(65536UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x28)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(0x30)));
        Assert.Equal(16384u, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(0x38)));
        Assert.Equal(0x1122UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x58)));
        Assert.Equal(2, buf[0x68]);
        Assert.Equal(777UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x78)));
        Assert.Equal((byte)'l', buf[0x100]);
        Assert.Equal(ReferenceCrc(buf.AsSpan(0x20), 0xFFFFFFFF), BinaryPrimitives.ReadUInt32LittleEndian(buf));
        var back = Superblock.TryRead(buf, 65536, out var err);
        Assert.NotNull(back);
        Assert.Equal(sb.Fsid, back!.Fsid);
        Assert.Equal("lbl", back.Label);
        Assert.Null(Superblock.TryRead(buf, 262144, out err));
        Assert.Contains("copy claims", err);
        buf[0x10] = 1; // checksum padding must be zero
        Assert.Null(Superblock.TryRead(buf, 65536, out _));
    }

    /// <summary>SPEC.md §9: the log block header and an inode record at their offsets, the
    /// checksum over [0x20, length) from the reference CRC, and decoding that refuses (never
    /// throws on) another generation, another place in the chain, a torn block and records
    /// that run past their block.</summary>
    [Fact]
    public void FsyncLogBlocksAndRecordsSitAtTheirSpecOffsets()
    {
        var fsid = Guid.NewGuid();
        var rec = new LogInodeRecord { Tree = 5, Ino = 257, Item = new InodeItem { Generation = 3, FileSize = 9000, Nlink = 1, Mode = 0x81A4 } };
        rec.Spans.Add((4096, 12288));
        rec.Extents.Add((4096, new FileExtentItem { Generation = 8, RamBytes = 8192, Type = FileExtentType.Regular, DiskBytenr = 1 << 22, DiskNumBytes = 8192, Offset = 0, NumBytes = 8192 }));
        rec.Csums.Add((1 << 22, new uint[] { 0xAABBCCDD, 0x11223344 }));
        Assert.Equal(192 + 16 + 61 + 16 + 8, rec.EncodedSize);
        var buf = new byte[16384];
        int len = LogBlock.HeaderSize + rec.Write(buf.AsSpan(LogBlock.HeaderSize));
        LogBlock.WriteHeader(buf, fsid, 7, 2, 1 << 21, len, 1);
        Assert.Equal("RSRVLOG1", System.Text.Encoding.ASCII.GetString(buf, 0x20, 8));
        Assert.Equal(fsid, new Guid(buf.AsSpan(0x28, 16)));
        Assert.Equal(7UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x38)));
        Assert.Equal(2UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x40)));
        Assert.Equal((ulong)(1 << 21), BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(0x48)));
        Assert.Equal((uint)len, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(0x50)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(0x54)));
        Assert.Equal(ReferenceCrc(buf.AsSpan(0x20, len - 0x20), 0xFFFFFFFF), BinaryPrimitives.ReadUInt32LittleEndian(buf));
        // The record: type, counts, tree, inode, the inode item at 32, then spans, extents, sums.
        int r = LogBlock.HeaderSize;
        Assert.Equal(1, buf[r]);
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(r + 4)));
        Assert.Equal(5UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 16)));
        Assert.Equal(257UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 24)));
        Assert.Equal(9000UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 32 + 0x10)));
        Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 192)));
        Assert.Equal(12288UL, BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 200)));
        Assert.Equal((ulong)(1 << 22), BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(r + 208 + 8 + 21)));
        Assert.Equal(0xAABBCCDDu, BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(r + 208 + 61 + 16)));

        Assert.True(LogBlock.TryRead(buf, fsid, 7, 2, out ulong next, out int l2, out int n, out _));
        Assert.Equal((ulong)(1 << 21), next);
        var back = LogInodeRecord.TryRead(buf.AsSpan(LogBlock.HeaderSize, l2 - LogBlock.HeaderSize), out int used, out _);
        Assert.NotNull(back);
        Assert.Equal(len - LogBlock.HeaderSize, used);
        Assert.Equal(rec.Extents[0], back!.Extents[0]);
        Assert.Equal(rec.Csums[0].Sums, back.Csums[0].Sums);
        Assert.Equal(9000UL, back.Item.FileSize);

        Assert.False(LogBlock.TryRead(buf, fsid, 6, 2, out _, out _, out _, out _));             // another commit's log
        Assert.False(LogBlock.TryRead(buf, fsid, 7, 3, out _, out _, out _, out _));             // another place in the chain
        Assert.False(LogBlock.TryRead(buf, Guid.NewGuid(), 7, 2, out _, out _, out _, out _));   // another filesystem
        var torn = buf.ToArray();
        torn[len - 1] ^= 0xFF;
        Assert.False(LogBlock.TryRead(torn, fsid, 7, 2, out _, out _, out _, out string why));
        Assert.Contains("checksum", why);
        // Counts that claim more than the bytes hold: refused, not thrown.
        var lying = buf.AsSpan(LogBlock.HeaderSize, used).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(lying.AsSpan(12), 1000);
        Assert.Null(LogInodeRecord.TryRead(lying, out _, out _));
        BinaryPrimitives.WriteUInt32LittleEndian(lying.AsSpan(8), uint.MaxValue);
        Assert.Null(LogInodeRecord.TryRead(lying, out _, out _));
    }

    [Fact]
    public void ItemSizesAndOffsetsMatchTheSpec()
    {
        Assert.Equal(96, NodeLayout.HeaderSize);
        Assert.Equal(25, NodeLayout.ItemSize);
        Assert.Equal(33, NodeLayout.KeyPtrSize);
        Assert.Equal(160, InodeItem.Size);
        Assert.Equal(160, RootItem.Size);
        Assert.Equal(32, ExtentItem.Size);
        Assert.Equal(28, ExtentDataRef.Size);
        Assert.Equal(16, BlockGroupItem.Size);
        Assert.Equal(30, DirEntry.HeaderSize);
        Assert.Equal(10, InodeRef.HeaderSize);
        Assert.Equal(21, FileExtentItem.HeaderSize);
        Assert.Equal(53, FileExtentItem.RegularSize);

        var b = new byte[InodeItem.Size];
        new InodeItem { FileSize = 5, Nlink = 3, Mode = 0x81A4, Mtime = new Timespec(10, 20) }.Write(b);
        Assert.Equal(5UL, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(0x10)));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(0x20)));
        Assert.Equal(0x81A4u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(0x2C)));
        Assert.Equal(10L, BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(0x60)));
        Assert.Equal(20u, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(0x68)));

        var fe = new byte[FileExtentItem.RegularSize];
        new FileExtentItem { Type = FileExtentType.Prealloc, DiskBytenr = 7, DiskNumBytes = 8, Offset = 9, NumBytes = 10, RamBytes = 8 }.Write(fe);
        Assert.Equal(2, fe[20]);
        Assert.Equal(7UL, BinaryPrimitives.ReadUInt64LittleEndian(fe.AsSpan(21)));
        Assert.Equal(10UL, BinaryPrimitives.ReadUInt64LittleEndian(fe.AsSpan(45)));
        fe[16] = 1; // compression is not part of v1
        Assert.False(FileExtentItem.TryRead(fe, out _));
    }

    [Fact]
    public void DirEntryDecodingRejectsOverruns()
    {
        var b = new byte[40];
        new DirEntry(new Key(300, 1, 0), 5, 8, "abc"u8, default).Write(b);
        Assert.True(DirEntry.TryRead(b, out var e, out int size));
        Assert.Equal(33, size);
        Assert.Equal(300UL, e.Location.ObjectId);
        Assert.False(DirEntry.TryRead(b.AsSpan(0, 32), out _, out _));
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(27), 60000);
        Assert.False(DirEntry.TryRead(b, out _, out _));
    }

    /// <summary>`inspect super` names the feature bits as SPEC.md §6 does, unknown ones by number.</summary>
    [Fact]
    public void FeatureBitsAreNamedAsTheSpecNamesThem()
    {
        Assert.Equal(["QUOTA", "SNAPSHOTS", "EXTENDED_IREF", "bit 9"], Features.Names(1, 2 | 16 | 512));
        Assert.Empty(Features.Names(0, 0));
        Assert.Equal(["SUBVOLUMES", "UNVERIFIED_COMMIT", "FSYNC_LOG"], Features.Names(0, 1 | 4 | 8));
    }
}

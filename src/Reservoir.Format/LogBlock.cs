using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Format.Items;

namespace Reservoir.Format;

/// <summary>
/// A block of the fsync log (SPEC.md §9): a 88-byte header and inode records, in one node-sized
/// slot of which only <c>length</c> bytes (rounded up to the block size) are written. The blocks
/// of one log form a chain from the superblock's log_start: each names the next, claimed when
/// it was written, and carries the generation of the commit it follows and its place in the
/// chain, so a stale block at the next address (an older log, anything else) ends the chain.
/// </summary>
public static class LogBlock
{
    /// <summary>"RSRVLOG1".</summary>
    public const ulong Magic = 0x31474F4C56525352UL;
    public const int OffCsum = 0x00, OffMagic = 0x20, OffFsid = 0x28, OffGeneration = 0x38,
        OffSequence = 0x40, OffNext = 0x48, OffLength = 0x50, OffRecords = 0x54;
    public const int HeaderSize = 0x58;
    public const int ChecksumStart = 0x20;

    /// <summary>Fills the header of a block whose records are already in
    /// <c>s[HeaderSize..length)</c> and checksums it.</summary>
    public static void WriteHeader(Span<byte> s, Guid fsid, ulong generation, ulong sequence, ulong next, int length, int records)
    {
        s[..ChecksumStart].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffMagic..], Magic);
        fsid.TryWriteBytes(s[OffFsid..]);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffGeneration..], generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffSequence..], sequence);
        BinaryPrimitives.WriteUInt64LittleEndian(s[OffNext..], next);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffLength..], (uint)length);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffRecords..], (uint)records);
        BinaryPrimitives.WriteUInt32LittleEndian(s[OffCsum..], Crc32C.Compute(s[ChecksumStart..length]));
    }

    /// <summary>Checks that <paramref name="s"/> (a whole node-sized slot) holds block
    /// <paramref name="sequence"/> of the log that follows commit <paramref name="generation"/>
    /// of filesystem <paramref name="fsid"/>. False, with the reason, for anything else: the
    /// end of the chain, or a block the power cut tore.</summary>
    public static bool TryRead(ReadOnlySpan<byte> s, Guid fsid, ulong generation, ulong sequence, out ulong next, out int length, out int records, out string why)
    {
        next = 0; length = 0; records = 0;
        if (BinaryPrimitives.ReadUInt64LittleEndian(s[OffMagic..]) != Magic) { why = "no log block magic"; return false; }
        if (new Guid(s.Slice(OffFsid, 16)) != fsid) { why = "a log block of another filesystem"; return false; }
        ulong gen = BinaryPrimitives.ReadUInt64LittleEndian(s[OffGeneration..]);
        ulong seq = BinaryPrimitives.ReadUInt64LittleEndian(s[OffSequence..]);
        if (gen != generation || seq != sequence) { why = $"block {seq} of the log after commit {gen}, not block {sequence} after {generation}"; return false; }
        length = (int)BinaryPrimitives.ReadUInt32LittleEndian(s[OffLength..]);
        if (length < HeaderSize || length > s.Length) { why = $"length {length} outside the block"; return false; }
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(s[OffCsum..]);
        if (stored != Crc32C.Compute(s[ChecksumStart..length]) || s[4..ChecksumStart].ContainsAnyExcept((byte)0)) { why = "checksum mismatch (torn or never written whole)"; return false; }
        next = BinaryPrimitives.ReadUInt64LittleEndian(s[OffNext..]);
        records = (int)BinaryPrimitives.ReadUInt32LittleEndian(s[OffRecords..]);
        why = "";
        return true;
    }
}

/// <summary>
/// One inode's record in the fsync log (SPEC.md §9): its inode item, the file spans whose
/// extent items it replaces, the extent items that cover those spans (holes are gaps), and the
/// checksum items of the data extents written since the commit. Replay makes the inode's item
/// and extents in those spans what they were when fsync wrote the record.
/// </summary>
public sealed class LogInodeRecord
{
    public const byte TypeInode = 1;
    private const int FixedSize = 32 + InodeItem.Size;
    private const int ExtentSize = 8 + FileExtentItem.RegularSize;

    public ulong Tree, Ino;
    public InodeItem Item;
    public readonly List<(ulong Start, ulong End)> Spans = new();
    public readonly List<(ulong Pos, FileExtentItem Fe)> Extents = new();
    public readonly List<(ulong Bytenr, uint[] Sums)> Csums = new();

    public int EncodedSize => FixedSize + Spans.Count * 16 + Extents.Count * ExtentSize + Csums.Sum(c => 16 + c.Sums.Length * 4);

    /// <summary>Encodes the record at the start of <paramref name="s"/> (at least
    /// <see cref="EncodedSize"/> bytes); returns the bytes used.</summary>
    public int Write(Span<byte> s)
    {
        s[..FixedSize].Clear();
        s[0] = TypeInode;
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], (uint)Spans.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], (uint)Extents.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], (uint)Csums.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], Tree);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], Ino);
        Item.Write(s.Slice(32, InodeItem.Size));
        int at = FixedSize;
        foreach (var (a, b) in Spans)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(s[at..], a);
            BinaryPrimitives.WriteUInt64LittleEndian(s[(at + 8)..], b);
            at += 16;
        }
        foreach (var (pos, fe) in Extents)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(s[at..], pos);
            fe.Write(s.Slice(at + 8, FileExtentItem.RegularSize));
            at += ExtentSize;
        }
        foreach (var (bytenr, sums) in Csums)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(s[at..], bytenr);
            BinaryPrimitives.WriteUInt64LittleEndian(s[(at + 8)..], (ulong)sums.Length);
            at += 16;
            foreach (var c in sums) { BinaryPrimitives.WriteUInt32LittleEndian(s[at..], c); at += 4; }
        }
        return at;
    }

    /// <summary>Decodes one record; null, with the reason, when the bytes are not one (never
    /// throws on bad input).</summary>
    public static LogInodeRecord? TryRead(ReadOnlySpan<byte> s, out int used, out string why)
    {
        used = 0;
        if (s.Length < FixedSize) { why = "record shorter than its fixed part"; return null; }
        if (s[0] != TypeInode) { why = $"unknown record type {s[0]}"; return null; }
        long spans = BinaryPrimitives.ReadUInt32LittleEndian(s[4..]), extents = BinaryPrimitives.ReadUInt32LittleEndian(s[8..]), csums = BinaryPrimitives.ReadUInt32LittleEndian(s[12..]);
        var r = new LogInodeRecord
        {
            Tree = BinaryPrimitives.ReadUInt64LittleEndian(s[16..]),
            Ino = BinaryPrimitives.ReadUInt64LittleEndian(s[24..]),
            Item = InodeItem.Read(s.Slice(32, InodeItem.Size)),
        };
        long at = FixedSize;
        if (at + spans * 16 + extents * ExtentSize > s.Length) { why = "record runs past its block"; return null; }
        for (int i = 0; i < spans; i++, at += 16)
        {
            ulong a = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)at..]), b = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)(at + 8)..]);
            if (a >= b) { why = $"empty span [{a}, {b})"; return null; }
            r.Spans.Add((a, b));
        }
        for (int i = 0; i < extents; i++, at += ExtentSize)
        {
            ulong pos = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)at..]);
            if (!FileExtentItem.TryRead(s.Slice((int)at + 8, FileExtentItem.RegularSize), out var fe) || fe.Type == FileExtentType.Inline)
            { why = $"malformed extent item at file offset {pos}"; return null; }
            r.Extents.Add((pos, fe));
        }
        for (int i = 0; i < csums; i++)
        {
            if (at + 16 > s.Length) { why = "record runs past its block"; return null; }
            ulong bytenr = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)at..]);
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(s[(int)(at + 8)..]);
            at += 16;
            if (n == 0 || at + (long)n * 4 > s.Length) { why = "checksum item runs past its block"; return null; }
            var sums = new uint[n];
            for (int k = 0; k < (int)n; k++, at += 4) sums[k] = BinaryPrimitives.ReadUInt32LittleEndian(s[(int)at..]);
            r.Csums.Add((bytenr, sums));
        }
        used = (int)at;
        why = "";
        return r;
    }
}

using System.Buffers.Binary;
using System.IO.Compression;
using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>
/// The data of an ENCODED_WRITE (send stream version 2, `btrfs send --compressed-data`): one
/// compressed btrfs extent as it lies on disk, decoded here into its unencoded bytes, since a
/// Reservoir extent is never compressed. The compression numbers are btrfs's encoded-IO ones
/// (include/uapi/linux/btrfs.h): 0 none, 1 zlib (a zlib stream), 2 zstd (one frame), 3 to 7 LZO
/// in btrfs's framing with sectors of 4 to 64 KiB. An extent decodes to at most 128 KiB (btrfs's
/// largest compressed extent); anything else, or data that does not decode to the length the
/// command says, is refused.
/// </summary>
internal static class EncodedExtent
{
    /// <summary>btrfs's BTRFS_MAX_UNCOMPRESSED: no compressed extent holds more.</summary>
    public const int MaxUnencoded = 128 * 1024;

    /// <summary>Decodes <paramref name="data"/> into the first <paramref name="unencodedLen"/>
    /// bytes of <paramref name="into"/>; the error names what was wrong.</summary>
    public static void Decode(uint compression, ReadOnlySpan<byte> data, int unencodedLen, Span<byte> into, Func<string, Exception> bad)
    {
        if (unencodedLen < 0 || unencodedLen > MaxUnencoded || into.Length < unencodedLen)
            throw bad($"an encoded extent of {unencodedLen} bytes (at most {MaxUnencoded})");
        into = into[..unencodedLen];
        int got;
        try
        {
            switch (compression)
            {
                case 0:
                    if (data.Length < unencodedLen) throw bad($"{data.Length} bytes of unencoded data for an extent of {unencodedLen}");
                    data[..unencodedLen].CopyTo(into);
                    return;
                case 1:
                    got = Inflate(data, into);
                    break;
                case 2:
                    got = Unzstd(data, into);
                    break;
                case >= 3 and <= 7:
                    got = LzoExtent(data, into, 4096 << (int)(compression - 3), bad);
                    break;
                default:
                    throw bad($"compression {compression} (known: 0 none, 1 zlib, 2 zstd, 3-7 lzo)");
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or ZstdSharp.ZstdException or IndexOutOfRangeException or ArgumentException)
        {
            throw bad($"the compressed data does not decode ({ex.Message})");
        }
        // btrfs leaves an extent's tail past its data unwritten: what did not decode is zeros.
        into[got..].Clear();
    }

    /// <summary>One zstd frame, followed by the zeros that pad btrfs's extent to its sector (and
    /// it may decode to less than the sector-rounded length the command gives).</summary>
    private static unsafe int Unzstd(ReadOnlySpan<byte> data, Span<byte> into)
    {
        nuint frame;
        fixed (byte* p = data) frame = ZstdSharp.Unsafe.Methods.ZSTD_findFrameCompressedSize(p, (nuint)data.Length);
        if (ZstdSharp.Unsafe.Methods.ZSTD_isError(frame)) throw new InvalidDataException("not a zstd frame");
        using var z = new ZstdSharp.Decompressor();
        return z.Unwrap(data[..(int)frame], into);
    }

    private static unsafe int Inflate(ReadOnlySpan<byte> data, Span<byte> into)
    {
        fixed (byte* p = data)
        {
            using var ms = new UnmanagedMemoryStream(p, data.Length);
            using var z = new ZLibStream(ms, CompressionMode.Decompress);
            return z.ReadAtLeast(into, into.Length, throwOnEndOfStream: false);
        }
    }

    /// <summary>btrfs's LZO extent (fs/btrfs/lzo.c): u32 total length, then segments, each a u32
    /// length and LZO1X data that decodes to one sector at most; a segment's header never
    /// crosses a sector boundary (the rest of the sector is zeros).</summary>
    private static int LzoExtent(ReadOnlySpan<byte> data, Span<byte> into, int sector, Func<string, Exception> bad)
    {
        if (data.Length < 4) throw bad("an LZO extent shorter than its header");
        int total = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(data), (uint)data.Length);
        int cur = 4, out0 = 0;
        while (cur < total && out0 < into.Length)
        {
            if (total - cur < 4) throw bad("an LZO segment header past the extent's end");
            int seg = (int)BinaryPrimitives.ReadUInt32LittleEndian(data[cur..]);
            cur += 4;
            if (seg <= 0 || seg > total - cur) throw bad($"an LZO segment of {seg} bytes");
            out0 += Lzo1x.Decompress(data.Slice(cur, seg), into[out0..Math.Min(into.Length, out0 + sector)]);
            cur += seg;
            int left = sector - cur % sector;
            if (left < 4) cur += left;
        }
        return out0;
    }
}

/// <summary>
/// LZO1X decompression (the format of lzo1x_1_compress, which btrfs's LZO uses), bounds-checked:
/// a damaged or hostile input ends in an exception, never a read or write outside the spans.
/// Opcodes: 0-15 a literal run (after a match: a short M1 match), 16-31 M4 (distances beyond
/// 16 KiB; distance 0 ends the stream), 32-63 M3, 64-255 M2; the low two bits of a match's
/// last distance byte are how many literals follow it.
/// </summary>
internal static class Lzo1x
{
    private const int M2MaxOffset = 0x0800;

    public static int Decompress(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        int ip = 0, op = 0, t;
        void Literals(ReadOnlySpan<byte> s, Span<byte> d, ref int i, ref int o, int n)
        {
            s.Slice(i, n).CopyTo(d.Slice(o, n));
            i += n;
            o += n;
        }
        void Match(Span<byte> d, ref int o, int from, int n)
        {
            if (from < 0 || from >= o) throw new InvalidDataException($"LZO: a match {o - from} bytes back from {o}");
            if (o + n > d.Length) throw new InvalidDataException("LZO: output longer than a sector");
            for (int k = 0; k < n; k++) d[o++] = d[from++]; // may overlap: byte by byte
        }
        int Run(ReadOnlySpan<byte> s, ref int i, int t0, int add)
        {
            if (t0 != 0) return t0;
            int n = 0;
            while (s[i] == 0) { n += 255; i++; if (n > 1 << 24) throw new InvalidDataException("LZO: a run too long"); }
            return n + add + s[i++];
        }

        // minilzo's labels as states: Top reads an opcode where a literal run may start;
        // FirstLiteralRun follows a literal run (an opcode below 16 is then a 3-byte match far
        // back); Match decodes the match opcode in t; MatchDone takes the literal count from the
        // match's last distance byte; MatchNext copies those literals and reads the next opcode.
        var state = State.Top;
        if (src[0] > 17)
        {
            t = src[ip++] - 17;
            if (t < 4) state = State.MatchNext;
            else
            {
                Literals(src, dst, ref ip, ref op, t);
                state = State.FirstLiteralRun;
            }
        }
        else t = 0;
        while (true)
        {
            switch (state)
            {
                case State.Top:
                    t = src[ip++];
                    if (t >= 16) { state = State.Match; break; }
                    t = Run(src, ref ip, t, 15);
                    Literals(src, dst, ref ip, ref op, t + 3);
                    state = State.FirstLiteralRun;
                    break;
                case State.FirstLiteralRun:
                    t = src[ip++];
                    if (t >= 16) { state = State.Match; break; }
                    Match(dst, ref op, op - (1 + M2MaxOffset) - (t >> 2) - (src[ip++] << 2), 3);
                    state = State.MatchDone;
                    break;
                case State.Match:
                    if (t >= 64)
                    {
                        int from = op - 1 - ((t >> 2) & 7) - (src[ip++] << 3);
                        Match(dst, ref op, from, (t >> 5) + 1);
                    }
                    else if (t >= 32)
                    {
                        t = Run(src, ref ip, t & 31, 31);
                        int from = op - 1 - ((src[ip] >> 2) + (src[ip + 1] << 6));
                        ip += 2;
                        Match(dst, ref op, from, t + 2);
                    }
                    else if (t >= 16)
                    {
                        int from = op - ((t & 8) << 11);
                        t = Run(src, ref ip, t & 7, 7);
                        from -= (src[ip] >> 2) + (src[ip + 1] << 6);
                        ip += 2;
                        if (from == op) return op; // the end marker
                        Match(dst, ref op, from - 0x4000, t + 2);
                    }
                    else Match(dst, ref op, op - 1 - (t >> 2) - (src[ip++] << 2), 2);
                    state = State.MatchDone;
                    break;
                case State.MatchDone:
                    t = src[ip - 2] & 3;
                    state = t == 0 ? State.Top : State.MatchNext;
                    break;
                case State.MatchNext:
                    Literals(src, dst, ref ip, ref op, t);
                    t = src[ip++];
                    state = State.Match;
                    break;
            }
        }
    }

    private enum State { Top, FirstLiteralRun, Match, MatchDone, MatchNext }
}

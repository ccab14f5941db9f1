using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>
/// Reads a send stream (version 1, as `btrfs send` writes by default and `reservoir send`
/// always; versions 2 and 3, as `btrfs send --proto 2|3` or `--compressed-data` write) one
/// command at a time into one reused buffer. Every malformed input is an
/// <see cref="FsException"/> with EINVAL naming the command's position: a bad magic, an unknown
/// version, a command longer than its version allows, a crc that does not match, a command or
/// attribute its version does not have, an attribute running past its command, a stream that
/// ends inside a command. Attributes are looked up by type; each value is a view of the
/// buffer, valid until the next <see cref="Next"/>.
/// </summary>
public sealed class SendStreamReader
{
    private readonly Stream _in;
    private readonly byte[] _buf;
    private readonly uint _version;
    private readonly int[] _at = new int[(int)SendAttr.Max + 1], _len = new int[(int)SendAttr.Max + 1];
    private int _payload;

    public SendCommand Command { get; private set; }
    /// <summary>The stream's version (1 to 3).</summary>
    public uint Version => _version;
    /// <summary>Byte offset of the current command in the stream (for error messages).</summary>
    public long Position { get; private set; }
    public long CommandsRead { get; private set; }

    public SendStreamReader(Stream input)
    {
        _in = input;
        Span<byte> h = stackalloc byte[SendStreamFormat.StreamHeaderSize];
        if (ReadFull(h) != h.Length || !h[..13].SequenceEqual(SendStreamFormat.Magic))
            throw Bad("not a send stream (no \"btrfs-stream\" header)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(h[13..]);
        if (version is 0 or > SendStreamFormat.NewestVersion)
            throw Bad($"send stream version {version}: versions 1 to {SendStreamFormat.NewestVersion} are read");
        _version = version;
        _buf = new byte[version == 1 ? SendStreamFormat.MaxCommandSize : SendStreamFormat.MaxCommandSizeV2];
        Position = h.Length;
    }

    /// <summary>The next stream on <paramref name="input"/> (streams may follow one another, as
    /// `cat a b` gives them), or null at a clean end of input; the input need not seek.</summary>
    public static SendStreamReader? TryOpen(Stream input)
    {
        int first = input.ReadByte();
        return first < 0 ? null : new SendStreamReader(new PrefixStream((byte)first, input));
    }

    private FsException Bad(string what) => new(Errno.EINVAL, Position > 0 ? $"{what} (command {CommandsRead + 1}, at byte {Position})" : what);

    /// <summary>As much of <paramref name="b"/> as the input has (all of it but at its end).</summary>
    private int ReadFull(Span<byte> b) => _in.ReadAtLeast(b, b.Length, throwOnEndOfStream: false);

    /// <summary>Reads the next command; false at the end of the input (which must fall between
    /// commands).</summary>
    public bool Next()
    {
        if (Command != 0) { Position += SendStreamFormat.CommandHeaderSize + _payload; CommandsRead++; }
        var hdr = _buf.AsSpan(0, SendStreamFormat.CommandHeaderSize);
        int got = ReadFull(hdr);
        if (got == 0) { Command = 0; _payload = 0; return false; }
        if (got != hdr.Length) throw Bad("the stream ends inside a command header");
        uint len = BinaryPrimitives.ReadUInt32LittleEndian(hdr);
        if (len > _buf.Length - SendStreamFormat.CommandHeaderSize)
            throw Bad($"a command of {len} bytes, more than version {_version} allows");
        _payload = (int)len;
        if (ReadFull(_buf.AsSpan(SendStreamFormat.CommandHeaderSize, _payload)) != _payload)
            throw Bad("the stream ends inside a command");
        var cmd = (SendCommand)BinaryPrimitives.ReadUInt16LittleEndian(hdr[4..]);
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(hdr[6..]);
        hdr[6..].Clear();
        if (SendStreamFormat.Crc(_buf.AsSpan(0, SendStreamFormat.CommandHeaderSize + _payload)) != crc)
            throw Bad($"command {(ushort)cmd}: the checksum does not match (damaged stream)");
        if (cmd == 0 || cmd > SendStreamFormat.LastCommand(_version))
            throw Bad($"unknown command {(ushort)cmd} (in a version {_version} stream)");
        Command = cmd;
        Array.Fill(_at, -1);
        int p = SendStreamFormat.CommandHeaderSize, end = p + _payload;
        while (p < end)
        {
            if (end - p < 2) throw Bad($"{cmd}: a truncated attribute");
            int type = BinaryPrimitives.ReadUInt16LittleEndian(_buf.AsSpan(p));
            if (type == 0 || type > (int)SendStreamFormat.LastAttr(_version)) throw Bad($"{cmd}: unknown attribute {type}");
            if (type != (int)SendAttr.Data || _version == 1)
            {
                if (end - p < SendStreamFormat.TlvHeaderSize) throw Bad($"{cmd}: a truncated attribute");
            }
            else
            {
                // Version 2's DATA has a type and no length: the rest of the command.
                p += 2;
                _at[type] = p;
                _len[type] = end - p;
                break;
            }
            int l = BinaryPrimitives.ReadUInt16LittleEndian(_buf.AsSpan(p + 2));
            p += SendStreamFormat.TlvHeaderSize;
            if (l > end - p) throw Bad($"{cmd}: attribute {type} runs past its command");
            _at[type] = p;
            _len[type] = l;
            p += l;
        }
        return true;
    }

    public bool Has(SendAttr a) => _at[(int)a] >= 0;

    public ReadOnlySpan<byte> Bytes(SendAttr a)
    {
        int at = _at[(int)a];
        if (at < 0) throw Bad($"{Command}: attribute {a} missing");
        return _buf.AsSpan(at, _len[(int)a]);
    }

    public ulong U64(SendAttr a)
    {
        var b = Bytes(a);
        if (b.Length != 8) throw Bad($"{Command}: attribute {a} is {b.Length} bytes, not 8");
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }

    /// <summary>A path attribute. Paths are relative to the subvolume received into; one that
    /// climbs out of it (an absolute path, a ".." component) or holds a NUL is refused, since a
    /// receiver writes where the stream says.</summary>
    public string Path(SendAttr a)
    {
        var b = Bytes(a);
        if (b.IndexOf((byte)0) >= 0) throw Bad($"{Command}: a path with a NUL byte");
        var s = Encoding.UTF8.GetString(b);
        if (s.StartsWith('/') || s == ".." || s.StartsWith("../") || s.EndsWith("/..") || s.Contains("/../"))
            throw Bad($"{Command}: path '{s}' leaves the subvolume");
        return s;
    }

    /// <summary>A number attribute of 4 or 8 bytes (version 2's mode and compression fields are
    /// 4).</summary>
    public ulong Number(SendAttr a)
    {
        var b = Bytes(a);
        return b.Length switch
        {
            4 => BinaryPrimitives.ReadUInt32LittleEndian(b),
            8 => BinaryPrimitives.ReadUInt64LittleEndian(b),
            _ => throw Bad($"{Command}: attribute {a} is {b.Length} bytes, not a number"),
        };
    }

    public Guid Uuid(SendAttr a)
    {
        var b = Bytes(a);
        if (b.Length != 16) throw Bad($"{Command}: attribute {a} is {b.Length} bytes, not a uuid");
        return new Guid(b);
    }

    public Timespec Time(SendAttr a)
    {
        var b = Bytes(a);
        if (b.Length != 12) throw Bad($"{Command}: attribute {a} is {b.Length} bytes, not a timespec");
        uint ns = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
        if (ns >= 1_000_000_000) throw Bad($"{Command}: {ns} nanoseconds");
        return new Timespec(BinaryPrimitives.ReadInt64LittleEndian(b), ns);
    }

    public FsException Error(string what) => Bad(what);

    /// <summary>One byte already read, then the rest of the input.</summary>
    private sealed class PrefixStream(byte first, Stream inner) : Common.IO.ForwardStream
    {
        private bool _used;

        public override int Read(Span<byte> buffer)
        {
            if (buffer.Length == 0) return 0;
            if (!_used) { _used = true; buffer[0] = first; return 1; }
            return inner.Read(buffer);
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override bool CanRead => true;
        public override bool CanWrite => false;
    }
}

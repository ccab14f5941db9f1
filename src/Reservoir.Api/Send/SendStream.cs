using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>Commands of btrfs's send stream (the kernel's fs/btrfs/send.h): the numbers are the
/// format, so `btrfs receive` reads what `reservoir send` writes and the other way round.
/// Version 1 has the first 22; version 2 (`btrfs send --proto 2`, `--compressed-data`) adds
/// FALLOCATE, FILEATTR and ENCODED_WRITE; version 3 ENABLE_VERITY.</summary>
public enum SendCommand : ushort
{
    Subvol = 1, Snapshot = 2, Mkfile = 3, Mkdir = 4, Mknod = 5, Mkfifo = 6, Mksock = 7, Symlink = 8,
    Rename = 9, Link = 10, Unlink = 11, Rmdir = 12, SetXattr = 13, RemoveXattr = 14, Write = 15,
    Clone = 16, Truncate = 17, Chmod = 18, Chown = 19, Utimes = 20, End = 21, UpdateExtent = 22,
    Fallocate = 23, Fileattr = 24, EncodedWrite = 25, EnableVerity = 26,
}

/// <summary>Attributes of a command (type-length-value, 2 + 2 bytes of header each).</summary>
public enum SendAttr : ushort
{
    Uuid = 1, Ctransid = 2, Ino = 3, Size = 4, Mode = 5, Uid = 6, Gid = 7, Rdev = 8, Ctime = 9,
    Mtime = 10, Atime = 11, Otime = 12, XattrName = 13, XattrData = 14, Path = 15, PathTo = 16,
    PathLink = 17, FileOffset = 18, Data = 19, CloneUuid = 20, CloneCtransid = 21, ClonePath = 22,
    CloneOffset = 23, CloneLen = 24,
    // version 2
    FallocateMode = 25, Fileattr = 26, UnencodedFileLen = 27, UnencodedLen = 28, UnencodedOffset = 29,
    Compression = 30, Encryption = 31,
    // version 3
    VerityAlgorithm = 32, VerityBlockSize = 33, VeritySaltData = 34, VeritySigData = 35,
    Max = 35,
}

/// <summary>
/// The framing both directions share: a 17-byte stream header ("btrfs-stream\0", version u32),
/// then commands, each a 10-byte header (payload length u32, command u16, crc u32) and its
/// attributes. The crc is CRC32C started from 0 with no final inversion (btrfs_crc32c(0, …)),
/// over the header with its crc field zero and the payload. A version-1 command, header
/// included, is at most 64 KiB, so a WRITE carries at most 48 KiB of data. From version 2 a
/// command may reach 144 KiB (16 KiB and the 128 KiB of a compressed extent), and the DATA
/// attribute has no length: it is the last one and runs to the end of its command.
/// </summary>
public static class SendStreamFormat
{
    public static ReadOnlySpan<byte> Magic => "btrfs-stream\0"u8;
    public const int StreamHeaderSize = 17, CommandHeaderSize = 10, TlvHeaderSize = 4;
    public const int Version = 1;
    public const int MaxCommandSize = 64 * 1024;
    /// <summary>The newest version read, and the largest command from version 2 on (the kernel's
    /// BTRFS_SEND_BUF_SIZE_V2).</summary>
    public const int NewestVersion = 3, MaxCommandSizeV2 = 144 * 1024;

    /// <summary>The last command and attribute each version knows.</summary>
    public static SendCommand LastCommand(uint version) => version switch { 1 => SendCommand.UpdateExtent, 2 => SendCommand.EncodedWrite, _ => SendCommand.EnableVerity };
    public static SendAttr LastAttr(uint version) => version switch { 1 => SendAttr.CloneLen, 2 => SendAttr.Encryption, _ => SendAttr.VeritySigData };
    public const int MaxWriteData = 48 * 1024;

    /// <summary>What a SUBVOL or SNAPSHOT command may name: one path component.</summary>
    public static bool IsSubvolumeName(string name) => name.Length > 0 && !name.Contains('/') && name is not ("." or "..");

    /// <summary>btrfs_crc32c(0, data): the register starts at 0 and is not inverted at the end,
    /// which is what <see cref="Crc32C.Compute"/> gives for seed ~0, inverted.</summary>
    public static uint Crc(ReadOnlySpan<byte> data) => ~Crc32C.Compute(data, 0xFFFFFFFF);
}

/// <summary>
/// Writes a send stream, one command at a time, into one reused buffer (64 KiB for version 1,
/// 144 KiB for version 2; no allocation per command). Begin a command, add its attributes,
/// finish it; the writer refuses a command that would not fit its version's limit rather than
/// write one that receivers reject. Version 2 (`send --proto 2`) writes DATA without a length,
/// as the last attribute, up to 128 KiB a WRITE, and has FALLOCATE for punched holes.
/// </summary>
public sealed class SendStreamWriter
{
    private readonly Stream _out;
    private readonly byte[] _buf;
    private int _len = -1;
    /// <summary>The open command has its version-2 DATA: nothing may follow it.</summary>
    private bool _closedByData;

    public long CommandsWritten { get; private set; }
    public long BytesWritten { get; private set; }
    public int Version { get; }
    /// <summary>The most data one WRITE carries: 48 KiB in version 1 (btrfs's), 128 KiB from 2.</summary>
    public int MaxWriteData => Version == 1 ? SendStreamFormat.MaxWriteData : 128 * 1024;

    /// <param name="header">false: the stream goes on one already begun (`send -e`)</param>
    public SendStreamWriter(Stream output, int version = SendStreamFormat.Version, bool header = true)
    {
        if (version is not (1 or 2)) throw new FsException(Errno.EINVAL, $"send stream version {version}: 1 or 2 are written");
        _out = output;
        Version = version;
        _buf = new byte[version == 1 ? SendStreamFormat.MaxCommandSize : SendStreamFormat.MaxCommandSizeV2];
        if (!header) return;
        Span<byte> h = stackalloc byte[SendStreamFormat.StreamHeaderSize];
        SendStreamFormat.Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt32LittleEndian(h[13..], (uint)version);
        _out.Write(h);
        BytesWritten = h.Length;
    }

    public SendStreamWriter Begin(SendCommand cmd)
    {
        if (_len >= 0) throw new InvalidOperationException("send stream: a command is already open");
        _buf.AsSpan(0, SendStreamFormat.CommandHeaderSize).Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(4), (ushort)cmd);
        _len = SendStreamFormat.CommandHeaderSize;
        _closedByData = false;
        return this;
    }

    /// <summary>Room left in the open command for one more attribute's value.</summary>
    public int Room => _buf.Length - _len - SendStreamFormat.TlvHeaderSize;

    public SendStreamWriter Bytes(SendAttr a, ReadOnlySpan<byte> v)
    {
        if (_len < 0) throw new InvalidOperationException("send stream: no command open");
        if (_closedByData) throw new InvalidOperationException("send stream: an attribute after version 2's DATA");
        if (a == SendAttr.Data && Version >= 2)
        {
            if (v.Length > _buf.Length - _len - 2)
                throw new FsException(Errno.ENAMETOOLONG, $"send stream: {v.Length} bytes of data do not fit a command");
            BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(_len), (ushort)a);
            v.CopyTo(_buf.AsSpan(_len + 2));
            _len += 2 + v.Length;
            _closedByData = true;
            return this;
        }
        if (v.Length > Room || v.Length > ushort.MaxValue)
            throw new FsException(Errno.ENAMETOOLONG, $"send stream: attribute {a} of {v.Length} bytes does not fit a command");
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(_len), (ushort)a);
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(_len + 2), (ushort)v.Length);
        v.CopyTo(_buf.AsSpan(_len + SendStreamFormat.TlvHeaderSize));
        _len += SendStreamFormat.TlvHeaderSize + v.Length;
        return this;
    }

    public SendStreamWriter U64(SendAttr a, ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        return Bytes(a, b);
    }

    public SendStreamWriter Path(SendAttr a, string path)
    {
        int n = Encoding.UTF8.GetByteCount(path);
        Span<byte> b = n <= 1024 ? stackalloc byte[n] : new byte[n];
        Encoding.UTF8.GetBytes(path, b);
        return Bytes(a, b);
    }

    public SendStreamWriter U32(SendAttr a, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        return Bytes(a, b);
    }

    public SendStreamWriter Uuid(SendAttr a, Guid g)
    {
        Span<byte> b = stackalloc byte[16];
        g.TryWriteBytes(b);
        return Bytes(a, b);
    }

    /// <summary>A timespec: seconds i64 and nanoseconds u32, as btrfs_timespec.</summary>
    public SendStreamWriter Time(SendAttr a, Timespec t)
    {
        Span<byte> b = stackalloc byte[12];
        BinaryPrimitives.WriteInt64LittleEndian(b, t.Sec);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], t.Nsec);
        return Bytes(a, b);
    }

    public void Finish()
    {
        if (_len < 0) throw new InvalidOperationException("send stream: no command open");
        var cmd = _buf.AsSpan(0, _len);
        BinaryPrimitives.WriteUInt32LittleEndian(cmd, (uint)(_len - SendStreamFormat.CommandHeaderSize));
        BinaryPrimitives.WriteUInt32LittleEndian(cmd[6..], SendStreamFormat.Crc(cmd));
        _out.Write(cmd);
        BytesWritten += _len;
        CommandsWritten++;
        _len = -1;
    }
}

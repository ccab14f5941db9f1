using System.Buffers.Binary;
using System.Text;

namespace Reservoir.Fuse.Protocol;

/// <summary>
/// Reads one request in place: the 40-byte header, then the opcode's fixed struct and trailing
/// names. A request shorter than it claims, or missing a name's NUL, is bad input: methods
/// return false and the dispatcher answers EINVAL; nothing throws on short data.
/// </summary>
public ref struct RequestReader
{
    private readonly ReadOnlySpan<byte> _msg;
    private int _pos;

    public RequestReader(ReadOnlySpan<byte> msg)
    {
        _msg = msg;
        _pos = Abi.InHeaderSize;
    }

    public readonly bool HeaderValid => _msg.Length >= Abi.InHeaderSize && Length == (uint)_msg.Length;
    public readonly uint Length => BinaryPrimitives.ReadUInt32LittleEndian(_msg);
    public readonly Opcode Opcode => (Opcode)BinaryPrimitives.ReadUInt32LittleEndian(_msg[4..]);
    public readonly ulong Unique => BinaryPrimitives.ReadUInt64LittleEndian(_msg[8..]);
    public readonly ulong NodeId => BinaryPrimitives.ReadUInt64LittleEndian(_msg[16..]);
    public readonly uint Uid => BinaryPrimitives.ReadUInt32LittleEndian(_msg[24..]);
    public readonly uint Gid => BinaryPrimitives.ReadUInt32LittleEndian(_msg[28..]);
    public readonly uint Pid => BinaryPrimitives.ReadUInt32LittleEndian(_msg[32..]);
    public readonly int Remaining => _msg.Length - _pos;

    /// <summary>The next <paramref name="size"/> bytes (an opcode's fixed struct).</summary>
    public bool TryStruct(int size, out ReadOnlySpan<byte> s)
    {
        s = default;
        if (Remaining < size) return false;
        s = _msg.Slice(_pos, size);
        _pos += size;
        return true;
    }

    /// <summary>A NUL-terminated name (the NUL consumed, not returned).</summary>
    public bool TryName(out ReadOnlySpan<byte> name)
    {
        name = default;
        int z = _msg[_pos..].IndexOf((byte)0);
        if (z < 0) return false;
        name = _msg.Slice(_pos, z);
        _pos += z + 1;
        return true;
    }

    public bool TryBytes(int n, out ReadOnlySpan<byte> b)
    {
        b = default;
        if (n < 0 || Remaining < n) return false;
        b = _msg.Slice(_pos, n);
        _pos += n;
        return true;
    }

    public static string Show(ReadOnlySpan<byte> name) => Encoding.UTF8.GetString(name);
}

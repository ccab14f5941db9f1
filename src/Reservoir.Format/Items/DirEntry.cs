using System.Buffers.Binary;

namespace Reservoir.Format.Items;

/// <summary>
/// One entry of a DIR_ITEM, DIR_INDEX or XATTR_ITEM (SPEC.md §5.3). Header of 30 bytes:
/// location key (17), transid u64, data_len u16, name_len u16, type u8; then name, then data.
/// DIR_ITEM and XATTR_ITEM items hold one or more entries back to back (name-hash collisions);
/// DIR_INDEX items hold exactly one.
/// </summary>
public readonly ref struct DirEntry
{
    public const int HeaderSize = 30;
    public readonly Key Location;
    public readonly ulong Transid;
    public readonly byte FileType;
    public readonly ReadOnlySpan<byte> Name;
    public readonly ReadOnlySpan<byte> Data;

    public DirEntry(Key location, ulong transid, byte fileType, ReadOnlySpan<byte> name, ReadOnlySpan<byte> data)
    {
        Location = location; Transid = transid; FileType = fileType; Name = name; Data = data;
    }

    public int EncodedSize => HeaderSize + Name.Length + Data.Length;

    public static int SizeOf(int nameLen, int dataLen) => HeaderSize + nameLen + dataLen;

    public void Write(Span<byte> s)
    {
        Location.Write(s);
        BinaryPrimitives.WriteUInt64LittleEndian(s[17..], Transid);
        BinaryPrimitives.WriteUInt16LittleEndian(s[25..], (ushort)Data.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(s[27..], (ushort)Name.Length);
        s[29] = FileType;
        Name.CopyTo(s[HeaderSize..]);
        Data.CopyTo(s[(HeaderSize + Name.Length)..]);
    }

    /// <summary>Decodes the entry at the start of <paramref name="s"/>; false if it overruns.</summary>
    public static bool TryRead(ReadOnlySpan<byte> s, out DirEntry e, out int size)
    {
        e = default; size = 0;
        if (s.Length < HeaderSize) return false;
        int dataLen = BinaryPrimitives.ReadUInt16LittleEndian(s[25..]);
        int nameLen = BinaryPrimitives.ReadUInt16LittleEndian(s[27..]);
        size = HeaderSize + nameLen + dataLen;
        if (size > s.Length || nameLen == 0) return false;
        e = new DirEntry(Key.Read(s), BinaryPrimitives.ReadUInt64LittleEndian(s[17..]), s[29],
            s.Slice(HeaderSize, nameLen), s.Slice(HeaderSize + nameLen, dataLen));
        return true;
    }
}

/// <summary>File type codes in directory entries (as DT_* in dirent.h).</summary>
public static class FileTypes
{
    public const byte Unknown = 0, Fifo = 1, Chr = 2, Dir = 4, Blk = 6, Reg = 8, Lnk = 10, Sock = 12;
    /// <summary>DT_* from st_mode's S_IFMT bits.</summary>
    public static byte FromMode(uint mode) => (byte)((mode >> 12) & 0xF);
}

/// <summary>Name hash used as the offset of DIR_ITEM and XATTR_ITEM keys.</summary>
public static class NameHash
{
    public static ulong Of(ReadOnlySpan<byte> name) => Common.Crc32C.Compute(name, 0xFFFFFFFE);
}

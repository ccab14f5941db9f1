using System.Buffers.Binary;

namespace Reservoir.Format.Items;

public enum FileExtentType : byte
{
    /// <summary>Data stored in the item itself (symlink targets).</summary>
    Inline = 0,
    /// <summary>Data in an extent on the device.</summary>
    Regular = 1,
    /// <summary>Allocated but unwritten: reads as zeros (fallocate).</summary>
    Prealloc = 2,
}

/// <summary>
/// EXTENT_DATA (objectid = inode, offset = file offset), SPEC.md §5.4. 21-byte header:
/// generation u64, ram_bytes u64, compression u8, encryption u8, other u16, type u8. Inline
/// extents are followed by their data; regular and prealloc extents by disk_bytenr u64,
/// disk_num_bytes u64, offset u64 (into the extent), num_bytes u64 (53 bytes in all).
/// A hole is the absence of an item.
/// </summary>
public struct FileExtentItem
{
    public const int HeaderSize = 21;
    public const int RegularSize = 53;
    public ulong Generation;
    public ulong RamBytes;
    public FileExtentType Type;
    public ulong DiskBytenr;
    public ulong DiskNumBytes;
    public ulong Offset;
    public ulong NumBytes;

    public static bool TryRead(ReadOnlySpan<byte> s, out FileExtentItem f)
    {
        f = default;
        if (s.Length < HeaderSize) return false;
        f.Generation = BinaryPrimitives.ReadUInt64LittleEndian(s);
        f.RamBytes = BinaryPrimitives.ReadUInt64LittleEndian(s[8..]);
        f.Type = (FileExtentType)s[20];
        if (s[16] != 0 || s[17] != 0) return false; // compression, encryption: none in v1
        if (f.Type == FileExtentType.Inline)
        {
            f.NumBytes = (ulong)(s.Length - HeaderSize);
            return f.RamBytes == f.NumBytes;
        }
        if (f.Type is not (FileExtentType.Regular or FileExtentType.Prealloc) || s.Length != RegularSize) return false;
        f.DiskBytenr = BinaryPrimitives.ReadUInt64LittleEndian(s[21..]);
        f.DiskNumBytes = BinaryPrimitives.ReadUInt64LittleEndian(s[29..]);
        f.Offset = BinaryPrimitives.ReadUInt64LittleEndian(s[37..]);
        f.NumBytes = BinaryPrimitives.ReadUInt64LittleEndian(s[45..]);
        return true;
    }

    public readonly void WriteHeader(Span<byte> s)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(s, Generation);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], RamBytes);
        s[16] = 0; s[17] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(s[18..], 0);
        s[20] = (byte)Type;
    }

    public readonly void Write(Span<byte> s)
    {
        WriteHeader(s);
        BinaryPrimitives.WriteUInt64LittleEndian(s[21..], DiskBytenr);
        BinaryPrimitives.WriteUInt64LittleEndian(s[29..], DiskNumBytes);
        BinaryPrimitives.WriteUInt64LittleEndian(s[37..], Offset);
        BinaryPrimitives.WriteUInt64LittleEndian(s[45..], NumBytes);
    }
}

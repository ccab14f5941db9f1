using System.Buffers.Binary;
using Reservoir.Engine;
using Reservoir.Format;

namespace Reservoir.Fuse.Protocol;

/// <summary>
/// Builds one reply in a caller-owned buffer: the 16-byte header (filled in by
/// <see cref="Finish"/>) followed by the opcode's struct. A reply is written to the device in one
/// write whose length equals the header's len (the kernel rejects anything else).
/// </summary>
public ref struct ReplyWriter
{
    private readonly Span<byte> _buf;
    private int _pos;

    public ReplyWriter(Span<byte> buf)
    {
        _buf = buf;
        _pos = Abi.OutHeaderSize;
    }

    /// <summary>st_ino and d_ino are the inode's number within its subvolume, not the node id
    /// (which joins the tree id to it): for mounts that show one subvolume each (-o
    /// submounts), where the subvolume's own st_dev keeps (st_dev, st_ino) unique, as on btrfs.</summary>
    public bool LocalInodeNumbers { get; init; }

    /// <summary>The number st_ino and d_ino show for node <paramref name="nodeId"/>.</summary>
    public readonly ulong InoOf(ulong nodeId) => LocalInodeNumbers ? Engine.Inodes.NodeIds.Decode(nodeId).Ino : nodeId;

    public readonly int Length => _pos;
    public readonly int Room => _buf.Length - _pos;

    public Span<byte> Take(int n)
    {
        var s = _buf.Slice(_pos, n);
        s.Clear();
        _pos += n;
        return s;
    }

    /// <summary>Gives back the last <paramref name="n"/> bytes taken (a short read).</summary>
    public void Unwrite(int n) => _pos -= n;

    public void U32(uint v) => BinaryPrimitives.WriteUInt32LittleEndian(Take(4), v);
    public void U64(ulong v) => BinaryPrimitives.WriteUInt64LittleEndian(Take(8), v);
    public void Bytes(ReadOnlySpan<byte> b) => b.CopyTo(Take(b.Length));

    /// <summary>Writes the header and returns the whole reply.</summary>
    public readonly ReadOnlySpan<byte> Finish(ulong unique, int errno = 0)
    {
        int len = errno == 0 ? _pos : Abi.OutHeaderSize;
        BinaryPrimitives.WriteUInt32LittleEndian(_buf, (uint)len);
        BinaryPrimitives.WriteInt32LittleEndian(_buf[4..], -errno);
        BinaryPrimitives.WriteUInt64LittleEndian(_buf[8..], unique);
        return _buf[..len];
    }

    /// <summary>fuse_attr (88 bytes).</summary>
    public void Attr(in InodeAttr a)
    {
        var s = Take(Abi.AttrSize);
        BinaryPrimitives.WriteUInt64LittleEndian(s, InoOf(a.Ino));
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], a.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], a.Blocks);
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], (ulong)a.Atime.Sec);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], (ulong)a.Mtime.Sec);
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], (ulong)a.Ctime.Sec);
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], a.Atime.Nsec);
        BinaryPrimitives.WriteUInt32LittleEndian(s[52..], a.Mtime.Nsec);
        BinaryPrimitives.WriteUInt32LittleEndian(s[56..], a.Ctime.Nsec);
        BinaryPrimitives.WriteUInt32LittleEndian(s[60..], a.Mode);
        BinaryPrimitives.WriteUInt32LittleEndian(s[64..], a.Nlink);
        BinaryPrimitives.WriteUInt32LittleEndian(s[68..], a.Uid);
        BinaryPrimitives.WriteUInt32LittleEndian(s[72..], a.Gid);
        BinaryPrimitives.WriteUInt32LittleEndian(s[76..], (uint)a.Rdev);
        BinaryPrimitives.WriteUInt32LittleEndian(s[80..], a.BlockSize);
    }

    /// <summary>fuse_entry_out (128 bytes).</summary>
    public void Entry(ulong nodeId, in InodeAttr a, ulong entryValidSec, ulong attrValidSec)
    {
        U64(nodeId);
        U64(a.Generation);
        U64(entryValidSec);
        U64(attrValidSec);
        U32(0);
        U32(0);
        Attr(a);
    }

    /// <summary>
    /// fuse_statx_out (288 bytes): fuse_attr's fields in statx(2)'s layout, with the birth
    /// time (STATX_BTIME, from the inode's otime). The device number is split as the kernel's
    /// new_decode_dev reads the 32 bits fuse_attr carries; st_dev is the kernel's own.
    /// </summary>
    public void StatxOut(in InodeAttr a, ulong attrValidSec)
    {
        const uint BasicStats = 0x7FF, Btime = 0x800;
        U64(attrValidSec);
        U32(0);
        U32(0);
        Take(16); // spare
        var s = Take(Abi.StatxOutSize - 32);
        BinaryPrimitives.WriteUInt32LittleEndian(s, BasicStats | Btime);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], a.BlockSize);
        // attributes (8 at 8): none reported
        BinaryPrimitives.WriteUInt32LittleEndian(s[16..], a.Nlink);
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], a.Uid);
        BinaryPrimitives.WriteUInt32LittleEndian(s[24..], a.Gid);
        BinaryPrimitives.WriteUInt16LittleEndian(s[28..], (ushort)a.Mode);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], InoOf(a.Ino));
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], a.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(s[48..], a.Blocks);
        // attributes_mask (8 at 56): none
        Time(s[64..], a.Atime);
        Time(s[80..], a.Btime);
        Time(s[96..], a.Ctime);
        Time(s[112..], a.Mtime);
        uint dev = (uint)a.Rdev;
        BinaryPrimitives.WriteUInt32LittleEndian(s[128..], (dev & 0xFFF00) >> 8);
        BinaryPrimitives.WriteUInt32LittleEndian(s[132..], (dev & 0xFF) | ((dev >> 12) & 0xFFF00));
        static void Time(Span<byte> t, Timespec ts)
        {
            BinaryPrimitives.WriteInt64LittleEndian(t, ts.Sec);
            BinaryPrimitives.WriteUInt32LittleEndian(t[8..], ts.Nsec);
        }
    }

    /// <summary>fuse_attr_out (104 bytes).</summary>
    public void AttrOut(in InodeAttr a, ulong attrValidSec)
    {
        U64(attrValidSec);
        U32(0);
        U32(0);
        Attr(a);
    }
}

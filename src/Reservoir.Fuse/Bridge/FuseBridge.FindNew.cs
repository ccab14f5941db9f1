using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// `reservoir subvolume find-new` through the mount: the file extents of a subvolume written
/// in a generation or later, a page at a time (btrfs-progs asks the kernel's tree search with
/// min_transid for the same). Stateless: each page says where the next starts, so the daemon
/// keeps nothing between them and a walk of millions of extents costs no memory here. It names
/// files whatever the permissions of the directories above them, so it is for root and the
/// user the daemon runs as, as btrfs's tree search is for CAP_SYS_ADMIN.
/// </summary>
internal sealed partial class FuseBridge
{
    /// <summary>'R' 20, _IOWR 16376, on a subvolume's root directory. In: u64 the least
    /// generation wanted, u64 objectid, u64 offset, u8 type of the key to start from, u8 flags
    /// (1: the first page: write back and commit everything first, and start at the first
    /// extent). Out: u32 count, u32 more (1: ask again from the key given), u64 the subvolume's
    /// generation (the marker), u64 objectid, u64 offset, u8 type of the key the next page
    /// starts from, 7 bytes of padding; then per extent u64 inode, u64 file offset, u64 length,
    /// u64 disk start, u64 offset in the extent, u64 generation, u8 type (0 inline, 1 regular,
    /// 2 prealloc), u16 path length (0xFFFF: the file has no name), the path (UTF-8, from the
    /// subvolume's root).</summary>
    internal const uint IocFindNew = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 20;

    private const int FindNewHeader = 40, FindNewRecord = 51;

    /// <summary>Extents of the tree asked for per page: a page holds about 300 records with
    /// short paths, and a leaf is read whole, so a page of the tree fits a reply or nearly.</summary>
    private const int FindNewPageItems = 128;

    private Errno FindNew(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        var (tree, inode) = NodeIds.Decode(ino);
        if (inode != Engine.Filesystem.RootIno) return Errno.EINVAL;
        ulong minGen = BinaryPrimitives.ReadUInt64LittleEndian(arg);
        var from = new Key(BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]), arg[24], BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]));
        if ((arg[25] & 1) != 0)
        {
            var se = fs.Sync();
            if (se != Errno.OK) return se;
            from = Engine.Filesystem.FindNewStart;
        }
        var e = fs.FindNewPage(tree, minGen, from, FindNewPageItems, out var extents, out ulong marker, out var resume);
        if (e != Errno.OK) return e;

        var page = new byte[SubvolListSize];
        int pos = FindNewHeader, count = 0;
        foreach (var x in extents)
        {
            int n = x.Path == null ? 0 : Encoding.UTF8.GetByteCount(x.Path);
            if (pos + FindNewRecord + n > page.Length)
            {
                // One that does not fit an empty page is a path longer than any tool can use.
                if (count == 0) return Errno.ENAMETOOLONG;
                resume = new Key(x.Inode, KeyTypes.ExtentData, x.FileOffset); // this one starts the next page
                break;
            }
            var at = page.AsSpan(pos);
            BinaryPrimitives.WriteUInt64LittleEndian(at, x.Inode);
            BinaryPrimitives.WriteUInt64LittleEndian(at[8..], x.FileOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(at[16..], x.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(at[24..], x.DiskStart);
            BinaryPrimitives.WriteUInt64LittleEndian(at[32..], x.ExtentOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(at[40..], x.Generation);
            at[48] = (byte)x.Type;
            BinaryPrimitives.WriteUInt16LittleEndian(at[49..], x.Path == null ? (ushort)0xFFFF : (ushort)n);
            if (x.Path != null) Encoding.UTF8.GetBytes(x.Path, at[FindNewRecord..]);
            pos += FindNewRecord + n;
            count++;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)count);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), resume == null ? 0u : 1u);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), marker);
        if (resume is { } k)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(16), k.ObjectId);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(24), k.Offset);
            page[32] = k.Type;
        }
        return Reply(ref w, page);
    }
}

using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir;

/// <summary>
/// `subvolume find-new` on a mounted Reservoir: the daemon's 'R' 20 ioctl on the subvolume's
/// root, page after page, each naming where the next starts (FuseBridge.FindNew.cs has the
/// layout). The first page makes the daemon write back and commit everything, as btrfs-progs'
/// find-new syncs first; the marker is the subvolume's generation then.
/// </summary>
public static class OnlineFindNew
{
    private const uint PageSize = 16376;
    private const uint IocFindNew = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 20;
    private const int Header = 40, Record = 51;

    /// <summary>Calls <paramref name="each"/> for every extent of the subvolume whose root is
    /// <paramref name="subvolumeRoot"/> written in generation <paramref name="minGeneration"/>
    /// or later, in (inode, file offset) order; <paramref name="marker"/> is the subvolume's
    /// generation. EINVAL when the path is not a subvolume's root, ENOTTY when it is not on a
    /// Reservoir, EPERM for a user other than root and the mount's owner.</summary>
    public static Errno Run(string subvolumeRoot, ulong minGeneration, Action<NewExtent> each, out ulong marker)
    {
        marker = 0;
        int fd = OnlineSubvolume.Open(subvolumeRoot, OnlineSubvolume.O_RDONLY | OnlineSubvolume.O_DIRECTORY | OnlineSubvolume.O_CLOEXEC);
        if (fd < 0) return OnlineSubvolume.LastError;
        try
        {
            var page = new byte[PageSize];
            bool first = true;
            Key from = default;
            while (true)
            {
                Array.Clear(page);
                BinaryPrimitives.WriteUInt64LittleEndian(page, minGeneration);
                BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), from.ObjectId);
                BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(16), from.Offset);
                page[24] = from.Type;
                page[25] = first ? (byte)1 : (byte)0;
                var e = OnlineSubvolume.Ioctl(fd, IocFindNew, page);
                if (e != Errno.OK) return e;
                int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page);
                bool more = BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) != 0;
                // The marker of the first page: the generation the sync left; later pages may
                // see commits made meanwhile, which the next find-new from this marker shows.
                if (first) marker = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(8));
                first = false;
                int pos = Header;
                for (int i = 0; i < count; i++)
                {
                    ulong U(int o) => BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos + o));
                    int n = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(pos + 49));
                    string? path = n == 0xFFFF ? null : Encoding.UTF8.GetString(page, pos + Record, n);
                    each(new NewExtent(U(0), U(8), U(16), U(24), U(32), U(40), (FileExtentType)page[pos + 48], path));
                    pos += Record + (n == 0xFFFF ? 0 : n);
                }
                if (!more) return Errno.OK;
                var next = new Key(BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(16)), page[32], BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(24)));
                if (next <= from) return Errno.EIO; // every page moves on; one that does not would loop for ever
                from = next;
            }
        }
        finally { OnlineSubvolume.Close(fd); }
    }
}

using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;

namespace Reservoir;

/// <summary>
/// What an incremental send through a mounted Reservoir asks the daemon (the FUSE bridge's
/// 'R' 14, 15 and 16 ioctls): which inodes of a read-only subvolume differ from another's,
/// an inode's names, and the inodes a data extent's back-references name. Holds the
/// subvolume's root directory open for as long as it lives. For root and the user the daemon
/// runs as (EPERM for others).
/// </summary>
public sealed class OnlineSendQueries : IDisposable
{
    private const uint PageSize = 16376;
    private const uint IocChangedInodes = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 14;
    private const uint IocInodeNames = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 15;
    private const uint IocExtentReferrers = 0xC0000000 | (PageSize << 16) | (0x52 << 8) | 16;
    private int _fd;

    private OnlineSendQueries(int fd) => _fd = fd;

    /// <summary>Opens <paramref name="subvolumeRoot"/> (a directory of a mounted Reservoir).</summary>
    public static Errno Open(string subvolumeRoot, out OnlineSendQueries? queries)
    {
        queries = null;
        int fd = OnlineSubvolume.Open(subvolumeRoot, OnlineSubvolume.O_RDONLY | OnlineSubvolume.O_DIRECTORY | OnlineSubvolume.O_CLOEXEC);
        if (fd < 0) return OnlineSubvolume.LastError;
        queries = new OnlineSendQueries(fd);
        return Errno.OK;
    }

    /// <summary>Runs one paged query: asks with (<paramref name="a"/>, where to go on from) until
    /// the daemon says there is no more; <paramref name="read"/> takes a page's records and
    /// returns where the next page starts.</summary>
    private Errno Pages(uint request, ulong a, ulong from, Func<byte[], int, ulong> read)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        while (true)
        {
            var page = new byte[PageSize];
            BinaryPrimitives.WriteUInt64LittleEndian(page, a);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), from);
            var e = OnlineSubvolume.Ioctl(_fd, request, page);
            if (e != Errno.OK) return e;
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(page);
            bool more = BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4)) != 0;
            from = read(page, count);
            if (!more || count == 0) return Errno.OK;
        }
    }

    /// <summary>The inodes of this subvolume whose items differ from those of read-only
    /// subvolume <paramref name="olderId"/> (both must be read-only: EINVAL otherwise).</summary>
    public Errno ChangedInodes(ulong olderId, out List<ulong> inodes)
    {
        var found = inodes = new();
        return Pages(IocChangedInodes, olderId, 0, (page, count) =>
        {
            for (int i = 0; i < count; i++) found.Add(BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(8 + 8 * i)));
            return found.Count > 0 ? found[^1] + 1 : 0;
        });
    }

    /// <summary>Every name of inode <paramref name="ino"/> of this subvolume, as (directory
    /// inode, name); ENOENT if there is no such inode.</summary>
    public Errno InodeNames(ulong ino, out List<(ulong Dir, string Name)> names)
    {
        var found = names = new();
        return Pages(IocInodeNames, ino, 0, (page, count) =>
        {
            int pos = 8;
            for (int i = 0; i < count; i++)
            {
                ulong dir = BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(pos));
                int len = BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(pos + 8));
                found.Add((dir, Encoding.UTF8.GetString(page, pos + 10, len)));
                pos += 10 + len;
            }
            return (ulong)found.Count;
        });
    }

    /// <summary>The inode numbers the back-references of the data extent at
    /// <paramref name="bytenr"/> name.</summary>
    public Errno ExtentReferrers(ulong bytenr, out List<ulong> inodes)
    {
        var found = inodes = new();
        return Pages(IocExtentReferrers, bytenr, 0, (page, count) =>
        {
            for (int i = 0; i < count; i++) found.Add(BinaryPrimitives.ReadUInt64LittleEndian(page.AsSpan(8 + 8 * i)));
            return (ulong)found.Count;
        });
    }

    public void Dispose()
    {
        if (_fd < 0) return;
        OnlineSubvolume.Close(_fd);
        _fd = -1;
    }
}

using System.Buffers.Binary;
using Reservoir.Common;

namespace Reservoir;

/// <summary>
/// Quota groups on a mounted Reservoir (`reservoir quota …`, `qgroup …` online): the groups and
/// their relations paged out of the daemon, and the quota ioctl's operations.
/// </summary>
public static partial class OnlineSubvolume
{
    /// <summary>Every qgroup of the mounted filesystem (ENOTCONN when quotas are off).</summary>
    public static Errno Qgroups(string dir, out List<(ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive)> groups)
    {
        var found = new List<(ulong, ulong, ulong, ulong, ulong)>();
        groups = found;
        return OnDirectory(dir, fd =>
        {
            // Usage is accounted at commit; fsync on a directory of the mount commits (the kernel
            // sends no syncfs to a FUSE daemon), so the numbers are current, as btrfs's --sync.
            Fsync(fd);
            return Paged(fd, IocQgroupList, 48, (page, pos) => found.Add((U64(page, pos), U64(page, pos + 8), U64(page, pos + 16), U64(page, pos + 24), U64(page, pos + 32))),
                () => found.Count == 0 ? 0 : found[^1].Item1);
        });
    }

    /// <summary>Every qgroup relation (member, parent) of the mounted filesystem.</summary>
    public static Errno QgroupRelations(string dir, out List<(ulong Child, ulong Parent)> relations)
    {
        var found = new List<(ulong, ulong)>();
        relations = found;
        return OnDirectory(dir, fd => Paged(fd, IocQgroupRelations, 16, (page, pos) => found.Add((U64(page, pos), U64(page, pos + 8))), () => (ulong)found.Count));
    }

    /// <summary>Quota administration through the mount (root only); see the FUSE bridge's
    /// quota ioctl for the operations.</summary>
    public enum QuotaOp : ulong { Enable = 1, Disable = 2, Create = 3, Destroy = 4, Assign = 5, Remove = 6, Limit = 7, SetDefault = 8, SyncDeletions = 9, LimitExclusive = 10, Rescan = 11, DeleteById = 12, Commit = 13 }

    /// <summary>One operation of the quota ioctl (root's, or the image owner's on their own
    /// mount): <paramref name="a"/> and <paramref name="b"/> are its qgroup ids, limit or
    /// subvolume id, as the operation takes them.</summary>
    public static Errno QuotaCtl(string dir, QuotaOp op, ulong a = 0, ulong b = 0)
    {
        var arg = new byte[24];
        BinaryPrimitives.WriteUInt64LittleEndian(arg, (ulong)op);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), a);
        BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), b);
        return OnDirectory(dir, fd => Ioctl(fd, IocQuotaCtl, arg));
    }
}

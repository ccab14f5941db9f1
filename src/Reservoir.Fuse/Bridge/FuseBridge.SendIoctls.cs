using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The ioctls an incremental send through the mount asks, so that it reads what changed
/// between two snapshots instead of every inode of both (btrfs's send does the same inside the
/// kernel): which inodes differ (the engine's comparison of the two trees), where an inode is
/// (its names, as btrfs's INO_PATHS), and which inodes the back-references of a data extent
/// name (as LOGICAL_INO), to find clone sources. They name files whatever the permissions of
/// the directories above them, so they are for root and for the user the daemon runs as, as
/// btrfs's are for CAP_SYS_ADMIN; others' sends walk both snapshots.
/// All three: _IOWR('R', n, 16376); in: two u64; out: u32 count, u32 more (1 if the page is
/// full: ask again from where it ended), then the records.
/// </summary>
internal sealed partial class FuseBridge
{
    /// <summary>'R' 14, on the root of a read-only subvolume: the inodes whose items differ
    /// from those of another read-only subvolume. In: u64 that subvolume's id, u64 the least
    /// inode number wanted. Out: count × u64 inode numbers, ascending.</summary>
    internal const uint IocChangedInodes = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 14;

    /// <summary>'R' 15, on any file or directory of a subvolume: the names of one of its
    /// inodes. In: u64 the inode number (within the subvolume), u64 how many names to skip.
    /// Out: count × (u64 directory inode number, u16 length, the name's bytes).</summary>
    internal const uint IocInodeNames = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 15;

    /// <summary>'R' 16, on any file or directory: the inode numbers the back-references of a
    /// data extent name (in any subvolume). In: u64 the extent's address, u64 how many to
    /// skip. Out: count × u64, ascending.</summary>
    internal const uint IocExtentReferrers = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 16;

    private sealed record ChangesPage(ulong Older, ulong Newer, List<ulong> Inodes);

    /// <summary>The last comparison's answer, for the pages after its first (a request asking
    /// from inode 0 compares again: a subvolume made writable and read-only again may have
    /// changed). Replaced whole, never changed in place, so threads need no lock for it.</summary>
    private volatile ChangesPage? _lastChanges;

    /// <summary>Writes one record at the start of <paramref name="at"/>.</summary>
    internal delegate void RecordWriter<T>(Span<byte> at, T record);

    /// <summary>One page of a paged ioctl's answer (16376 bytes): u32 count, u32 more (1 when the
    /// page filled before the records ended: the caller asks again from where it stopped), then
    /// as many records as fit.</summary>
    internal static byte[] Page<T>(IEnumerable<T> records, Func<T, int> size, RecordWriter<T> write)
    {
        var page = new byte[SubvolListSize];
        int pos = 8, count = 0;
        foreach (var rec in records)
        {
            int n = size(rec);
            if (pos + n > page.Length) { BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), 1); break; }
            write(page.AsSpan(pos, n), rec);
            pos += n;
            count++;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)count);
        return page;
    }

    private Errno Reply(ref ReplyWriter w, byte[] page)
    {
        IoctlDone(ref w);
        w.Bytes(page);
        return Errno.OK;
    }

    private static bool SendQueryArgs(ref RequestReader r, uint inSize, uint outSize, out ulong a, out ulong b)
    {
        a = b = 0;
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return false;
        a = BinaryPrimitives.ReadUInt64LittleEndian(arg);
        b = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        return true;
    }

    private Errno ChangedInodes(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (!SendQueryArgs(ref r, inSize, outSize, out ulong older, out ulong from)) return Errno.EINVAL;
        var (newer, root) = NodeIds.Decode(ino);
        if (root != Engine.Filesystem.RootIno) return Errno.EINVAL;
        var last = _lastChanges;
        if (from == 0 || last == null || last.Older != older || last.Newer != newer)
        {
            var e = fs.ChangedInodes(older, newer, out var changes);
            if (e != Errno.OK) return e;
            _lastChanges = last = new ChangesPage(older, newer, [.. changes.Inodes]);
        }
        // The list is ascending: the page starts at the first inode from `from` on.
        int start = last.Inodes.BinarySearch(from);
        return Reply(ref w, U64Page(last.Inodes.Skip(start < 0 ? ~start : start)));
    }

    private Errno InodeNames(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (!SendQueryArgs(ref r, inSize, outSize, out ulong which, out ulong skip)) return Errno.EINVAL;
        if (which == 0 || which > NodeIds.MaxIno) return Errno.EINVAL;
        var e = fs.InodeNames(NodeIds.Encode(NodeIds.Decode(ino).TreeId, which), out var names);
        if (e != Errno.OK) return e;
        return Reply(ref w, Page(names.Skip((int)Math.Min(skip, int.MaxValue)), n => 10 + Encoding.UTF8.GetByteCount(n.Name), (at, n) =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(at, NodeIds.Decode(n.Dir).Ino);
            BinaryPrimitives.WriteUInt16LittleEndian(at[8..], (ushort)(at.Length - 10));
            Encoding.UTF8.GetBytes(n.Name, at[10..]);
        }));
    }

    private Errno ExtentReferrers(ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (!OwnsImage(r)) return Errno.EPERM;
        if (!SendQueryArgs(ref r, inSize, outSize, out ulong bytenr, out ulong skip)) return Errno.EINVAL;
        var e = fs.ExtentReferrers(bytenr, out var inodes);
        if (e != Errno.OK) return e;
        return Reply(ref w, U64Page(inodes.Skip((int)Math.Min(skip, int.MaxValue))));
    }

    private static byte[] U64Page(IEnumerable<ulong> values) => Page(values, _ => 8, (at, v) => BinaryPrimitives.WriteUInt64LittleEndian(at, v));
}

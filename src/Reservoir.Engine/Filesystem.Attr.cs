using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>chmod, chown, truncate and utimens in one call, as FUSE's SETATTR. Changing the
    /// size goes through <see cref="TruncateLocked"/>. ctime is set to now on any change unless
    /// given explicitly.</summary>
    public Errno SetAttr(ulong ino, in SetAttrRequest req, out InodeAttr attr)
    {
        attr = default;
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        var r = req;
        InodeAttr result = default;
        try
        {
            e = Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (inode.Deleted) return Errno.ENOENT;
                if ((r.Mask & SetAttrMask.Size) != 0)
                {
                    if (inode.IsDir) return Errno.EISDIR;
                    if (!inode.IsReg) return Errno.EINVAL;
                    var te = TruncateLocked(inode, r.Size);
                    if (te != Errno.OK) return te;
                }
                if ((r.Mask & ~SetAttrMask.Size) != SetAttrMask.None)
                {
                    // A chmod of an inode with an access ACL rewrites it too (two items more).
                    bool acl = (r.Mask & SetAttrMask.Mode) != 0 && HasAccessAclLocked(inode, ino);
                    var se = Fs.TryStart(acl ? 3 : 1, out var h);
                    if (se != Errno.OK) return se;
                    using (h)
                    {
                        var now = Timespec.Now();
                        ref var it = ref inode.Item;
                        if ((r.Mask & SetAttrMask.Mode) != 0)
                        {
                            it.Mode = (it.Mode & Inodes.Mode.IFMT) | (r.Mode & Inodes.Mode.PermMask);
                            if (acl) ChmodAclLocked(h, inode);
                        }
                        if ((r.Mask & SetAttrMask.Uid) != 0) it.Uid = r.Uid;
                        if ((r.Mask & SetAttrMask.Gid) != 0) it.Gid = r.Gid;
                        if ((r.Mask & SetAttrMask.AtimeNow) != 0) it.Atime = now;
                        else if ((r.Mask & SetAttrMask.Atime) != 0) it.Atime = r.Atime;
                        if ((r.Mask & SetAttrMask.MtimeNow) != 0) it.Mtime = now;
                        else if ((r.Mask & SetAttrMask.Mtime) != 0) it.Mtime = r.Mtime;
                        it.Ctime = (r.Mask & SetAttrMask.Ctime) != 0 ? r.Ctime : now;
                        it.Sequence++;
                        it.Transid = h.Transid;
                        using (inode.Subvol.Tree.Lock.Write()) DirItems.PutInode(h, inode.Subvol.Tree, inode);
                    }
                }
                result = Attr(inode);
                return Errno.OK;
            });
        }
        finally { Put(inode); }
        attr = result;
        return e;
    }

    /// <summary>
    /// chattr +C / -C: a no-CoW file overwrites its data in place and keeps no data checksums
    /// (btrfs's NODATACOW, which implies NODATASUM). Only an empty file may change it (EINVAL
    /// otherwise, where btrfs leaves the flag as it was without a word), so that no checksummed
    /// data is ever overwritten without its checksum. On a directory it is what files and
    /// directories made in it start with, as on btrfs (chattr +C on a database's directory).
    /// </summary>
    public Errno SetNoCow(ulong ino, bool noCow)
    {
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (!inode.IsReg && !inode.IsDir) return Errno.EINVAL;
                if (inode.IsReg && (inode.Item.FileSize != 0 || inode.Item.Nbytes != 0)) return Errno.EINVAL;
                var se = Fs.TryStart(1, out var h);
                if (se != Errno.OK) return se;
                using (h)
                using (inode.Subvol.Tree.Lock.Write())
                {
                    if (noCow) inode.Item.Flags |= inode.IsReg ? InodeFlags.NoDataCow | InodeFlags.NoDataSum : InodeFlags.NoDataCow;
                    else inode.Item.Flags &= ~(InodeFlags.NoDataCow | InodeFlags.NoDataSum);
                    Touch(ref inode.Item, h.Transid, mtime: false);
                    DirItems.PutInode(h, inode.Subvol.Tree, inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    public Errno Truncate(ulong ino, ulong size) =>
        SetAttr(ino, new SetAttrRequest { Mask = SetAttrMask.Size, Size = size }, out _);

    /// <summary>
    /// Sets the file size (caller holds the inode lock exclusively). Shrinking: ordered extents
    /// past the new end finish first (so none adds extents afterwards), pages past it are dropped
    /// with their reservations freed, the tail of the last block is zeroed through the page
    /// cache (so a later extension reads zeros), and extents past it are dropped in bounded
    /// batches. Growing leaves a hole.
    /// </summary>
    private Errno TruncateLocked(Inode inode, ulong newSize)
    {
        if (newSize > MaxFileSize) return Errno.EFBIG;
        ulong old = inode.Item.FileSize;
        ulong bs = (ulong)Fs.BlockSize;
        var m = Data.MappingOf(inode);
        if (newSize < old)
        {
            ulong from = Units.AlignUp(newSize, bs);
            Data.WaitOrdered(m, newSize / bs * bs, ulong.MaxValue);
            // The one step that can fail for space (zeroing the tail of the last block needs a
            // reservation) comes first, before anything is dropped: a truncate that answers
            // ENOSPC or EDQUOT leaves the file as it was. The rest is a deletion that runs to
            // its end (StartDeletion), so the size and the extents never disagree.
            ulong tailEnd = Math.Min(from, old);
            if (newSize % bs != 0 && tailEnd > newSize)
            {
                var we = Data.BufferedWrite(inode, newSize, new byte[tailEnd - newSize], out _);
                if (we != Errno.OK) return we;
            }
            // The new size first, then the page cache, as the kernel's truncate_setsize does:
            // a page-fault write holds only its page lock and checks the size under it, so it
            // either dirtied its page before Invalidate took it (and Invalidate frees the
            // page's reservations) or sees the new size and fails. Set after Invalidate, a
            // fault in between marked a preallocated page past the new end dirty in place over
            // the extent dropped below, and its writeback found a hole (deterministic seed 25
            // of ConcurrentDataTests, MappedWriteRacingTruncateOverAPreallocatedBlock).
            inode.Item.FileSize = newSize;
            Data.Invalidate(m, from, ulong.MaxValue); // and waits for the range's ordered extents
            using (m.State.Lock())
            {
                m.DiskSize = Math.Min(m.DiskSize, newSize);
                // The dirty pages dropped may have been all that waited above the size on disk
                // (a file grown by writes not yet written back, then cut to a size still above
                // it): then what lies below the new size is holes or data on disk, and the size
                // on disk is the new size, or nothing would ever raise it and the inode item
                // would keep the old, shorter size (the explorer, seed 60613: size 20,480 in
                // memory, 0 on disk).
                Data.SettleDiskSizeLocked(m);
            }
            bool done = false;
            while (!done)
            {
                var se = Fs.StartDeletion(EvictItems, out var h);
                if (se != Errno.OK) return se;
                using (h)
                using (inode.Subvol.Tree.Lock.Write())
                {
                    long delta = 0;
                    done = FileExtents.Drop(h, inode.Subvol.Tree, inode.Ino, from, ulong.MaxValue, ref delta, FileExtentsBatch);
                    inode.Item.Nbytes = (ulong)((long)inode.Item.Nbytes + delta);
                    Touch(ref inode.Item, h.Transid);
                    DirItems.PutInode(h, inode.Subvol.Tree, inode);
                }
            }
            using (m.State.Lock()) m.Es.Remove(from, ulong.MaxValue);
            return Errno.OK;
        }
        var ge = Fs.TryStart(1, out var h2);
        if (ge != Errno.OK) return ge;
        using (h2)
        using (inode.Subvol.Tree.Lock.Write())
        {
            inode.Item.FileSize = newSize;
            using (m.State.Lock()) m.DiskSize = newSize;
            Touch(ref inode.Item, h2.Transid);
            DirItems.PutInode(h2, inode.Subvol.Tree, inode);
        }
        return Errno.OK;
    }

    private const int FileExtentsBatch = 32;
    public const ulong MaxFileSize = FormatConstants.MaxFileSize;
}

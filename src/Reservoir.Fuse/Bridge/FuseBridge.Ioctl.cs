using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The ioctls a mounted Reservoir answers on its directories: btrfs's subvolume create and
/// delete (same numbers and argument), and Reservoir's own for snapshots, listing, read-only,
/// qgroups and quota administration (`reservoir subvolume|qgroup|quota … PATH` send them), the
/// inode flags of chattr and lsattr, and the whole filesystem's (FuseBridge.FilesystemIoctls.cs:
/// usage, FITRIM, resize, label). They are "restricted" FUSE ioctls: the kernel copies in and out by the size
/// in the number. Everything else answers ENOTTY, as an unknown ioctl does on any filesystem.
/// </summary>
internal sealed partial class FuseBridge
{
    /// <summary>btrfs's subvolume ioctls, same numbers and argument (struct btrfs_ioctl_vol_args:
    /// s64 fd, char name[4088]), issued on the parent directory: BTRFS_IOC_SUBVOL_CREATE =
    /// _IOW(0x94, 14, 4096 bytes), BTRFS_IOC_SNAP_DESTROY = _IOW(0x94, 15, 4096 bytes). They are
    /// "restricted" FUSE ioctls: the kernel copies the 4096 bytes in by the size in the number.
    /// `reservoir subvolume create|delete` on a mounted path uses them.</summary>
    internal const uint IocSubvolCreate = 0x5000940E, IocSnapDestroy = 0x5000940F;

    /// <summary>Reservoir's own (btrfs lists through its tree-search ioctl, which exposes its
    /// on-disk layout): _IOWR('R', 1, 16376 bytes). In: u64 the id to list after (0 first).
    /// Out: u32 count, u32 more (1 if the page is full), then per subvolume u64 id, u64 parent,
    /// u64 generation, u64 otransid, u8 flags (1 read-only, 2 the default subvolume), u16 path length, path (UTF-8), i64 otime
    /// (seconds), 16-byte uuid, 16-byte parent uuid (the snapshot source's; zero for none),
    /// 16-byte received uuid (the sent subvolume's, for one made by receive; zero for none), u64
    /// stransid (the sent subvolume's ctransid).</summary>
    internal const uint IocSubvolList = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 1;
    internal const uint SubvolListSize = 16376;

    /// <summary>Reservoir's: _IOWR('R', 3, 16376): in, u64 the qgroup id to list after (0 first);
    /// out, u32 count, u32 more (1 if the page is full), then per qgroup u64 id, referenced,
    /// exclusive, max referenced, max exclusive, reserved. (Number 4, which set both limits of a
    /// subvolume's group, is retired: limits are set one at a time through IocQuotaCtl.)</summary>
    internal const uint IocQgroupList = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 3;

    /// <summary>Reservoir's quota administration, _IOW('R', 6, 24 bytes): u64 operation, u64 a,
    /// u64 b; root only. Operations: 1 enable quotas, 2 disable them, 3 create qgroup a,
    /// 4 destroy qgroup a, 5 assign qgroup a to b, 6 remove a from b, 7 limit qgroup a (any
    /// level) to b referenced bytes (2^64−1 = none), 8 make subvolume a the default, 9 wait
    /// until deleted subvolumes' space is free, 10 limit qgroup a to b exclusive bytes (a limit
    /// set keeps the group's other limit), 11 recount every group (quota rescan).</summary>
    internal const uint IocQuotaCtl = 0x40000000 | (24 << 16) | (0x52 << 8) | 6;

    /// <summary>Reservoir's: _IOWR('R', 7, 16376): in, u64 how many relations to skip; out, u32
    /// count, u32 more, then (u64 member, u64 parent) pairs.</summary>
    internal const uint IocQgroupRelations = 0xC0000000 | (SubvolListSize << 16) | (0x52 << 8) | 7;

    /// <summary>Reservoir's snapshot ioctl, _IOW('R', 5, 4096 bytes), on the directory that gets
    /// the snapshot: u64 source (the st_ino of the source subvolume's root on this mount),
    /// u64 flags (1 = read-only), char name[4080]. btrfs's SNAP_CREATE passes the source as a
    /// file descriptor, which means nothing to a FUSE daemon in another process.</summary>
    internal const uint IocSnapCreate = 0x40000000 | (4096u << 16) | (0x52 << 8) | 5;

    /// <summary>Reservoir's: _IOR('R', 9, 40 bytes), on any file or directory: which
    /// filesystem, which daemon, which node: the filesystem's fsid (16 bytes), a number the
    /// daemon drew at mount (u64), the node id (u64) and flags (u64; 1: every subvolume is
    /// mounted on its own, -o submounts). Two paths whose first 24 bytes agree are served by one
    /// engine, so a node id from one means the same on the other, whichever mount each is on;
    /// with submounts st_ino is the inode's number within its subvolume, so it cannot name a
    /// snapshot's source, and mount ids cannot tell whether two paths share a daemon.</summary>
    internal const uint IocFsIdentity = 0x80000000 | (40u << 16) | (0x52 << 8) | 9;

    /// <summary>The inode flags of chattr and lsattr (FS_IOC_GETFLAGS = _IOR('f', 1, long),
    /// FS_IOC_SETFLAGS = _IOW('f', 2, long)). The kernel sends them itself, with a 4-byte
    /// argument (fuse_fileattr_get/set), on a file or directory it opens for the purpose,
    /// after checking that the caller owns the file; a read-only subvolume answers EROFS.</summary>
    internal const uint FsIocGetFlags = 0x80086601, FsIocSetFlags = 0x40086602;

    /// <summary>XFS's form of the same (FS_IOC_FSGETXATTR = _IOR('X', 31, struct fsxattr),
    /// FS_IOC_FSSETXATTR = _IOW('X', 32, …), 28 bytes: xflags, extsize, nextents, projid,
    /// cowextsize, 8 bytes of padding). The kernel reads it before every chattr (for the flags
    /// both forms share) and xfs_io uses it. No xflag means anything here (no-CoW has none),
    /// so it answers zeros, and a change to any of them is EOPNOTSUPP.</summary>
    internal const uint FsIocFsGetXattr = 0x801C581F, FsIocFsSetXattr = 0x401C5820;
    private const int FsxattrSize = 28;

    /// <summary>FS_NOCOW_FL ('C'), the one flag kept: btrfs's NODATACOW.</summary>
    private const uint FsNocowFl = 0x00800000;

    /// <summary>Set by the session: the number <see cref="IocFsIdentity"/> answers.</summary>
    internal ulong MountToken { get; set; }

    /// <summary>Set with -o submounts: a subvolume made through this mount gets its own mount.</summary>
    internal SubvolumeMounts? Submounts { get; set; }

    /// <summary>
    /// After a rename, with -o submounts: a subvolume's directory that moved gets its own mount
    /// again at its new name. The kernel refuses to rename a mount point (EBUSY), so a mounted
    /// subvolume is renamed by unmounting its mount first (`reservoir umount DIR/sub`), then
    /// `mv`; this puts the mount back, soon after the reply, as for a subvolume just made. With
    /// RENAME_EXCHANGE both names moved. Returns <paramref name="e"/>.
    /// </summary>
    private Errno Renamed(Errno e, ulong fromDir, ReadOnlySpan<byte> from, ulong toDir, ReadOnlySpan<byte> to, RenameFlags flags)
    {
        if (e != Errno.OK || Submounts == null) return e;
        MountIfSubvolume(toDir, to);
        if ((flags & RenameFlags.Exchange) != 0) MountIfSubvolume(fromDir, from);
        return e;
    }

    private void MountIfSubvolume(ulong dir, ReadOnlySpan<byte> name)
    {
        if (fs.Lookup(dir, name, out var a) != Errno.OK) return;
        var (tree, inode) = NodeIds.Decode(a.Ino);
        if (inode == Filesystem.RootIno && tree != Format.TreeIds.FsTree) Submounts?.MountNew(tree);
    }

    /// <summary>Reservoir's: _IOW('R', 12, 24 bytes) on a writable subvolume's root, root only:
    /// 16-byte received uuid, u64 stransid (what btrfs's SET_RECEIVED_SUBVOL records; `reservoir
    /// receive` sets them before making the subvolume read-only).</summary>
    internal const uint IocSetReceived = 0x40000000 | (24 << 16) | (0x52 << 8) | 12;

    /// <summary>Reservoir's: _IOW('R', 2, u64) on a subvolume's root: read-only (1) or not (0).</summary>
    internal const uint IocSubvolSetRo = 0x40000000 | (8 << 16) | (0x52 << 8) | 2;

    /// <summary>btrfs's SUBVOL_GETFLAGS, _IOR(0x94, 25, u64), on a subvolume's root: its flags,
    /// BTRFS_SUBVOL_RDONLY (2) when it is read-only; EINVAL on any other directory, as btrfs
    /// answers. Anyone may ask (btrfs checks nothing either): `property get PATH ro`.</summary>
    internal const uint IocSubvolGetFlags = 0x80089419;
    private const ulong SubvolRdonly = 2;

    private Errno SubvolList(ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        ulong after = BinaryPrimitives.ReadUInt64LittleEndian(arg);
        List<SubvolumeInfo> all;
        if (arg[8] == 1)
        {
            // Deleted ones not dropped yet (`subvolume list -d`): no parent, no path, flag 4.
            var de = fs.ListDeletedSubvolumes(out var deleted);
            if (de != Errno.OK) return de;
            all = deleted.Select(d => new SubvolumeInfo(d.Id, 0, 0, "", d.Generation, 0, default, Guid.Empty, Guid.Empty, false, Guid.Empty, 0)).ToList();
        }
        else if (arg[8] != 0) return Errno.EINVAL;
        else
        {
            var e = fs.ListSubvolumes(out all);
            if (e != Errno.OK) return e;
        }
        var page = new byte[SubvolListSize];
        int pos = 8, count = 0;
        uint more = 0;
        foreach (var sv in all.Where(x => x.Id > after).OrderBy(x => x.Id))
        {
            var path = Encoding.UTF8.GetBytes(sv.Path);
            int need = 8 * 4 + 1 + 2 + path.Length + 8 + 16 + 16 + 16 + 8;
            if (pos + need > page.Length) { more = 1; break; }
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos), sv.Id);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos + 8), sv.ParentId);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos + 16), sv.Generation);
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos + 24), sv.Otransid);
            page[pos + 32] = (byte)((sv.ReadOnly ? 1 : 0) | (sv.Id == fs.DefaultSubvolume ? 2 : 0) | (arg[8] == 1 ? 4 : 0));
            BinaryPrimitives.WriteUInt16LittleEndian(page.AsSpan(pos + 33), (ushort)path.Length);
            path.CopyTo(page, pos + 35);
            BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(pos + 35 + path.Length), sv.Otime.Sec);
            sv.Uuid.TryWriteBytes(page.AsSpan(pos + 43 + path.Length));
            sv.ParentUuid.TryWriteBytes(page.AsSpan(pos + 59 + path.Length));
            sv.ReceivedUuid.TryWriteBytes(page.AsSpan(pos + 75 + path.Length));
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos + 91 + path.Length), sv.Stransid);
            pos += need;
            count++;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)count);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), more);
        IoctlDone(ref w);
        w.Bytes(page);
        return Errno.OK;
    }

    /// <summary>Writes an unsolicited notification to /dev/fuse (set by the session once it
    /// has the descriptor); null in tests that drive the bridge alone.</summary>
    internal Action<byte[]>? Notifier { get; set; }

    /// <summary>
    /// Tells the kernel that the engine changed something it may have cached: a name in a
    /// directory (FUSE_NOTIFY_INVAL_ENTRY) and the directory's attributes (INVAL_INODE, with
    /// offset −1: attributes only, not the page cache). Needed where a change does not come
    /// through the kernel's own namespace calls (the subvolume ioctls): otherwise a cached
    /// negative or positive dentry answers for up to the entry timeout. Sent before the reply,
    /// from an ioctl, which holds no directory lock the kernel's invalidation would need.
    /// </summary>
    internal void InvalidateEntry(ulong dirIno, ReadOnlySpan<byte> name)
    {
        NotifyInvalEntry(dirIno, name, expireOnly: false);
        InvalidateAttr(dirIno);
    }

    /// <summary>fuse_ioctl_out of a successful ioctl with no iovecs (result, flags, in_iovs,
    /// out_iovs: all 0); the out data, if any, follows.</summary>
    private static void IoctlDone(ref ReplyWriter w)
    {
        w.U32(0);
        w.U32(0);
        w.U32(0);
        w.U32(0);
    }

    /// <summary>FUSE_NOTIFY_INVAL_INODE (struct fuse_notify_inval_inode_out: u64 ino, s64 off,
    /// s64 len) with offset −1: the inode's attributes (and any ACLs the kernel holds), no
    /// page.</summary>
    private void InvalidateAttr(ulong ino)
    {
        if (Notifier == null) return;
        var inode = new byte[Abi.OutHeaderSize + 24];
        BinaryPrimitives.WriteUInt32LittleEndian(inode, (uint)inode.Length);
        BinaryPrimitives.WriteInt32LittleEndian(inode.AsSpan(4), 2);           // FUSE_NOTIFY_INVAL_INODE
        BinaryPrimitives.WriteUInt64LittleEndian(inode.AsSpan(16), NodeOf(ino));
        BinaryPrimitives.WriteInt64LittleEndian(inode.AsSpan(24), -1);         // attributes only, not the page cache
        Notifier(inode);
    }

    /// <summary>Whether the caller may administer the filesystem as btrfs lets CAP_SYS_ADMIN:
    /// root, or the user the daemon runs as, whose image it is (an ordinary user's mount of their
    /// own image through fusermount3; what they may do offline anyway). A mount the daemon
    /// serves as root leaves it to root alone.</summary>
    internal static bool OwnsImage(in RequestReader r) => r.Uid == 0 || r.Uid == Session.Libc.Geteuid();

    private Errno Ioctl(ref RequestReader r, ref ReplyWriter w, ulong ino)
    {
        if (!r.TryStruct(32, out var s)) return Errno.EINVAL;
        uint flags = U32(s, 8), cmd = U32(s, 12), inSize = U32(s, 24);
        const uint Unrestricted = 2, Dir = 16;
        if ((flags & Unrestricted) != 0 || cmd is not (IocSubvolCreate or IocSnapDestroy or IocSnapCreate or IocSubvolList or IocSubvolSetRo or IocSubvolGetFlags or IocSetReceived
                or IocQgroupList or IocQuotaCtl or IocQgroupRelations or IocSpaceInfo or IocFsIdentity or FsIocGetFlags or FsIocSetFlags or FsIocFsGetXattr or FsIocFsSetXattr or FiTrim or IocResize or IocBtrfsResize or FsIocGetFsLabel or FsIocSetFsLabel or IocDiskUsage or IocExtentMap
                or IocChangedInodes or IocInodeNames or IocExtentReferrers or IocFindNew or IocDaemonSend or IocDaemonSendOutcome or IocDaemonReceive)) return Errno.ENOTTY;
        if (cmd == IocFsIdentity) return Identity(ref w, ino, U32(s, 28)); // on files too
        if (cmd == FiTrim) return Trim(ref r, ref w, inSize, U32(s, 28));
        if (cmd is IocResize or IocBtrfsResize) return Resize(cmd, ref r, ref w, inSize, U32(s, 28));
        if (cmd == FsIocGetFsLabel) return GetLabel(ref w, U32(s, 28));
        if (cmd == FsIocSetFsLabel) return SetLabel(ref r, ref w, inSize);
        if (cmd == IocDiskUsage) return DiskUsage(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocExtentMap) return ExtentMap(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocChangedInodes) return ChangedInodes(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocInodeNames) return InodeNames(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocExtentReferrers) return ExtentReferrers(ref r, ref w, inSize, U32(s, 28));
        if (cmd == IocDaemonSendOutcome) return DaemonSendOutcome(ref r, ref w, inSize, U32(s, 28));
        if (cmd == FsIocGetFlags) return GetFlags(ref w, ino, U32(s, 28));
        if (cmd == FsIocSetFlags) return SetFlags(ref r, ref w, ino, inSize);
        if (cmd == FsIocFsGetXattr)
        {
            if (U32(s, 28) != FsxattrSize) return Errno.EINVAL;
            var ge = fs.GetAttr(ino, out _);
            if (ge != Errno.OK) return ge;
            IoctlDone(ref w);
            w.Take(FsxattrSize);
            return Errno.OK;
        }
        if (cmd == FsIocFsSetXattr)
        {
            if (inSize != FsxattrSize || !r.TryBytes(FsxattrSize, out var fsx)) return Errno.EINVAL;
            if (BinaryPrimitives.ReadUInt32LittleEndian(fsx) != 0 || BinaryPrimitives.ReadUInt32LittleEndian(fsx[4..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(fsx[12..]) != 0 || BinaryPrimitives.ReadUInt32LittleEndian(fsx[16..]) != 0) return Errno.EOPNOTSUPP;
            IoctlDone(ref w);
            return Errno.OK;
        }
        if ((flags & Dir) == 0) return Errno.ENOTDIR;
        if (cmd == IocSpaceInfo) return SpaceInfo(ref w, U32(s, 28));
        if (cmd == IocDaemonSend) return DaemonSend(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocDaemonReceive) return DaemonReceive(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocFindNew) return FindNew(ref r, ref w, ino, inSize, U32(s, 28));
        if (cmd == IocSubvolList) return SubvolList(ref r, ref w, inSize, U32(s, 28));
        if (cmd is IocQgroupList or IocQgroupRelations) return QgroupPage(cmd, ref r, ref w, inSize, U32(s, 28));
        if (cmd == IocQuotaCtl)
        {
            if (!OwnsImage(r)) return Errno.EPERM;
            if (inSize != 24 || !r.TryBytes(24, out var ctl)) return Errno.EINVAL;
            var qe = QuotaCtl(BinaryPrimitives.ReadUInt64LittleEndian(ctl), BinaryPrimitives.ReadUInt64LittleEndian(ctl[8..]), BinaryPrimitives.ReadUInt64LittleEndian(ctl[16..]));
            if (qe != Errno.OK) return qe;
            IoctlDone(ref w);
            return Errno.OK;
        }
        if (cmd == IocSubvolGetFlags)
        {
            if (U32(s, 28) != 8) return Errno.EINVAL;
            var ge = fs.GetSubvolumeReadOnly(ino, out bool ro);
            if (ge != Errno.OK) return ge;
            IoctlDone(ref w);
            BinaryPrimitives.WriteUInt64LittleEndian(w.Take(8), ro ? SubvolRdonly : 0);
            return Errno.OK;
        }
        if (cmd == IocSubvolSetRo)
        {
            // On the subvolume's root directory itself; root's (and the image owner's on their
            // own mount), as btrfs property set is root's.
            if (!OwnsImage(r)) return Errno.EPERM;
            if (inSize != 8 || !r.TryBytes(8, out var flag)) return Errno.EINVAL;
            var re = fs.SetSubvolumeReadOnly(ino, BinaryPrimitives.ReadUInt64LittleEndian(flag) != 0);
            if (re != Errno.OK) return re;
            InvalidateAttr(ino);
            IoctlDone(ref w);
            return Errno.OK;
        }
        if (cmd == IocSetReceived)
        {
            if (!OwnsImage(r)) return Errno.EPERM;
            if (inSize != 24 || !r.TryBytes(24, out var rv)) return Errno.EINVAL;
            var re = fs.SetReceivedSubvolume(ino, new Guid(rv[..16]), BinaryPrimitives.ReadUInt64LittleEndian(rv[16..]));
            if (re != Errno.OK) return re;
            IoctlDone(ref w);
            return Errno.OK;
        }
        if (inSize != 4096 || !r.TryBytes(4096, out var arg)) return Errno.EINVAL;
        var field = arg[(cmd == IocSnapCreate ? 16 : 8)..];
        int z = field.IndexOf((byte)0);
        if (z <= 0) return Errno.EINVAL;
        var name = field[..z];
        // The kernel checks no permission for an ioctl: as btrfs does, creating needs what
        // mkdir needs (write and search on the directory), deleting needs root (or the
        // image's owner on their own mount: OwnsImage).
        var caller = CallerOf(r);
        Errno e;
        InodeAttr made = default;
        if (cmd == IocSubvolCreate)
        {
            e = fs.GetAttr(ino, out var dir);
            if (e != Errno.OK) return e;
            if (!Allows(dir, caller, PosixAccess.MayWrite | PosixAccess.MayExec)) return Errno.EACCES;
            e = fs.CreateSubvolume(ino, name, r.Uid, r.Gid, out made);
        }
        else if (cmd == IocSnapCreate)
        {
            // As btrfs: write and search on the directory, and owning the source (or root).
            ulong source = BinaryPrimitives.ReadUInt64LittleEndian(arg), flags2 = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
            if ((flags2 & ~1UL) != 0) return Errno.EINVAL;
            e = fs.GetAttr(ino, out var dir);
            if (e != Errno.OK) return e;
            e = fs.GetAttr(source, out var src);
            if (e != Errno.OK) return e;
            if (!Allows(dir, caller, PosixAccess.MayWrite | PosixAccess.MayExec) || !PosixAccess.Owns(src, caller)) return Errno.EACCES;
            e = fs.CreateSnapshot(source, ino, name, (flags2 & 1) != 0, out made);
        }
        else
        {
            if (!OwnsImage(r))
            {
                e = MayDeleteSubvolume(ino, name, caller);
                if (e != Errno.OK) return e;
            }
            e = fs.DeleteSubvolume(ino, name);
        }
        if (e != Errno.OK) return e;
        // A deleted subvolume's own mount (-o submounts) goes with this: the kernel detaches
        // the mounts on a dentry it invalidates.
        InvalidateEntry(ino, name);
        // A new one gets its mount from the submount thread, after this reply: a request
        // thread that waited for it could hold the very thread its lookups need (`reservoir
        // subvolume create|snapshot` waits for the new device instead; IocFsIdentity's flag).
        if (cmd != IocSnapDestroy) Submounts?.MountNew(NodeIds.Decode(made.Ino).TreeId);
        IoctlDone(ref w);
        return Errno.OK;
    }

    /// <summary>
    /// Whether a user other than root and the image's owner may delete the subvolume
    /// <paramref name="name"/> of directory <paramref name="dir"/>: only with
    /// user_subvol_rm_allowed (EPERM otherwise), and then as btrfs's SNAP_DESTROY decides for
    /// them: the name must be a subvolume's root (EINVAL), a writable one (EROFS), they must be
    /// able to write and search that root (EACCES), and rmdir(2) must be allowed to remove a directory by that
    /// name: write and search on the directory, and the sticky bit's rule (EACCES, EPERM).
    /// Whatever the subvolume holds is not checked, as btrfs does not (that is what the option
    /// gives). The kernel checks nothing for an ioctl, so this is checked here whatever
    /// default_permissions says.
    /// </summary>
    private Errno MayDeleteSubvolume(ulong dir, ReadOnlySpan<byte> name, in Caller caller)
    {
        if (!options.UserSubvolRmAllowed) return Errno.EPERM;
        var e = fs.GetAttr(dir, out var d);
        if (e != Errno.OK) return e;
        e = fs.Lookup(dir, name, out var victim);
        if (e != Errno.OK) return e;
        var (tree, inode) = NodeIds.Decode(victim.Ino);
        if (inode != Filesystem.RootIno || tree == NodeIds.Decode(dir).TreeId) return Errno.EINVAL;
        // Writing into a read-only subvolume's root is EROFS before any permission (btrfs's
        // btrfs_permission), so a user cannot delete a read-only snapshot, as on btrfs.
        e = fs.ShowSubvolume(victim.Ino, out var info);
        if (e != Errno.OK) return e;
        if (info.ReadOnly) return Errno.EROFS;
        if (!Allows(victim, caller, PosixAccess.MayWrite | PosixAccess.MayExec)) return Errno.EACCES;
        if (!Allows(d, caller, PosixAccess.MayWrite | PosixAccess.MayExec)) return Errno.EACCES;
        return PosixAccess.IsSticky(d) && !PosixAccess.StickyAllows(d, victim, caller) ? Errno.EPERM : Errno.OK;
    }

    /// <summary>lsattr: 'C' for a no-CoW file or directory, nothing else (no flag ext4 shows
    /// means anything here: 'e', extents, is how every file is kept).</summary>
    private Errno GetFlags(ref ReplyWriter w, ulong ino, uint outSize)
    {
        if (outSize is not (4 or 8)) return Errno.EINVAL;
        var e = fs.GetAttr(ino, out var a);
        if (e != Errno.OK) return e;
        IoctlDone(ref w);
        var v = w.Take((int)outSize);
        BinaryPrimitives.WriteUInt32LittleEndian(v, (a.Flags & (ulong)Format.Items.InodeFlags.NoDataCow) != 0 ? FsNocowFl : 0);
        return Errno.OK;
    }

    /// <summary>chattr: 'C' set or cleared (<see cref="Filesystem.SetNoCow"/>), on a file only
    /// while it is empty: a file with data keeps what it has and the call succeeds, as on btrfs
    /// (so `chattr -R +C` over existing files does what it can; lsattr tells the truth). Any
    /// other flag answers EOPNOTSUPP, as btrfs does for flags it does not keep (immutable and
    /// append-only would need every change checked against them here: the kernel enforces
    /// them only for flags it knows of).</summary>
    private Errno SetFlags(ref RequestReader r, ref ReplyWriter w, ulong ino, uint inSize)
    {
        if (inSize is not (4 or 8) || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        uint want = BinaryPrimitives.ReadUInt32LittleEndian(arg);
        if ((want & ~FsNocowFl) != 0) return Errno.EOPNOTSUPP;
        var e = fs.GetAttr(ino, out var a);
        if (e != Errno.OK) return e;
        bool noCow = (want & FsNocowFl) != 0;
        bool keepsData = a.IsReg && (a.Size != 0 || a.Blocks != 0);
        if (!keepsData && noCow != ((a.Flags & (ulong)Format.Items.InodeFlags.NoDataCow) != 0))
        {
            e = fs.SetNoCow(ino, noCow);
            if (e != Errno.OK) return e;
            InvalidateAttr(ino);
        }
        IoctlDone(ref w);
        return Errno.OK;
    }

    private Errno Identity(ref ReplyWriter w, ulong ino, uint outSize)
    {
        if (outSize != 40) return Errno.EINVAL;
        var id = new byte[40];
        fs.Fsid.TryWriteBytes(id);
        BinaryPrimitives.WriteUInt64LittleEndian(id.AsSpan(16), MountToken);
        BinaryPrimitives.WriteUInt64LittleEndian(id.AsSpan(24), ino);
        BinaryPrimitives.WriteUInt64LittleEndian(id.AsSpan(32), Submounts != null ? 1UL : 0);
        IoctlDone(ref w);
        w.Bytes(id);
        return Errno.OK;
    }

    private Errno QuotaCtl(ulong op, ulong a, ulong b) => op switch
    {
        1 => fs.EnableQuota(),
        2 => fs.DisableQuota(),
        3 => fs.CreateQgroup(a),
        4 => fs.DestroyQgroup(a),
        5 => fs.AssignQgroup(a, b),
        6 => fs.RemoveQgroupRelation(a, b),
        7 => fs.LimitQgroup(a, b, exclusive: false),
        10 => fs.LimitQgroup(a, b, exclusive: true),
        11 => fs.RescanQuota(out _), // a drift it corrects is in the daemon's log
        8 => fs.SetDefaultSubvolume(a),
        // EBUSY after a second while a deleted subvolume waits for files of it to be closed:
        // a request thread is not held for ever (the close may never come); the CLI asks again.
        9 => fs.SyncSubvolumeDeletions(waitForClosesMs: 1000, ids: a == 0 ? null : [a]),
        12 => DeleteSubvolumeById(a),
        13 => fs.Sync(), // a commit (subvolume delete -c|-C)
        _ => Errno.EINVAL,
    };

    /// <summary>`subvolume delete -i ID`: wherever it is linked (btrfs's SNAP_DESTROY_V2 by id);
    /// its cached entry goes as with a deletion by name, and its own mount with it.</summary>
    private Errno DeleteSubvolumeById(ulong id)
    {
        var e = fs.DeleteSubvolumeById(id, out ulong dir, out var name);
        // With -o submounts the directory it was in may be another connection's.
        if (e == Errno.OK) (Submounts?.Serving(NodeIds.Decode(dir).TreeId) ?? this).InvalidateEntry(dir, name);
        return e;
    }

    /// <summary>One page of qgroups (after an id) or of relations (after a count), as the two
    /// list ioctls describe; ENOTCONN when quotas are off, as btrfs answers.</summary>
    private Errno QgroupPage(uint cmd, ref RequestReader r, ref ReplyWriter w, uint inSize, uint outSize)
    {
        if (inSize != SubvolListSize || outSize != SubvolListSize || !r.TryBytes((int)inSize, out var arg)) return Errno.EINVAL;
        if (!fs.QuotaEnabled) return Errno.ENOTCONN;
        ulong after = BinaryPrimitives.ReadUInt64LittleEndian(arg);
        var page = new byte[SubvolListSize];
        int pos = 8, count = 0;
        uint more = 0;
        void Put(ulong v) { BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(pos), v); pos += 8; }
        if (cmd == IocQgroupList)
            foreach (var g in fs.Qgroups().Where(g => g.Id > after))
            {
                if (pos + 48 > page.Length) { more = 1; break; }
                Put(g.Id); Put(g.Referenced); Put(g.Exclusive); Put(g.MaxReferenced); Put(g.MaxExclusive); Put(g.RsvData);
                count++;
            }
        else
            foreach (var (child, parent) in fs.QgroupRelations().Skip((int)Math.Min(after, int.MaxValue)))
            {
                if (pos + 16 > page.Length) { more = 1; break; }
                Put(child); Put(parent);
                count++;
            }
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)count);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), more);
        IoctlDone(ref w);
        w.Bytes(page);
        return Errno.OK;
    }
}

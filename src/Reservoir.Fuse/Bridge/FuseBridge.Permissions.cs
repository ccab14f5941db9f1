using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Protocol;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// Permission checks in the daemon. Without <c>default_permissions</c> the kernel checks almost
/// nothing itself (only access(2) and chdir, which it asks about with FUSE_ACCESS, and that a
/// file to be executed has some execute bit), so every request that a kernel filesystem's VFS
/// would refuse is refused here, with the VFS's errno: EACCES for the mode bits, EPERM for
/// ownership and the sticky bit. Checking here rather than in the kernel saves a round trip per
/// namespace change: with <c>default_permissions</c> the kernel forgets a directory's attributes
/// after each unlink or create in it and must GETATTR it before the next one.
///
/// Two things make the checks as strong as the kernel's:
/// <list type="bullet">
/// <item>Path walks. The kernel trusts a cached name without asking the daemon, so a name looked
/// up by one caller could be walked through by another who may not search the directory. Names
/// in a directory that some class may not search get an entry timeout of 0 (every walk asks
/// again, and the daemon checks search permission for that caller); a chmod that takes search
/// away from a directory whose names were cached marks them expired.</item>
/// <item>Races. The kernel holds a directory's lock across a create, unlink or rename in it and
/// an inode's lock across its setattr, so a check and the change it guards are not separated by
/// a chmod of the same directory or file.</item>
/// </list>
/// POSIX ACLs are stored but not enforced, with or without <c>default_permissions</c> (the
/// mount does not negotiate FUSE_POSIX_ACL).
/// </summary>
internal sealed partial class FuseBridge
{
    /// <summary>The daemon checks permissions unless the mount leaves them to the kernel.</summary>
    private readonly bool _checks = !options.DefaultPermissions;

    private const uint FmodeExec = 0x20; // __FMODE_EXEC: the kernel opens a file to execute it

    private static Caller CallerOf(in RequestReader r) => new(r.Uid, r.Gid, r.Pid);

    /// <summary>The entry timeout for a name found in (or made in) <paramref name="dir"/>.</summary>
    private ulong EntryValid(in InodeAttr dir) => _checks && !EveryoneMaySearch(dir) ? 0 : Valid;

    /// <summary><see cref="PosixAccess.Allows"/> with the inode's access ACL, asked only when it
    /// can decide (the caller neither root nor the owner; answered from memory after the first
    /// time, <c>Filesystem.GetAccessAcl</c>).</summary>
    private bool Allows(in InodeAttr a, in Caller c, int mask)
    {
        PosixAcl? acl = null;
        if (!c.IsRoot && c.Uid != a.Uid && fs.GetAccessAcl(a.Ino, out acl) != Errno.OK) acl = null;
        return PosixAccess.Allows(a, c, mask, acl);
    }

    /// <summary>Whether everyone may search a directory: by its mode, and only if it has no
    /// access ACL (whose named entries may deny some caller what other grants).</summary>
    private bool EveryoneMaySearch(in InodeAttr dir) =>
        PosixAccess.EveryoneMaySearch(dir) && fs.GetAccessAcl(dir.Ino, out var acl) == Errno.OK && acl == null;

    private Errno CheckDir(ulong dir, in Caller c, int mask, out InodeAttr d)
    {
        var e = fs.GetAttr(dir, out d);
        if (e != Errno.OK) return e;
        if (!d.IsDir) return Errno.ENOTDIR;
        return !_checks || Allows(d, c, mask) ? Errno.OK : Errno.EACCES;
    }

    /// <summary>lookup: search permission on the directory; the entry's timeout.</summary>
    private Errno MayLookup(ulong dir, in Caller c, out ulong entryValid) => CheckDirForEntry(dir, c, PosixAccess.MayExec, out entryValid);

    /// <summary>create, mknod, mkdir, symlink, link: write and search on the directory (may_create).</summary>
    private Errno MayCreateIn(ulong dir, in Caller c, out ulong entryValid) =>
        CheckDirForEntry(dir, c, PosixAccess.MayWrite | PosixAccess.MayExec, out entryValid);

    private Errno CheckDirForEntry(ulong dir, in Caller c, int mask, out ulong entryValid)
    {
        var e = CheckDir(dir, c, mask, out var d);
        entryValid = EntryValid(d);
        return e;
    }

    /// <summary>unlink, rmdir (may_delete): write and search on the directory, then the sticky rule.</summary>
    private Errno MayDelete(ulong dir, ReadOnlySpan<byte> name, in Caller c)
    {
        if (!_checks || c.IsRoot) return Errno.OK;
        var e = CheckDir(dir, c, PosixAccess.MayWrite | PosixAccess.MayExec, out var d);
        if (e != Errno.OK || !PosixAccess.IsSticky(d) || c.Uid == d.Uid) return e; // the victim matters only then
        e = fs.Lookup(dir, name, out var victim);
        if (e != Errno.OK) return e;
        return PosixAccess.StickyAllows(d, victim, c) ? Errno.OK : Errno.EPERM;
    }

    /// <summary>
    /// rename, in vfs_rename's order: may_delete on the source, may_create or may_delete on the
    /// target, and, for a directory moving to another parent, write permission on it (its ".."
    /// changes; for RENAME_EXCHANGE on both).
    /// </summary>
    private Errno MayRename(ulong oldDir, ReadOnlySpan<byte> oldName, ulong newDir, ReadOnlySpan<byte> newName, RenameFlags flags, in Caller c)
    {
        if (!_checks || c.IsRoot) return Errno.OK;
        const int WX = PosixAccess.MayWrite | PosixAccess.MayExec;
        var e = CheckDir(oldDir, c, WX, out var od);
        if (e != Errno.OK) return e;
        e = fs.Lookup(oldDir, oldName, out var source);
        if (e != Errno.OK) return e;
        if (!PosixAccess.StickyAllows(od, source, c)) return Errno.EPERM;
        var nd = od;
        if (newDir != oldDir && (e = CheckDir(newDir, c, WX, out nd)) != Errno.OK) return e;
        bool haveTarget = fs.Lookup(newDir, newName, out var target) == Errno.OK;
        if (haveTarget && !PosixAccess.StickyAllows(nd, target, c)) return Errno.EPERM;
        if (newDir != oldDir)
        {
            if (source.IsDir && !Allows(source, c, PosixAccess.MayWrite)) return Errno.EACCES;
            if (haveTarget && (flags & RenameFlags.Exchange) != 0 && target.IsDir && !Allows(target, c, PosixAccess.MayWrite)) return Errno.EACCES;
        }
        return Errno.OK;
    }

    /// <summary>open: read, write or both by the access mode; execute when the kernel opens
    /// the file to run it (so a mode of 0711 runs without read permission).</summary>
    private Errno MayOpen(ulong ino, uint flags, in Caller c)
    {
        if (!_checks || c.IsRoot) return Errno.OK;
        var e = fs.GetAttr(ino, out var a);
        if (e != Errno.OK) return e;
        int mask = (flags & FmodeExec) != 0 ? PosixAccess.MayExec
            : (flags & O_ACCMODE) switch { 0 => PosixAccess.MayRead, 1 => PosixAccess.MayWrite, _ => PosixAccess.MayRead | PosixAccess.MayWrite };
        return Allows(a, c, mask) ? Errno.OK : Errno.EACCES;
    }

    /// <summary>
    /// setattr, as setattr_prepare and notify_change decide for a kernel filesystem: chown only
    /// by root (or to oneself), chgrp by the owner to a group it is in, chmod by the owner
    /// (dropping set-group-ID when the owner is not in the file's group), explicit times by the
    /// owner, "now" for both times by the owner or a writer, a size change by a writer or through
    /// a descriptor the kernel already knows is open for writing.
    /// </summary>
    private Errno MaySetattr(in InodeAttr a, uint valid, ref SetAttrRequest req, in Caller c)
    {
        if (!_checks || c.IsRoot) return Errno.OK;
        if ((req.Mask & SetAttrMask.Uid) != 0 && !PosixAccess.MayChown(a, c, req.Uid)) return Errno.EPERM;
        if ((req.Mask & SetAttrMask.Gid) != 0 && !PosixAccess.MayChgrp(a, c, req.Gid)) return Errno.EPERM;
        if ((req.Mask & SetAttrMask.Mode) != 0)
        {
            if (!PosixAccess.Owns(a, c)) return Errno.EPERM;
            req.Mode = PosixAccess.ModeAfterChmod(req.Mode, (req.Mask & SetAttrMask.Gid) != 0 ? req.Gid : a.Gid, c);
        }
        bool atime = (valid & Abi.FattrAtime) != 0, mtime = (valid & Abi.FattrMtime) != 0;
        bool atimeNow = (valid & Abi.FattrAtimeNow) != 0, mtimeNow = (valid & Abi.FattrMtimeNow) != 0;
        if ((valid & Abi.FattrSize) != 0)
        {
            // ftruncate and O_TRUNC come with the file handle: the kernel checked the descriptor.
            if ((valid & Abi.FattrFh) == 0 && !Allows(a, c, PosixAccess.MayWrite)) return Errno.EACCES;
            return Errno.OK; // the "now" times of a truncate go with it
        }
        if ((atime && !atimeNow) || (mtime && !mtimeNow) || (atime != mtime && (atime || mtime)))
            return PosixAccess.Owns(a, c) ? Errno.OK : Errno.EPERM; // explicit times (utimensat with a time or UTIME_OMIT)
        if (atime && mtime && !PosixAccess.Owns(a, c) && !Allows(a, c, PosixAccess.MayWrite)) return Errno.EACCES; // touch
        return Errno.OK;
    }

    /// <summary>user.* attributes need read or write permission on the file; the VFS and the
    /// security modules decide for the other namespaces before the request is sent.</summary>
    private Errno MayXattr(ulong ino, ReadOnlySpan<byte> name, int mask, in Caller c)
    {
        if (!_checks || c.IsRoot || !name.StartsWith("user."u8)) return Errno.OK;
        var e = fs.GetAttr(ino, out var a);
        if (e != Errno.OK) return e;
        return Allows(a, c, mask) ? Errno.OK : Errno.EACCES;
    }

    /// <summary>
    /// setxattr. Setting an access ACL drops set-group-ID unless the caller is in the file's
    /// group or has CAP_FSETID (posix_acl_update_mode; the VFS has checked that the caller owns
    /// the file). A directory's ACL may take search permission from someone: the names the
    /// kernel holds in it expire, as after a chmod (<see cref="ExpireNamesAfterChmod"/>).
    /// </summary>
    private Errno SetXattr(ulong ino, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, XattrSetFlags flags, in Caller c)
    {
        bool acl = name.SequenceEqual(PosixAcl.AccessName);
        InodeAttr before = default;
        bool killSgid = false;
        if (acl)
        {
            var ge = fs.GetAttr(ino, out before);
            if (ge != Errno.OK) return ge;
            killSgid = !c.IsRoot && c.InGroup(before.Gid) != true && !c.HasCapability(Caller.CapFsetid);
        }
        var e = fs.SetXattr(ino, name, value, flags, killSgid);
        if (e != Errno.OK || !acl) return e;
        // The ACL set the mode's bits: the kernel, which without FUSE_POSIX_ACL does not expect
        // that, would show the old mode until its attributes time out. Sent from the request,
        // before its reply: an attributes-only invalidation takes no lock the request holds
        // (fuse_reverse_inval_inode touches pages only for an offset of 0 or more).
        InvalidateAttr(ino);
        if (before.IsDir && fs.GetAttr(ino, out var after) == Errno.OK) ExpireNamesAfterChmod(before, after);
        return e;
    }

    /// <summary>access(2) and chdir: the kernel asks only without default_permissions.</summary>
    private Errno Access(ulong ino, uint mask, in Caller c)
    {
        var e = fs.GetAttr(ino, out var a);
        if (e != Errno.OK || !_checks) return e;
        return Allows(a, c, (int)(mask & 7)) ? Errno.OK : Errno.EACCES;
    }

    /// <summary>
    /// After a chmod that takes search permission away from some class of a directory that
    /// everyone could search, the kernel may hold its names with a timeout of up to a second:
    /// they are marked expired (FUSE_NOTIFY_INVAL_ENTRY with FUSE_EXPIRE_ONLY), so the next walk
    /// through each asks the daemon, which checks. Sent after the reply (the kernel holds the
    /// directory's lock until the setattr's reply, and the notification takes it), so a walk in
    /// the microseconds between the two may still pass.
    /// </summary>
    private void ExpireNamesAfterChmod(in InodeAttr before, in InodeAttr after)
    {
        if (!_checks || Defer == null || !before.IsDir || !PosixAccess.EveryoneMaySearch(before) || EveryoneMaySearch(after)) return;
        ulong dir = after.Ino;
        Defer(() =>
        {
            // ListDir, not a listing from the start: this is no read of the directory by anyone
            // (its atime stays), and the expiry goes out without a transaction first.
            if (fs.ListDir(dir, out var entries) != Errno.OK) return;
            foreach (var d in entries) NotifyInvalEntry(dir, d.NameBytes, expireOnly: true);
        });
    }

    /// <summary>Runs work after the current reply, on the session's notification thread (not a
    /// request thread: a notification that waits for a directory lock must not keep a request
    /// thread from serving the request whose caller holds that lock). Null in tests that drive
    /// the bridge alone.</summary>
    internal Action<Action>? Defer { get; set; }

    /// <summary>FUSE_NOTIFY_INVAL_ENTRY (struct fuse_notify_inval_entry_out: u64 parent, u32
    /// namelen, u32 flags; then the name and a NUL). expireOnly (FUSE_EXPIRE_ONLY) marks the
    /// name stale instead of dropping it.</summary>
    private void NotifyInvalEntry(ulong dirIno, ReadOnlySpan<byte> name, bool expireOnly)
    {
        if (Notifier == null) return;
        var entry = new byte[Abi.OutHeaderSize + 16 + name.Length + 1];
        BinaryPrimitives.WriteUInt32LittleEndian(entry, (uint)entry.Length);
        BinaryPrimitives.WriteInt32LittleEndian(entry.AsSpan(4), 3);                  // FUSE_NOTIFY_INVAL_ENTRY
        BinaryPrimitives.WriteUInt64LittleEndian(entry.AsSpan(16), NodeOf(dirIno));   // parent
        BinaryPrimitives.WriteUInt32LittleEndian(entry.AsSpan(24), (uint)name.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(entry.AsSpan(28), expireOnly ? 1u : 0u);
        name.CopyTo(entry.AsSpan(32));
        Notifier(entry);
    }
}

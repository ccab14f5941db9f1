using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine;

/// <summary>
/// POSIX ACLs, kept as ext4 and btrfs keep them: the system.posix_acl_access and
/// system.posix_acl_default attributes, in the kernel's format (<see cref="PosixAcl"/>), with
/// the rules a filesystem that stores ACLs applies (fs/posix_acl.c). Setting an access ACL sets
/// the mode's permission bits from it and stores it only when it says more than those bits;
/// chmod rewrites it; a new inode in a directory with a default ACL takes its access ACL (and,
/// a directory, the default ACL too) from it, with no umask. Who may be granted what is decided
/// by the front end (the daemon's checks, or the kernel's with <c>default_permissions</c>) from
/// <see cref="GetAccessAcl"/>. Every change is made in the same transaction as the inode's.
/// Both ACLs are remembered per inode once read (<see cref="Inode.AccessAcl"/>,
/// <see cref="Inode.DefaultAcl"/>), so neither a permission check nor a create looks in the tree
/// again.
/// </summary>
public sealed partial class Filesystem
{
    private static bool IsAclName(ReadOnlySpan<byte> name, out bool isDefault)
    {
        isDefault = name.SequenceEqual(PosixAcl.DefaultName);
        return isDefault || name.SequenceEqual(PosixAcl.AccessName);
    }

    /// <summary>The inode's access ACL, null for none (a permission check's question: answered
    /// from memory after the first time, see <see cref="Inode.AccessAcl"/>).</summary>
    public Errno GetAccessAcl(ulong ino, out PosixAcl? acl)
    {
        acl = null;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            // Answered from memory after the first time, with no closure: every lookup through
            // the mount asks (bench --alloc).
            if (inode.AccessAcl is { } known) { acl = known.Acl; return Errno.OK; }
            return ReadAccessAcl(ino, inode, out acl);
        }
        finally { Put(inode); }
    }

    /// <summary><see cref="GetAccessAcl"/> the first time: read from the tree and remembered.</summary>
    private Errno ReadAccessAcl(ulong ino, Inode inode, out PosixAcl? acl)
    {
        PosixAcl? result = null;
        var e = Guard(ino, () =>
        {
            if (inode.AccessAcl is { } known) { result = known.Acl; return Errno.OK; }
            using var lk = inode.Lock.Read();
            if (inode.Deleted) return Errno.ENOENT;
            result = ReadAclLocked(inode, isDefault: false, ino);
            inode.AccessAcl = KnownAcl.Of(result);
            return Errno.OK;
        });
        acl = result;
        return e;
    }

    /// <summary>One of the inode's ACLs as stored, null for none (caller holds the inode's lock).
    /// An attribute that does not parse is corruption: the kernel never hands one down.</summary>
    private static PosixAcl? ReadAclLocked(Inode inode, bool isDefault, ulong ino)
    {
        byte[]? data;
        using (inode.Subvol.Tree.Lock.Read())
            if (!DirItems.Find(inode.Subvol.Tree, inode.Ino, KeyTypes.XattrItem, isDefault ? PosixAcl.DefaultName : PosixAcl.AccessName, out _, out _, out data))
                return null;
        if (PosixAcl.TryParse(data!, out var acl) != Errno.OK) throw new CorruptionException("malformed POSIX ACL attribute", inode: ino);
        return acl;
    }

    /// <summary>
    /// setxattr of an ACL (set_posix_acl, then the filesystem's set_acl): the value must parse
    /// and be valid (EINVAL); a default ACL only on a directory (EACCES); an empty list removes
    /// it. An access ACL sets the permission bits it implies (posix_acl_update_mode), dropping
    /// set-group-ID when <paramref name="killSgid"/> (the caller neither in the file's group nor
    /// holding CAP_FSETID: the front end knows the caller), and is stored only when it says more
    /// than those bits.
    /// </summary>
    private Errno SetAcl(ulong ino, bool isDefault, ReadOnlySpan<byte> value, XattrSetFlags flags, bool killSgid)
    {
        var pe = PosixAcl.TryParse(value, out var acl);
        if (pe != Errno.OK) return pe;
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (inode.Deleted) return Errno.ENOENT;
                if (Inodes.Mode.IsLnk(inode.Item.Mode)) return Errno.EOPNOTSUPP; // as the VFS answers for a link
                if (isDefault && !inode.IsDir) return acl != null ? Errno.EACCES : Errno.OK;
                var t = inode.Subvol.Tree;
                var name = isDefault ? PosixAcl.DefaultName : PosixAcl.AccessName;
                bool exists;
                using (t.Lock.Read()) exists = DirItems.Find(t, inode.Ino, KeyTypes.XattrItem, name, out _, out _, out _);
                if (exists && flags == XattrSetFlags.Create) return Errno.EEXIST;
                if (!exists && flags == XattrSetFlags.Replace) return Errno.ENODATA;
                uint mode = inode.Item.Mode;
                if (!isDefault && acl != null)
                {
                    if (acl.EquivalentMode(mode, out mode)) acl = null; // the mode says it all
                    if (killSgid) mode &= ~Inodes.Mode.ISGID;
                }
                // Attribute names made to collide with the ACL's can fill its item (ENOSPC, as
                // any attribute; checked before anything changes).
                if (acl != null)
                    using (t.Lock.Read())
                        if (!DirItems.HashedRoom(t, inode.Ino, KeyTypes.XattrItem, name, acl.XattrSize)) return Errno.ENOSPC;
                var se = Fs.TryStart(4, out var h);
                if (se != Errno.OK) return se;
                using (h)
                using (t.Lock.Write())
                {
                    WriteAclLocked(h, inode, isDefault, acl, exists);
                    inode.Item.Mode = mode;
                    Touch(ref inode.Item, h.Transid, mtime: false);
                    DirItems.PutInode(h, t, inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    /// <summary>Stores (or, for null, removes) one of the inode's ACLs, keeping
    /// <see cref="Inode.AccessAcl"/>. Caller holds the inode's lock exclusively and its tree's
    /// write lock, inside <paramref name="h"/>.</summary>
    private static void WriteAclLocked(ITreeContext h, Inode inode, bool isDefault, PosixAcl? acl, bool exists)
    {
        var t = inode.Subvol.Tree;
        var name = isDefault ? PosixAcl.DefaultName : PosixAcl.AccessName;
        if (exists) DirItems.RemoveHashed(h, t, inode.Ino, KeyTypes.XattrItem, name);
        if (acl != null && !DirItems.AddHashed(h, t, inode.Ino, KeyTypes.XattrItem, name, default, 0, acl.ToXattr()))
            ThrowHelper.Invariant("ACL attribute reappeared under the inode lock");
        if (isDefault) inode.DefaultAcl = KnownAcl.Of(acl);
        else inode.AccessAcl = KnownAcl.Of(acl);
    }

    /// <summary>Whether the inode has an access ACL, learning it into <see cref="Inode.AccessAcl"/>
    /// (caller holds the inode's lock).</summary>
    private static bool HasAccessAclLocked(Inode inode, ulong ino)
    {
        if (Inodes.Mode.IsLnk(inode.Item.Mode)) return false;
        if (inode.AccessAcl is not { } known) inode.AccessAcl = known = KnownAcl.Of(ReadAclLocked(inode, isDefault: false, ino));
        return known.Acl != null;
    }

    /// <summary>chmod of an inode with an access ACL (<see cref="HasAccessAclLocked"/>;
    /// posix_acl_chmod): its owner, other and mask (or owning group) entries take the new bits.
    /// Caller holds the inode's lock exclusively, inside <paramref name="h"/>, after setting the
    /// new mode.</summary>
    private static void ChmodAclLocked(ITreeContext h, Inode inode)
    {
        var acl = inode.AccessAcl!.Acl!;
        using (inode.Subvol.Tree.Lock.Write()) WriteAclLocked(h, inode, isDefault: false, acl.Chmod(inode.Item.Mode), exists: true);
    }

    /// <summary>
    /// posix_acl_create for a new inode in <paramref name="dir"/> (caller holds its lock): with a
    /// default ACL there, the new inode's access ACL comes from it and the mode it was created
    /// with, no umask applied (null when the result says no more than the mode), and a new
    /// directory gets the default ACL as well; without one, the umask applies. Symbolic links
    /// take neither.
    /// </summary>
    private static (PosixAcl? Access, PosixAcl? Default) InheritAclLocked(Inode dir, ref uint mode, uint umask, ulong dirIno)
    {
        if (Inodes.Mode.IsLnk(mode)) return (null, null);
        if (dir.DefaultAcl is not { } known) dir.DefaultAcl = known = KnownAcl.Of(ReadAclLocked(dir, isDefault: true, dirIno));
        var inherited = known.Acl;
        if (inherited == null)
        {
            mode &= ~(umask & 0x1FF);
            return (null, null);
        }
        var access = inherited.CreateMasq(ref mode);
        return (access, Inodes.Mode.IsDir(mode) ? inherited : null);
    }
}

using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>Linux's limit on an attribute name (XATTR_NAME_MAX).</summary>
    public const int XattrNameMax = 255;

    /// <summary>
    /// Whether an attribute name is one this filesystem keeps, as the kernel's xattr handlers
    /// decide for ext4 and btrfs (xattr_resolve_name): "user.", "trusted." and "security."
    /// followed by at least one byte (EINVAL when nothing follows), and the two POSIX ACLs
    /// (system.posix_acl_access and _default, Filesystem.Acl.cs); anything else, the rest of
    /// "system." included, EOPNOTSUPP. A FUSE mount sends every name to the daemon (its
    /// handler matches any prefix), so this is the only place the namespaces are checked.
    /// </summary>
    public static Errno CheckXattrName(ReadOnlySpan<byte> name)
    {
        if (name.Length == 0) return Errno.EINVAL;
        if (name.Length > XattrNameMax) return Errno.ERANGE;
        if (IsAclName(name, out _)) return Errno.OK;
        int prefix = name.StartsWith("user."u8) ? 5 : name.StartsWith("trusted."u8) ? 8 : name.StartsWith("security."u8) ? 9 : 0;
        if (prefix == 0) return Errno.EOPNOTSUPP;
        return name.Length > prefix ? Errno.OK : Errno.EINVAL;
    }

    public Errno GetXattr(ulong ino, string name, out byte[] value) => GetXattr(ino, Utf8(name), out value);

    public Errno GetXattr(ulong ino, ReadOnlySpan<byte> name, out byte[] value)
    {
        value = [];
        var e = CheckXattrName(name);
        if (e != Errno.OK) return e;
        e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        var n = name.ToArray();
        byte[] result = [];
        try
        {
            e = Guard(ino, () =>
            {
                using var lk = inode.Lock.Read();
                if (inode.Deleted) return Errno.ENOENT;
                using var lk2 = inode.Subvol.Tree.Lock.Read();
                if (!DirItems.Find(inode.Subvol.Tree, inode.Ino, KeyTypes.XattrItem, n, out _, out _, out var data)) return Errno.ENODATA;
                result = data!;
                return Errno.OK;
            });
        }
        finally { Put(inode); }
        value = result;
        return e;
    }

    /// <summary>setxattr(2). Values must fit one tree leaf with their name (ENOSPC beyond, as
    /// btrfs and ext4 answer for a value their item or block cannot hold; the kernel answers
    /// E2BIG past 64 KiB before asking). The
    /// POSIX ACL names set ACLs (Filesystem.Acl.cs), setting an access ACL dropping set-group-ID
    /// when <paramref name="aclKillsSgid"/> (the caller is neither in the file's group nor holds
    /// CAP_FSETID, which only the front end knows).</summary>
    public Errno SetXattr(ulong ino, string name, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.Any) =>
        SetXattr(ino, Utf8(name), value, flags);

    public Errno SetXattr(ulong ino, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.Any, bool aclKillsSgid = false)
    {
        var e = CheckXattrName(name);
        if (e != Errno.OK) return e;
        if (IsAclName(name, out bool isDefault)) return SetAcl(ino, isDefault, value, flags, aclKillsSgid);
        if (DirEntry.SizeOf(name.Length, value.Length) > Top.Tree.MaxItemData) return Errno.ENOSPC;
        e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        var n = name.ToArray();
        var v = value.ToArray();
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (inode.Deleted) return Errno.ENOENT;
                var t = inode.Subvol.Tree;
                bool exists;
                bool room;
                using (t.Lock.Read())
                {
                    exists = DirItems.Find(t, inode.Ino, KeyTypes.XattrItem, n, out _, out _, out _);
                    room = DirItems.HashedRoom(t, inode.Ino, KeyTypes.XattrItem, n, v.Length);
                }
                if (exists && flags == XattrSetFlags.Create) return Errno.EEXIST;
                if (!exists && flags == XattrSetFlags.Replace) return Errno.ENODATA;
                // Names whose hashes collide share one item (ENOSPC when it is full, as btrfs).
                if (!room) return Errno.ENOSPC;
                var se = Fs.TryStart(4, out var h);
                if (se != Errno.OK) return se;
                using (h)
                using (t.Lock.Write())
                {
                    if (exists) DirItems.RemoveHashed(h, t, inode.Ino, KeyTypes.XattrItem, n);
                    if (!DirItems.AddHashed(h, t, inode.Ino, KeyTypes.XattrItem, n, default, 0, v))
                        ThrowHelper.Invariant("xattr reappeared under the inode lock");
                    NoteXattrChanged(inode, n, present: true);
                    Touch(ref inode.Item, h.Transid, mtime: false);
                    DirItems.PutInode(h, t, inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    public Errno RemoveXattr(ulong ino, string name) => RemoveXattr(ino, Utf8(name));

    /// <summary>removexattr(2). A name outside the namespaces kept (<see cref="CheckXattrName"/>)
    /// is still removed if an image holds one (written before the names were checked, or a POSIX
    /// ACL), so that it can be cleaned away; otherwise its error.</summary>
    public Errno RemoveXattr(ulong ino, ReadOnlySpan<byte> name)
    {
        var refused = CheckXattrName(name);
        if (name.Length == 0 || name.Length > XattrNameMax) return refused;
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        var n = name.ToArray();
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (inode.Deleted) return Errno.ENOENT;
                var t = inode.Subvol.Tree;
                using (t.Lock.Read())
                    if (!DirItems.Find(t, inode.Ino, KeyTypes.XattrItem, n, out _, out _, out _)) return refused != Errno.OK ? refused : Errno.ENODATA;
                var se = Fs.TryStart(3, out var h, useGlobalReserve: true);
                if (se != Errno.OK) return se;
                using (h)
                using (t.Lock.Write())
                {
                    DirItems.RemoveHashed(h, t, inode.Ino, KeyTypes.XattrItem, n);
                    NoteXattrChanged(inode, n, present: false);
                    if (n.AsSpan().SequenceEqual(PosixAcl.AccessName)) inode.AccessAcl = KnownAcl.None;
                    if (n.AsSpan().SequenceEqual(PosixAcl.DefaultName)) inode.DefaultAcl = KnownAcl.None;
                    Touch(ref inode.Item, h.Transid, mtime: false);
                    DirItems.PutInode(h, t, inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    /// <summary>listxattr(2) as strings (names that are not UTF-8 come out lossy: the FUSE front
    /// end uses <see cref="ListXattrNames"/>).</summary>
    public Errno ListXattr(ulong ino, out List<string> names)
    {
        var e = ListXattrNames(ino, out var raw);
        names = raw.Select(n => Encoding.UTF8.GetString(n)).ToList();
        return e;
    }

    /// <summary>listxattr(2): the names as stored, those outside the namespaces kept left out
    /// (<see cref="CheckXattrName"/>: a name getxattr refuses is not listed).</summary>
    public Errno ListXattrNames(ulong ino, out List<byte[]> names)
    {
        names = new List<byte[]>();
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        var result = names;
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Read();
                if (inode.Deleted) return Errno.ENOENT;
                var t = inode.Subvol.Tree;
                using var lk2 = t.Lock.Read();
                var path = new TreePath();
                if (!t.SeekGE(new Key(inode.Ino, KeyTypes.XattrItem, 0), path)) return Errno.OK;
                do
                {
                    var k = path.Key;
                    if (k.ObjectId != inode.Ino || k.Type != KeyTypes.XattrItem) break;
                    var item = path.Data;
                    while (item.Length > 0)
                    {
                        if (!DirEntry.TryRead(item, out var de, out int size)) throw new CorruptionException("malformed XATTR_ITEM", inode: ino);
                        if (CheckXattrName(de.Name) == Errno.OK) result.Add(de.Name.ToArray());
                        item = item[size..];
                    }
                } while (t.Next(path));
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }
}

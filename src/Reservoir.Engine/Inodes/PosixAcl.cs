using System.Buffers.Binary;
using Reservoir.Common;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// A POSIX access control list as Linux keeps it in the system.posix_acl_access and
/// system.posix_acl_default attributes (include/uapi/linux/posix_acl_xattr.h: a little-endian
/// u32 version 2, then entries of u16 tag, u16 permissions, u32 id), and the rules the kernel
/// applies to it for a filesystem that stores ACLs (fs/posix_acl.c): validity, the mode an
/// access ACL implies, chmod, inheritance at creation and the permission check. The entries
/// are kept in the canonical order validity requires (owner, named users by id, owning group,
/// named groups by id, mask, other), so each rule is one pass.
/// </summary>
public sealed class PosixAcl
{
    public const ushort UserObj = 0x01, User = 0x02, GroupObj = 0x04, Group = 0x08, Mask = 0x10, Other = 0x20;
    private const uint Version = 2;
    private const uint UndefinedId = uint.MaxValue;
    private const int HeaderSize = 4, EntrySize = 8;

    /// <summary>The attribute names, as stored.</summary>
    public static ReadOnlySpan<byte> AccessName => "system.posix_acl_access"u8;
    public static ReadOnlySpan<byte> DefaultName => "system.posix_acl_default"u8;

    public readonly record struct Entry(ushort Tag, ushort Perm, uint Id);

    private readonly Entry[] _entries;
    public ReadOnlySpan<Entry> Entries => _entries;

    private PosixAcl(Entry[] entries) => _entries = entries;

    /// <summary>
    /// Parses and validates an attribute value (posix_acl_from_xattr, then posix_acl_valid):
    /// version 2, whole entries, permissions within rwx, and the kernel's order: one owner
    /// entry, named users, one owning group entry, named groups, a mask (required when there is
    /// a named entry), one other entry. Null with EINVAL otherwise (EOPNOTSUPP for another
    /// version); a header alone is an empty list (null with OK: "no ACL", as the kernel reads it).
    /// </summary>
    public static Errno TryParse(ReadOnlySpan<byte> value, out PosixAcl? acl)
    {
        acl = null;
        if (value.Length < HeaderSize || (value.Length - HeaderSize) % EntrySize != 0) return Errno.EINVAL;
        if (BinaryPrimitives.ReadUInt32LittleEndian(value) != Version) return Errno.EOPNOTSUPP;
        int n = (value.Length - HeaderSize) / EntrySize;
        if (n == 0) return Errno.OK;
        var entries = new Entry[n];
        // posix_acl_valid's states: what may come next.
        const int ExpectOwner = 0, InUsers = 1, InGroups = 2, ExpectOther = 3, Done = 4;
        int state = ExpectOwner;
        bool needsMask = false;
        for (int i = 0; i < n; i++)
        {
            var e = value.Slice(HeaderSize + i * EntrySize, EntrySize);
            ushort tag = BinaryPrimitives.ReadUInt16LittleEndian(e), perm = BinaryPrimitives.ReadUInt16LittleEndian(e[2..]);
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(e[4..]);
            if ((perm & ~7) != 0) return Errno.EINVAL;
            switch (tag)
            {
                case UserObj when state == ExpectOwner: state = InUsers; break;
                case User when state == InUsers: needsMask = true; break;
                case GroupObj when state == InUsers: state = InGroups; break;
                case Group when state == InGroups: needsMask = true; break;
                case Mask when state == InGroups: state = ExpectOther; break;
                case Other when state == ExpectOther || (state == InGroups && !needsMask): state = Done; break;
                default: return Errno.EINVAL;
            }
            entries[i] = new Entry(tag, perm, tag is User or Group ? id : UndefinedId);
        }
        if (state != Done) return Errno.EINVAL;
        acl = new PosixAcl(entries);
        return Errno.OK;
    }

    /// <summary>The three entries a mode alone gives (what an equivalent ACL reads as).</summary>
    public static PosixAcl FromMode(uint mode) =>
        new([new(UserObj, (ushort)((mode >> 6) & 7), UndefinedId), new(GroupObj, (ushort)((mode >> 3) & 7), UndefinedId), new(Other, (ushort)(mode & 7), UndefinedId)]);

    /// <summary>The length of <see cref="ToXattr"/>'s value.</summary>
    public int XattrSize => HeaderSize + _entries.Length * EntrySize;

    public byte[] ToXattr()
    {
        var b = new byte[XattrSize];
        BinaryPrimitives.WriteUInt32LittleEndian(b, Version);
        for (int i = 0; i < _entries.Length; i++)
        {
            var s = b.AsSpan(HeaderSize + i * EntrySize);
            BinaryPrimitives.WriteUInt16LittleEndian(s, _entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(s[2..], _entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(s[4..], _entries[i].Id);
        }
        return b;
    }

    /// <summary>
    /// posix_acl_equiv_mode: the permission bits this access ACL gives the file (owner from its
    /// owner entry, group from its mask if it has one, else from its owning group entry, other
    /// from its other entry), and whether the ACL says more than those bits (a named entry or a
    /// mask: then it is kept; else the mode alone says it all and no attribute is stored).
    /// </summary>
    public bool EquivalentMode(uint mode, out uint newMode)
    {
        uint bits = 0;
        bool more = false;
        int mask = -1;
        foreach (var e in _entries)
        {
            switch (e.Tag)
            {
                case UserObj: bits |= (uint)e.Perm << 6; break;
                case GroupObj: bits |= (uint)e.Perm << 3; break;
                case Other: bits |= e.Perm; break;
                case Mask: mask = e.Perm; more = true; break;
                default: more = true; break;
            }
        }
        if (mask >= 0) bits = (bits & ~0x38u) | ((uint)mask << 3);
        newMode = (mode & ~0x1FFu) | bits;
        return !more;
    }

    /// <summary>posix_acl_chmod: the access ACL after chmod to <paramref name="mode"/> (owner
    /// and other entries take the new bits, and the mask, or without one the owning group).</summary>
    public PosixAcl Chmod(uint mode)
    {
        var e = (Entry[])_entries.Clone();
        int group = -1, mask = -1;
        for (int i = 0; i < e.Length; i++)
        {
            switch (e[i].Tag)
            {
                case UserObj: e[i] = e[i] with { Perm = (ushort)((mode >> 6) & 7) }; break;
                case Other: e[i] = e[i] with { Perm = (ushort)(mode & 7) }; break;
                case GroupObj: group = i; break;
                case Mask: mask = i; break;
            }
        }
        int g = mask >= 0 ? mask : group;
        e[g] = e[g] with { Perm = (ushort)((mode >> 3) & 7) };
        return new PosixAcl(e);
    }

    /// <summary>
    /// posix_acl_create_masq: a new inode's access ACL from its directory's default ACL and the
    /// mode it was created with (no umask: a default ACL replaces it). Each class keeps only what
    /// both the default ACL and the mode grant; <paramref name="mode"/> comes back with the bits
    /// the result implies. Returns null when that ACL says no more than the mode.
    /// </summary>
    public PosixAcl? CreateMasq(ref uint mode)
    {
        var e = (Entry[])_entries.Clone();
        uint m = mode;
        bool more = false;
        int group = -1, mask = -1;
        for (int i = 0; i < e.Length; i++)
        {
            switch (e[i].Tag)
            {
                case UserObj:
                    e[i] = e[i] with { Perm = (ushort)(e[i].Perm & ((m >> 6) & 7)) };
                    m &= ((uint)e[i].Perm << 6) | ~0x1C0u;
                    break;
                case Other:
                    e[i] = e[i] with { Perm = (ushort)(e[i].Perm & (m & 7)) };
                    m &= e[i].Perm | ~0x7u;
                    break;
                case GroupObj: group = i; break;
                case Mask: mask = i; more = true; break;
                default: more = true; break;
            }
        }
        int g = mask >= 0 ? mask : group;
        e[g] = e[g] with { Perm = (ushort)(e[g].Perm & ((m >> 3) & 7)) };
        m &= ((uint)e[g].Perm << 3) | ~0x38u;
        mode = (mode & ~0x1FFu) | (m & 0x1FF);
        return more ? new PosixAcl(e) : null;
    }

    /// <summary>
    /// posix_acl_permission for a caller that does not own the inode (the owner is decided by
    /// the mode's owner bits, which the owner entry equals): a named user entry, masked; else
    /// the owning group and named groups the caller is in, one of them granting all of
    /// <paramref name="want"/> (masked) — if the caller is in one and none does, no; else the
    /// other entry. <paramref name="inGroup"/> answers membership, null when it cannot be known
    /// (then only what every reading allows is granted).
    /// </summary>
    public bool Permits(uint uid, uint owningGid, Func<uint, bool?> inGroup, int want)
    {
        want &= 7;
        int mask = 7, other = 0;
        foreach (var e in _entries)
        {
            if (e.Tag == Mask) mask = e.Perm;
            if (e.Tag == Other) other = e.Perm;
        }
        foreach (var e in _entries)
            if (e.Tag == User && e.Id == uid) return (e.Perm & mask & want) == want;
        bool member = false, unknown = false;
        foreach (var e in _entries)
        {
            if (e.Tag is not (GroupObj or Group)) continue;
            bool? inIt = inGroup(e.Tag == GroupObj ? owningGid : e.Id);
            if (inIt == null) { unknown = true; continue; }
            if (inIt == false) continue;
            member = true;
            if ((e.Perm & mask & want) == want) return true;
        }
        if (member) return false;
        // Groups that cannot be read: grant only what every reading grants (other, and each
        // entry of a group the caller may be in).
        if (unknown)
        {
            foreach (var e in _entries)
                if (e.Tag is GroupObj or Group && inGroup(e.Tag == GroupObj ? owningGid : e.Id) == null && (e.Perm & mask & want) != want) return false;
        }
        return (other & want) == want;
    }
}

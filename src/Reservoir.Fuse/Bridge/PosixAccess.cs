using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir.Fuse.Bridge;

/// <summary>
/// The POSIX discretionary access rules a kernel filesystem gets from the VFS
/// (generic_permission, may_delete's sticky rule, inode_owner_or_capable, chown_ok and
/// chgrp_ok, with the capabilities that override them), decided by the daemon from the engine's
/// attributes when the mount runs without <c>default_permissions</c>. Functions of the
/// attributes and the caller only, so each rule is checked on its own and the bridge only
/// chooses which to ask.
/// </summary>
internal static class PosixAccess
{
    public const int MayExec = 1, MayWrite = 2, MayRead = 4;
    private const uint AnyExec = 0x49; // S_IXUSR | S_IXGRP | S_IXOTH
    private const uint Sticky = 0x200;

    /// <summary>
    /// generic_permission: the owner class if the caller owns the inode, else (with an access
    /// ACL, <paramref name="acl"/>) the ACL's named user, group and other entries under its mask
    /// (<see cref="PosixAcl.Permits"/>), else the group class if it is in the inode's group,
    /// else other; only that one class counts (an owner denied by the owner bits is denied even
    /// where other would allow). Then the capabilities: CAP_DAC_OVERRIDE allows anything but
    /// executing a non-directory that no class may execute; CAP_DAC_READ_SEARCH allows reading
    /// files and reading and searching directories.
    /// </summary>
    public static bool Allows(in InodeAttr a, in Caller c, int mask, PosixAcl? acl = null)
    {
        mask &= MayRead | MayWrite | MayExec;
        bool execBarred = (mask & MayExec) != 0 && !a.IsDir && (a.Mode & AnyExec) == 0;
        if (c.IsRoot) return !execBarred;
        if (acl != null && c.Uid != a.Uid ? acl.Permits(c.Uid, a.Gid, c.InGroup, mask) : ByModeBits(a, c, (uint)mask)) return true;
        if (!execBarred && c.HasCapability(Caller.CapDacOverride)) return true;
        return (mask & MayWrite) == 0 && (a.IsDir || (mask & MayExec) == 0) && c.HasCapability(Caller.CapDacReadSearch);
    }

    private static bool ByModeBits(in InodeAttr a, in Caller c, uint mask)
    {
        uint owner = (a.Mode >> 6) & 7, group = (a.Mode >> 3) & 7, other = a.Mode & 7;
        if (c.Uid == a.Uid) return (owner & mask) == mask;
        // Group membership matters only when the group and other bits answer differently;
        // groups that cannot be read grant only what both classes grant.
        if (((group ^ other) & mask) != 0)
        {
            uint bits = c.InGroup(a.Gid) switch { true => group, false => other, null => group & other };
            return (bits & mask) == mask;
        }
        return (other & mask) == mask;
    }

    /// <summary>inode_owner_or_capable: chmod, explicit times, and the like (CAP_FOWNER).</summary>
    public static bool Owns(in InodeAttr a, in Caller c) => c.Uid == a.Uid || c.HasCapability(Caller.CapFowner);

    public static bool IsSticky(in InodeAttr dir) => (dir.Mode & Sticky) != 0;

    /// <summary>may_delete's sticky rule (check_sticky): in a sticky directory only the
    /// file's owner, the directory's owner or CAP_FOWNER may remove or rename the entry.</summary>
    public static bool StickyAllows(in InodeAttr dir, in InodeAttr victim, in Caller c) =>
        (dir.Mode & Sticky) == 0 || c.Uid == victim.Uid || c.Uid == dir.Uid || c.HasCapability(Caller.CapFowner);

    /// <summary>chown_ok: only CAP_CHOWN gives a file away; the owner may "change" the owner
    /// to itself.</summary>
    public static bool MayChown(in InodeAttr a, in Caller c, uint newUid) =>
        (c.Uid == a.Uid && newUid == a.Uid) || c.HasCapability(Caller.CapChown);

    /// <summary>chgrp_ok: CAP_CHOWN, or the owner moving the file to a group it belongs to
    /// (or to the group it already has).</summary>
    public static bool MayChgrp(in InodeAttr a, in Caller c, uint newGid) =>
        (c.Uid == a.Uid && (newGid == a.Gid || c.InGroup(newGid) == true)) || c.HasCapability(Caller.CapChown);

    /// <summary>
    /// setattr_prepare's rule for chmod: set-group-ID survives only if the caller is in the
    /// file's group (its new group, when the same request changes it) or has CAP_FSETID.
    /// </summary>
    public static uint ModeAfterChmod(uint mode, uint fileGid, in Caller c)
    {
        const uint SetGid = 0x400;
        if ((mode & SetGid) == 0 || c.InGroup(fileGid) == true || c.HasCapability(Caller.CapFsetid)) return mode;
        return mode & ~SetGid;
    }

    /// <summary>
    /// Whether everyone may search a directory by its mode. Names found in a directory that
    /// some class may not search are answered with an entry timeout of 0, so the kernel asks
    /// again (and the daemon checks search permission again) at every path walk through it
    /// instead of trusting a name that another caller looked up.
    /// </summary>
    public static bool EveryoneMaySearch(in InodeAttr dir) => (dir.Mode & AnyExec) == AnyExec;
}

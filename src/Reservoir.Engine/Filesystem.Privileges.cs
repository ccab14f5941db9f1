using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    private static readonly byte[] CapabilityXattrName = "security.capability"u8.ToArray();

    /// <summary>
    /// What Linux's VFS drops when a file is written, truncated or given a new owner
    /// (file_remove_privs, notify_change's ATTR_KILL_*), for a front end that takes that job
    /// from the kernel (FUSE's HANDLE_KILLPRIV_V2): with <paramref name="setIds"/> (the caller
    /// lacks CAP_FSETID, or it is a chown) set-user-ID, and set-group-ID when the group may
    /// execute (without group execute it marks mandatory locking and stays); always the
    /// security.capability attribute. Directories keep everything, as a chown leaves them.
    /// Costs no lock and no tree lookup when there is nothing to drop, which is nearly always.
    /// <paramref name="changed"/> says whether anything went (a front end with cached
    /// attributes must forget them).
    /// </summary>
    public Errno DropPrivileges(ulong ino, bool setIds, out bool changed)
    {
        changed = false;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            if (!inode.IsReg) return Errno.OK;
            if (inode.Capability == CapabilityXattr.Unknown) LearnCapability(inode);
            uint mode = inode.Item.Mode; // a hint: decided again under the lock
            bool ids = setIds && NewModeWithoutIds(mode) != mode;
            if (!ids && inode.Capability != CapabilityXattr.Present) return Errno.OK;
            if (inode.Subvol.ReadOnly) return Errno.EROFS;
            return DropPrivilegesGuarded(ino, inode, setIds, out changed);
        }
        finally { Put(inode); }
    }

    /// <summary><see cref="DropPrivileges"/> when something may go: a method of its own, so
    /// that the closure Guard needs is made only then, not on every write (bench --alloc).</summary>
    private Errno DropPrivilegesGuarded(ulong ino, Inode inode, bool setIds, out bool changed)
    {
        bool dropped = false;
        var e = Guard(ino, () =>
        {
            using var lk = inode.Lock.Write();
            if (inode.Deleted) return Errno.ENOENT;
            uint newMode = setIds ? NewModeWithoutIds(inode.Item.Mode) : inode.Item.Mode;
            bool cap = inode.Capability == CapabilityXattr.Present;
            if (newMode == inode.Item.Mode && !cap) return Errno.OK;
            var t = inode.Subvol.Tree;
            var se = Fs.TryStart(3, out var h, useGlobalReserve: true);
            if (se != Errno.OK) return se;
            using (h)
            using (t.Lock.Write())
            {
                if (cap && DirItems.Find(t, inode.Ino, KeyTypes.XattrItem, CapabilityXattrName, out _, out _, out _))
                    DirItems.RemoveHashed(h, t, inode.Ino, KeyTypes.XattrItem, CapabilityXattrName);
                inode.Capability = CapabilityXattr.Absent;
                inode.Item.Mode = newMode;
                Touch(ref inode.Item, h.Transid, mtime: false);
                DirItems.PutInode(h, t, inode);
            }
            dropped = true;
            return Errno.OK;
        });
        changed = dropped;
        return e;
    }

    private static uint NewModeWithoutIds(uint mode)
    {
        mode &= ~Mode.ISUID;
        if ((mode & 0x8) != 0) mode &= ~Mode.ISGID; // S_IXGRP
        return mode;
    }

    /// <summary>Looks once whether the inode has security.capability.</summary>
    private void LearnCapability(Inode inode)
    {
        Guard(inode.NodeId, () =>
        {
            using var lk = inode.Lock.Write();
            if (inode.Capability != CapabilityXattr.Unknown || inode.Deleted) return Errno.OK;
            using var lk2 = inode.Subvol.Tree.Lock.Read();
            bool has = DirItems.Find(inode.Subvol.Tree, inode.Ino, KeyTypes.XattrItem, CapabilityXattrName, out _, out _, out _);
            inode.Capability = has ? CapabilityXattr.Present : CapabilityXattr.Absent;
            return Errno.OK;
        });
    }

    /// <summary>After setxattr or removexattr of <paramref name="name"/> under the inode's
    /// write lock: keeps <see cref="Inode.Capability"/> true.</summary>
    private static void NoteXattrChanged(Inode inode, ReadOnlySpan<byte> name, bool present)
    {
        if (name.SequenceEqual(CapabilityXattrName)) inode.Capability = present ? CapabilityXattr.Present : CapabilityXattr.Absent;
    }
}

using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>
/// Access times. A kernel filesystem has the VFS update atime after a read or a directory
/// listing (touch_atime); FUSE marks its inodes S_NOATIME and only drops the atime it has cached
/// after a read, leaving the update to the filesystem. So the engine does it, with the kernel's
/// rules: relatime by default (relatime_need_update), noatime, strictatime, nodiratime. An
/// update is one inode item in the running transaction; one that cannot start (a read-only
/// mount or subvolume, a full filesystem) is skipped, never the read's error.
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>Whether reading <paramref name="inode"/> now updates its atime. Caller holds the
    /// inode's lock (either way).</summary>
    private bool AtimeDue(Inode inode)
    {
        var mode = Fs.Options.Atime;
        if (mode == AtimeMode.NoAtime || (inode.IsDir && Fs.Options.NoDirAtime) || Fs.ReadOnly || inode.Subvol.ReadOnly || inode.Deleted) return false;
        ref readonly var it = ref inode.Item; // read in place: every read of a file asks
        var now = Timespec.Now();
        if (it.Atime == now) return false;
        if (mode == AtimeMode.StrictAtime) return true;
        return it.Mtime.CompareTo(it.Atime) >= 0 || it.Ctime.CompareTo(it.Atime) >= 0 || now.Sec - it.Atime.Sec >= 24 * 60 * 60;
    }

    /// <summary>Sets the atime after a read that found it due (<see cref="AtimeDue"/>, asked
    /// again under the inode's exclusive lock: readers that found it due together update it
    /// once). Neither ctime nor the change sequence moves, as for any atime update.</summary>
    private void TouchAtime(Inode inode, ulong ino)
    {
        Guard(ino, () =>
        {
            using var lk = inode.Lock.Write();
            if (!AtimeDue(inode)) return Errno.OK;
            if (Fs.TryStart(1, out var h) != Errno.OK) return Errno.OK;
            using (h)
            using (inode.Subvol.Tree.Lock.Write())
            {
                inode.Item.Atime = Timespec.Now();
                inode.Item.Transid = h.Transid;
                DirItems.PutInode(h, inode.Subvol.Tree, inode);
            }
            return Errno.OK;
        });
    }
}

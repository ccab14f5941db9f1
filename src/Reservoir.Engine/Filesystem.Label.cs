using System.Text;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Engine;

/// <summary>
/// The filesystem's label (superblock, SPEC.md §2): read and changed online (FS_IOC_GETFSLABEL
/// and FS_IOC_SETFSLABEL through the mount, as on btrfs, ext4 and xfs) and offline
/// (`reservoir filesystem label`).
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>
    /// Sets the label (UTF-8, at most 255 bytes, no NUL) and commits it. The new superblock is
    /// put in place while a transaction handle is held, so no commit is between taking its copy
    /// of the superblock and publishing it (which would drop the change); the commit that
    /// follows writes it.
    /// </summary>
    public Errno SetLabel(string label)
    {
        if (Encoding.UTF8.GetByteCount(label) >= FormatConstants.LabelSize || label.Contains('\0')) return Errno.EINVAL;
        return Guard(0, () =>
        {
            if (Fs.ReadOnly) return Errno.EROFS;
            var e = Fs.TryStart(0, out var h);
            if (e != Errno.OK) return e;
            using (h) Fs.ReplaceSuper(sb => sb.Label = label);
            Fs.ForceCommit = true;
            Fs.Commit();
            return Fs.FailedReason != null ? Errno.EIO : Errno.OK;
        });
    }
}

using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Engine;

/// <summary>
/// Growing and shrinking the filesystem, offline (`reservoir filesystem resize SIZE IMAGE`),
/// online (through the mount, btrfs's resize ioctl or Reservoir's) and in the embedded API. An
/// image file grows with the filesystem and is cut after it shrinks; a shrink moves the extents
/// past the new end below it first (FsInfo.Relocate.cs), and is refused only when what is in use
/// does not fit.
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>Sizes before and after a resize.</summary>
    public readonly record struct ResizeResult(ulong OldSize, ulong NewSize);

    /// <summary>
    /// Parses btrfs's resize argument: <c>[1:][+|-]SIZE[kKmMgGtTpPeE]</c> or <c>[1:]max</c> (the
    /// one device has id 1). A bare SIZE is the new size, +SIZE and -SIZE change the current one,
    /// max is the device's size (an image file's length now, after `truncate -s` for one).
    /// </summary>
    public static bool TryParseResize(string spec, ulong current, Func<ulong> deviceSize, out ulong target, out string error)
    {
        target = 0;
        error = "";
        string s = spec.Trim();
        int colon = s.IndexOf(':');
        if (colon >= 0)
        {
            if (s[..colon] != "1") { error = $"no device with id '{s[..colon]}' (a Reservoir filesystem has one device, id 1)"; return false; }
            s = s[(colon + 1)..];
        }
        if (s.Equals("max", StringComparison.OrdinalIgnoreCase)) { target = deviceSize(); return true; }
        if (s.Equals("cancel", StringComparison.OrdinalIgnoreCase)) { error = "'cancel' is not a size (Resize(\"cancel\", …) stops a shrink under way)"; return false; }
        int sign = s.StartsWith('+') ? 1 : s.StartsWith('-') ? -1 : 0;
        if (!Units.TryParseSize(sign != 0 ? s[1..] : s, out ulong n)) { error = $"invalid size '{spec}': expected [1:][+|-]SIZE[kKmMgGtTpPeE] or [1:]max"; return false; }
        if (sign > 0 && n > ulong.MaxValue - current) { error = $"'{spec}' is past any size"; return false; }
        if (sign < 0 && n > current) { error = $"'{spec}' is more than the filesystem's {Units.Human(current)}"; return false; }
        target = sign > 0 ? current + n : sign < 0 ? current - n : n;
        return true;
    }

    /// <summary>What the last shrink moved to make room (extents and tree blocks).</summary>
    public Tx.RelocationResult LastRelocation { get; private set; }

    /// <summary>The smallest size a shrink could cut to without moving anything (the end of the
    /// last block in use); a shrink below it moves what is in its way.</summary>
    public ulong MinimumSizeWithoutMoving => Fs.Space.MinimumSize();

    /// <summary>The filesystem's size now (total_bytes).</summary>
    public ulong TotalBytes => Fs.TotalBytes;

    /// <summary><see cref="Resize(ulong, out ResizeResult, out string?)"/> with btrfs's resize
    /// argument (<see cref="TryParseResize"/>).</summary>
    public Errno Resize(string spec, out ResizeResult result, out string? why)
    {
        result = new(Fs.TotalBytes, Fs.TotalBytes);
        // btrfs's `resize cancel` (as `balance cancel`): the shrink under way, if any, stops
        // after its current round and answers ECANCELED; this call answers at once.
        if (spec.Trim() is var c && (c.Equals("cancel", StringComparison.OrdinalIgnoreCase) || c.Equals("1:cancel", StringComparison.OrdinalIgnoreCase)))
        {
            if (Fs.CancelResize()) { why = "the shrink under way stops after the round it is in"; return Errno.OK; }
            why = "there is no shrink under way to cancel";
            return Errno.EINVAL;
        }
        if (!TryParseResize(spec, Fs.TotalBytes, () => Fs.Device.ProbeSize(), out ulong target, out string err)) { why = err; return Errno.EINVAL; }
        return Resize(target, out result, out why);
    }

    /// <summary>
    /// Makes the filesystem <paramref name="newSize"/> bytes (rounded down to a node): grows it
    /// (an image file grows with it; a block device must be that large already) or shrinks it
    /// (writes everything back and commits first, then moves the extents past the new end
    /// below it; refused with ENOSPC, nothing changed, when they do not fit).
    /// <paramref name="why"/> says what went wrong.
    /// </summary>
    public Errno Resize(ulong newSize, out ResizeResult result, out string? why)
    {
        ulong old = Fs.TotalBytes;
        result = new(old, old);
        why = null;
        if (Fs.ReadOnly) { why = "the filesystem is mounted read-only"; return Errno.EROFS; }
        string? message = null;
        ulong done = old;
        // A shrink syncs behind its allocation fence (extents in flight get their place below
        // the new end or before the move, and what was freed is free), then moves what is past
        // the end.
        void SyncForShrink()
        {
            // Each file under its lock first, as a snapshot flushes its source: a write that
            // decided to go in place before the fence went up has dirtied its pages by the time
            // the lock is ours, and is written back here, before anything moves.
            foreach (var sv in LoadedSubvolumes()) FlushSubvolume(sv);
            var se = Sync();
            if (se != Errno.OK) throw new FsException(se, "sync before the shrink failed");
        }
        // Every error is said as it is: the resize changes no tree outside its own commits, and
        // a commit that fails has marked the filesystem failed itself.
        var e = Guard(0, () =>
        {
            try
            {
                done = Fs.Resize(newSize, SyncForShrink, out var moved);
                LastRelocation = moved;
                return Errno.OK;
            }
            catch (FsException ex)
            {
                message = ex.Message;
                return ex.Errno is Errno.ENOSPC or Errno.EINVAL or Errno.EFBIG or Errno.EROFS or Errno.EOPNOTSUPP or Errno.ECANCELED ? ex.Errno : Errno.EIO;
            }
        });
        why = message ?? (e != Errno.OK ? Fs.FailedReason ?? "the resize failed (see the log)" : null);
        result = new(old, e == Errno.OK ? done : old);
        return e;
    }
}

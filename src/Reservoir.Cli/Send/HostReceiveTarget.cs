using Microsoft.Win32.SafeHandles;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Cli.Commands;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Cli.Send;

/// <summary>
/// Receives into a directory of a mounted Reservoir through the kernel, as `btrfs receive` does
/// on btrfs: the subvolume through Reservoir's subvolume ioctl, everything in it with ordinary
/// system calls (l* variants: a stream's CHOWN, xattrs and times of a symbolic link are the
/// link's own), clones through copy_file_range (which the mount answers by sharing extents).
/// Consecutive WRITEs to one file keep it open. Receive runs as root: no path a stream names may
/// reach through a symbolic link (<see cref="ReceivePaths"/>), and files are opened with
/// O_NOFOLLOW, so a stream cannot write outside the subvolume it makes.
/// </summary>
internal sealed class HostReceiveTarget : IReceiveTarget
{
    private readonly string _dest;
    private string? _subvolume;
    private string? _openPath;
    private SafeFileHandle? _open;
    private readonly ReceivePaths _paths;

    /// <summary>The mount's root as `receive -m` names it; null: the highest directory above the
    /// destination the same daemon serves, found by asking.</summary>
    private readonly string? _mountRoot;

    /// <summary>`receive -C`: only subvolumes inside the destination may be parents and clone
    /// sources, as with btrfs's, which chroots there.</summary>
    private readonly bool _confine;

    /// <param name="mountRoot">`receive -m ROOTMOUNT`: the root of the mount the destination is
    /// on, as <see cref="MountRootFor"/> returned it (checked once, before the stream is read).</param>
    /// <param name="confine">`receive -C`: parents and clone sources only from inside the
    /// destination.</param>
    public HostReceiveTarget(string destination, string? mountRoot = null, bool confine = false)
    {
        _dest = Path.GetFullPath(destination).TrimEnd('/');
        if (!Directory.Exists(_dest)) throw new FsException(Errno.ENOTDIR, $"receive: '{destination}' is not a directory");
        _paths = new ReceivePaths(p => IsSymlink(Full(p)));
        _mountRoot = mountRoot;
        _confine = confine;
    }

    /// <summary><paramref name="root"/> (full, without a trailing slash) once it is checked to be
    /// the root of the mount <paramref name="dest"/> is on: a directory at or above it that the
    /// same daemon serves, whose parent it does not.</summary>
    internal static string MountRootFor(string dest, string root)
    {
        string full = Path.GetFullPath(root).TrimEnd('/');
        if (full.Length == 0) full = "/";
        if (OnlineSubvolume.ServedBy(dest, out var daemon) != Errno.OK)
            throw new FsException(Errno.ENOTTY, $"receive: '{dest}' is not on a mounted Reservoir");
        bool above = full == "/" || dest == full || dest.StartsWith(full + "/", StringComparison.Ordinal);
        if (!above || OnlineSubvolume.ServedBy(full, out var d) != Errno.OK || d != daemon)
            throw new FsException(Errno.EINVAL, $"receive: '{root}' is not the mount '{dest}' is on");
        if (full != "/" && OnlineSubvolume.ServedBy(Path.GetDirectoryName(full)!, out var up) == Errno.OK && up == daemon)
            throw new FsException(Errno.EINVAL, $"receive: '{root}' is not the root of its mount (its parent is on the same mount)");
        return full;
    }

    private static bool IsSymlink(string path)
    {
        try { return (HostFiles.LstatFull(path).Mode & 0xF000) == 0xA000; }
        catch (IOException) { return false; } // missing: the command itself fails on it
    }

    private string Full(string path) => path.Length == 0 ? _subvolume! : _subvolume + "/" + path;

    /// <summary><see cref="Full"/> of a path a command names, once no directory on the way is a
    /// symbolic link.</summary>
    private string Safe(string path)
    {
        _paths.Check(path);
        return Full(path);
    }

    public void BeginSubvolume(string name)
    {
        _subvolume = _dest + "/" + name;
        var e = OnlineSubvolume.Create(_subvolume);
        if (e == Errno.EEXIST) throw new FsException(e, $"receive: '{_subvolume}' exists already");
        if (e == Errno.ENOTTY) throw new FsException(e, $"receive: '{_dest}' is not on a mounted Reservoir (give IMAGE DIR for an unmounted image)");
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot create the subvolume '{_subvolume}'");
    }

    public void BeginSnapshot(string name, string parent)
    {
        _subvolume = _dest + "/" + name;
        if (Directory.Exists(_subvolume) || File.Exists(_subvolume)) throw new FsException(Errno.EEXIST, $"receive: '{_subvolume}' exists already");
        var e = OnlineSubvolume.Snapshot(parent, _subvolume, readOnly: false);
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot snapshot '{parent}' as '{_subvolume}'");
    }

    /// <summary>The highest directory above the destination served by the same daemon (the
    /// mount's root, across the subvolumes' own mounts with -o submounts), and the path from the
    /// top level of the subvolume mounted there ("" for the top level).</summary>
    private (string Root, string Prefix) MountRoot(IReadOnlyList<(ulong Id, string Path)> subvolumes)
    {
        if (OnlineSubvolume.ServedBy(_dest, out var daemon) != Errno.OK) throw new FsException(Errno.ENOTTY, $"receive: '{_dest}' is not on a mounted Reservoir");
        string root = _mountRoot ?? _dest;
        for (var up = Path.GetDirectoryName(root); _mountRoot == null && up != null; up = Path.GetDirectoryName(root))
        {
            if (OnlineSubvolume.ServedBy(up, out var d) != Errno.OK || d != daemon) break;
            root = up;
        }
        ulong id = OnlineSubvolume.SubvolumeHolding(root) ?? Format.TreeIds.FsTree;
        string prefix = id == Format.TreeIds.FsTree ? "" : subvolumes.FirstOrDefault(s => s.Id == id).Path ?? "";
        return (root, prefix);
    }

    public string? FindSubvolume(Guid uuid, ulong ctransid)
    {
        var e = OnlineSubvolume.List(_dest, out var all);
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot list the subvolumes of '{_dest}'");
        int at = StreamIdentity.Find(all.Select(x => (x.Uuid, x.ReceivedUuid, x.Generation, x.ReadOnly)).ToList(), uuid, ctransid);
        if (at < 0) return null;
        var found = all[at];
        var (root, prefix) = MountRoot(all.Select(s => (s.Id, s.Path)).ToList());
        string? path = prefix.Length == 0 ? (root == "/" ? "/" : root + "/") + found.Path
            : found.Path.StartsWith(prefix + "/", StringComparison.Ordinal) ? root + found.Path[prefix.Length..] : null;
        // -C: what is outside the destination is not there to be found.
        return _confine && path != null && !path.StartsWith(_dest + "/", StringComparison.Ordinal) ? null : path;
    }

    public void Mkfile(string path)
    {
        Close();
        // A new regular file, refused if the name exists; kept open for the data that follows.
        _open = HostFiles.CreateNew(Safe(path), 0x180);
        _openPath = path;
        _createdOwner = HostFiles.OwnerOf(_open);
    }

    /// <summary>The owner the file <see cref="Mkfile"/> just made got (the receiver's, or the
    /// group of a set-group-ID directory): a CHOWN to it changes nothing on a file that has no
    /// mode bits or attributes yet to clear, and is skipped (a round trip through a mount per
    /// file: receive as root of files owned by root).</summary>
    private (uint Uid, uint Gid)? _createdOwner;

    public void Mkdir(string path) => HostFiles.Mkdir(Safe(path), 0x1C0);
    public void Mknod(string path, uint mode, ulong rdev) => HostFiles.Mknod(Safe(path), mode, rdev);
    public void Symlink(string path, string target) => File.CreateSymbolicLink(Safe(path), target);

    public void Rename(string from, string to)
    {
        Close();
        HostFiles.Rename(Safe(from), Safe(to));
        _paths.Changed();
    }

    public void Link(string path, string existing) => HostFiles.Link(Safe(existing), Safe(path)); // link(2) does not follow a final link

    public void Unlink(string path)
    {
        Close();
        HostFiles.Unlink(Safe(path));
        _paths.Changed();
    }

    public void Rmdir(string path)
    {
        Directory.Delete(Safe(path));
        _paths.Changed();
    }

    public void SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        _createdOwner = null; // security.capability, which a chown clears
        HostFiles.SetXattr(Safe(path), name.ToArray(), value.ToArray());
    }
    public void RemoveXattr(string path, ReadOnlySpan<byte> name) => HostFiles.RemoveXattr(Safe(path), name.ToArray());

    private SafeFileHandle OpenForWrite(string path)
    {
        if (_openPath == path && _open != null) return _open;
        Close();
        _open = HostFiles.OpenNoFollow(Safe(path), write: true);
        _openPath = path;
        return _open;
    }

    public void Write(string path, long offset, ReadOnlySpan<byte> data) => RandomAccess.Write(OpenForWrite(path), data, offset);

    public void Clone(string path, long offset, long length, string? sourceSubvolume, string source, long sourceOffset)
    {
        var dst = OpenForWrite(path);
        // The source too stays inside its subvolume (another one's links may point anywhere).
        if (sourceSubvolume != null) new ReceivePaths(p => IsSymlink(sourceSubvolume + "/" + p)).Check(source);
        using var src = HostFiles.OpenNoFollow(sourceSubvolume == null ? Safe(source) : sourceSubvolume + "/" + source, write: false);
        HostFiles.CopyRange(src, sourceOffset, dst, offset, length, Full(path));
    }

    public void Fallocate(string path, int mode, long offset, long length) =>
        HostFiles.Fallocate(OpenForWrite(path), mode, offset, length, Full(path));

    public void Truncate(string path, long size)
    {
        using var h = HostFiles.OpenNoFollow(Safe(path), write: true);
        RandomAccess.SetLength(h, size);
    }

    /// <summary>The file the stream just wrote, still open (opened without following a link),
    /// when <paramref name="path"/> is it: its attributes are set through it.</summary>
    private SafeFileHandle? OpenAt(string path) => _openPath == path ? _open : null;

    public void Chmod(string path, uint mode)
    {
        _createdOwner = null; // mode bits a chown after this would clear: no longer skipped
        if (OpenAt(path) is { } h) { HostFiles.Chmod(h, mode, Full(path)); return; }
        // chmod(2) follows a final link; a stream never changes a link's mode (it has none).
        if (IsSymlink(Safe(path))) throw new FsException(Errno.ELOOP, $"receive: cannot chmod '{Full(path)}': a symbolic link");
        HostFiles.Chmod(Full(path), mode);
    }

    public void Chown(string path, uint uid, uint gid)
    {
        if (OpenAt(path) != null && _createdOwner == (uid, gid)) return;
        bool done = OpenAt(path) is { } h ? HostFiles.TryChown(h, uid, gid) : HostFiles.TryChown(Safe(path), uid, gid);
        if (!done) throw new IOException($"cannot chown '{Full(path)}' to {uid}:{gid} (receive keeps owners, as btrfs receive does: run it as root)");
    }

    public void Utimes(string path, Timespec atime, Timespec mtime)
    {
        if (OpenAt(path) is { } h) HostFiles.SetTimes(h, atime, mtime, Full(path));
        else HostFiles.SetTimes(Safe(path), atime, mtime);
    }

    private void Close()
    {
        _open?.Dispose();
        _open = null;
        _openPath = null;
        _createdOwner = null;
    }

    public void EndSubvolume(Guid receivedUuid, ulong stransid)
    {
        Close();
        var re = OnlineSubvolume.SetReceived(_subvolume!, receivedUuid, stransid);
        if (re != Errno.OK) throw new FsException(re, $"receive: cannot record the received uuid of '{_subvolume}'");
        var e = OnlineSubvolume.SetReadOnly(_subvolume!, true);
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot make '{_subvolume}' read-only");
    }

    public void Abandon()
    {
        Close();
        if (_subvolume == null) return;
        var e = OnlineSubvolume.Delete(_subvolume);
        if (e != Errno.OK) throw new FsException(e, $"the partly received subvolume '{_subvolume}' is left (delete it with `reservoir subvolume delete`)");
    }
}

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
/// Consecutive WRITEs to one file keep it open.
/// </summary>
internal sealed class HostReceiveTarget : IReceiveTarget
{
    private readonly string _dest;
    private string? _subvolume;
    private string? _openPath;
    private SafeFileHandle? _open;

    public HostReceiveTarget(string destination)
    {
        _dest = Path.GetFullPath(destination).TrimEnd('/');
        if (!Directory.Exists(_dest)) throw new FsException(Errno.ENOTDIR, $"receive: '{destination}' is not a directory");
    }

    private string Full(string path) => path.Length == 0 ? _subvolume! : _subvolume + "/" + path;

    public void BeginSubvolume(string name)
    {
        _subvolume = _dest + "/" + name;
        var e = OnlineSubvolume.Create(_subvolume);
        if (e == Errno.EEXIST) throw new FsException(e, $"receive: '{_subvolume}' exists already");
        if (e == Errno.ENOTTY) throw new FsException(e, $"receive: '{_dest}' is not on a mounted Reservoir (give IMAGE DIR for an unmounted image)");
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot create the subvolume '{_subvolume}'");
    }

    public void Mkfile(string path)
    {
        Close();
        HostFiles.Mknod(Full(path), 0x8000 | 0x180, 0); // a new regular file, refused if the name exists
    }

    public void Mkdir(string path) => HostFiles.Mkdir(Full(path), 0x1C0);
    public void Mknod(string path, uint mode, ulong rdev) => HostFiles.Mknod(Full(path), mode, rdev);
    public void Symlink(string path, string target) => File.CreateSymbolicLink(Full(path), target);

    public void Rename(string from, string to)
    {
        Close();
        HostFiles.Rename(Full(from), Full(to));
    }

    public void Link(string path, string existing) => HostFiles.Link(Full(existing), Full(path));

    public void Unlink(string path)
    {
        Close();
        HostFiles.Unlink(Full(path));
    }

    public void Rmdir(string path) => Directory.Delete(Full(path));
    public void SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) => HostFiles.SetXattr(Full(path), name.ToArray(), value.ToArray());
    public void RemoveXattr(string path, ReadOnlySpan<byte> name) => HostFiles.RemoveXattr(Full(path), name.ToArray());

    private SafeFileHandle OpenForWrite(string path)
    {
        if (_openPath == path && _open != null) return _open;
        Close();
        _open = File.OpenHandle(Full(path), FileMode.Open, FileAccess.Write);
        _openPath = path;
        return _open;
    }

    public void Write(string path, long offset, ReadOnlySpan<byte> data) => RandomAccess.Write(OpenForWrite(path), data, offset);

    public void Clone(string path, long offset, long length, string source, long sourceOffset)
    {
        var dst = OpenForWrite(path);
        using var src = File.OpenHandle(Full(source), FileMode.Open, FileAccess.Read);
        HostFiles.CopyRange(src, sourceOffset, dst, offset, length, Full(path));
    }

    public void Truncate(string path, long size)
    {
        using var h = File.OpenHandle(Full(path), FileMode.Open, FileAccess.Write);
        RandomAccess.SetLength(h, size);
    }

    public void Chmod(string path, uint mode) => HostFiles.Chmod(Full(path), mode);

    public void Chown(string path, uint uid, uint gid)
    {
        if (!HostFiles.TryChown(Full(path), uid, gid)) throw new IOException($"cannot chown '{Full(path)}' to {uid}:{gid} (receive keeps owners, as btrfs receive does: run it as root)");
    }

    public void Utimes(string path, Timespec atime, Timespec mtime) => HostFiles.SetTimes(Full(path), atime, mtime);

    private void Close()
    {
        _open?.Dispose();
        _open = null;
        _openPath = null;
    }

    public void EndSubvolume()
    {
        Close();
        var e = OnlineSubvolume.SetReadOnly(_subvolume!, true);
        if (e != Errno.OK) throw new FsException(e, $"receive: cannot make '{_subvolume}' read-only");
    }

    public void Abandon()
    {
        Close();
        if (_subvolume != null) OnlineSubvolume.Delete(_subvolume);
    }
}

using System.Text;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Format;

namespace Reservoir;

/// <summary>An entry as <see cref="ReservoirFileSystem.GetInfo"/> and
/// <see cref="ReservoirFileSystem.EnumerateEntries"/> report it.</summary>
public sealed record ReservoirEntry(string Path, string Name, InodeAttr Attr)
{
    public bool IsDirectory => Attr.IsDir;
    public bool IsFile => Attr.IsReg;
    public bool IsSymlink => Attr.IsLnk;
    public long Length => (long)Attr.Size;
    public DateTime LastWriteTimeUtc => Attr.Mtime.ToDateTime();
    public DateTime CreationTimeUtc => Attr.Btime.ToDateTime();

    /// <summary>The subvolume holding the entry (5: the top level).</summary>
    public ulong SubvolumeId => Engine.Inodes.NodeIds.Decode(Attr.Ino).TreeId;

    /// <summary>The entry's inode number inside its subvolume: each subvolume numbers its own
    /// inodes (its root directory is 256), as on btrfs. <see cref="InodeAttr.Ino"/> is the
    /// number unique in the whole filesystem (what a FUSE mount reports as st_ino).</summary>
    public ulong InodeNumber => Engine.Inodes.NodeIds.Decode(Attr.Ino).Ino;

    /// <summary>A device number of the subvolume's own, as btrfs gives each subvolume an
    /// anonymous device (major 0, here minor = the subvolume id, in Linux's dev_t encoding):
    /// (<see cref="Device"/>, <see cref="InodeNumber"/>) identifies a file, and a change of
    /// device marks a subvolume boundary, as `find -xdev` takes it. A FUSE mount cannot show
    /// it (the kernel gives every inode of a mount the mount's st_dev), so there the inode
    /// numbers are unique across subvolumes instead.</summary>
    public ulong Device => (SubvolumeId & 0xFF) | ((SubvolumeId & ~0xFFUL) << 12);
}

/// <summary>
/// A Reservoir filesystem in one image file, used in-process: System.IO-shaped methods that
/// throw exceptions (<see cref="FileNotFoundException"/>, <see cref="IOException"/> carrying an
/// errno…), a path-based errno API in <see cref="Posix"/>, and the inode-level engine in
/// <see cref="Engine"/>. Disposing commits and closes the image.
/// </summary>
public sealed partial class ReservoirFileSystem : IDisposable
{
    private readonly IBlockDevice _dev;
    private readonly bool _ownsDevice;
    private readonly PathWalker _walk;
    public Filesystem Engine { get; }
    public PosixApi Posix { get; }

    private ReservoirFileSystem(IBlockDevice dev, bool owns, MountOptions? options, DataOptions? data)
    {
        _dev = dev;
        _ownsDevice = owns;
        try { Engine = Filesystem.Mount(dev, options, data); }
        catch
        {
            if (owns) dev.Dispose();
            throw;
        }
        _walk = new PathWalker(Engine);
        Posix = new PosixApi(Engine);
    }

    /// <summary>Creates an image file of <paramref name="size"/> bytes, formats and mounts it.
    /// <paramref name="data"/> sets the data path: the page cache budget
    /// (<see cref="DataOptions.PageCacheBytes"/>, 256 MiB unless given, most of the memory the
    /// filesystem takes), dirty thresholds, writeback interval.</summary>
    public static ReservoirFileSystem Create(string imagePath, long size, MkfsOptions? mkfs = null, MountOptions? mount = null, DataOptions? data = null)
    {
        var dev = FileBlockDevice.Create(imagePath, (ulong)size);
        try { Filesystem.Format(dev, mkfs); }
        catch { dev.Dispose(); throw; }
        return new ReservoirFileSystem(dev, true, mount, data);
    }

    /// <summary>Mounts an existing image (read-only if <paramref name="options"/> says so);
    /// <paramref name="data"/> as for <see cref="Create"/>.</summary>
    public static ReservoirFileSystem Open(string imagePath, MountOptions? options = null, DataOptions? data = null)
    {
        var dev = FileBlockDevice.Open(imagePath, options?.ReadOnly ?? false);
        return new ReservoirFileSystem(dev, true, options, data);
    }

    /// <summary>Mounts a filesystem on any device (memory, crash-simulating…), not owning it.</summary>
    public static ReservoirFileSystem Open(IBlockDevice device, MountOptions? options = null, DataOptions? data = null) => new(device, false, options, data);

    // ------------------------------------------------------------------ System.IO shape

    public Stream OpenFile(string path, FileMode mode, FileAccess access = FileAccess.ReadWrite)
    {
        var flags = access switch { FileAccess.Read => OpenFlags.ReadOnly, FileAccess.Write => OpenFlags.WriteOnly, _ => OpenFlags.ReadWrite };
        switch (mode)
        {
            case FileMode.CreateNew: flags |= OpenFlags.Create | OpenFlags.Exclusive; break;
            case FileMode.Create: flags |= OpenFlags.Create | OpenFlags.Truncate; break;
            case FileMode.OpenOrCreate: flags |= OpenFlags.Create; break;
            case FileMode.Truncate: flags |= OpenFlags.Truncate; break;
            case FileMode.Append: flags |= OpenFlags.Create | OpenFlags.Append; break;
        }
        if (mode != FileMode.Open && mode != FileMode.OpenOrCreate && access == FileAccess.Read)
            throw new ArgumentException($"{mode} needs write access");
        Check(Posix.Open(path, flags, 0x1A4, out var a), path);
        if (a.IsDir)
        {
            Engine.Release(a.Ino);
            throw new UnauthorizedAccessException($"'{path}' is a directory");
        }
        var s = new ReservoirFileStream(Engine, a.Ino, access != FileAccess.Write, access != FileAccess.Read, mode == FileMode.Append);
        if (mode == FileMode.Append) s.Seek(0, SeekOrigin.End);
        return s;
    }

    /// <summary>Maps [offset, offset+length) of an existing file for shared writing (mmap).</summary>
    public MappedRegion MapWritable(string path, long offset, long length)
    {
        Check(Posix.Open(path, OpenFlags.ReadWrite, 0, out var a), path);
        if (!a.IsReg || offset < 0 || length < 0 || (ulong)(offset + length) > a.Size)
        {
            Engine.Release(a.Ino);
            throw new ArgumentOutOfRangeException(nameof(length), $"'{path}' is {a.Size} bytes; a mapping cannot reach past its end");
        }
        return new MappedRegion(Engine, a.Ino, offset, length);
    }

    public byte[] ReadAllBytes(string path)
    {
        using var s = OpenFile(path, FileMode.Open, FileAccess.Read);
        var buf = new byte[s.Length];
        int done = 0;
        while (done < buf.Length)
        {
            int n = s.Read(buf, done, buf.Length - done);
            if (n == 0) break;
            done += n;
        }
        return done == buf.Length ? buf : buf[..done];
    }

    public void WriteAllBytes(string path, ReadOnlySpan<byte> data)
    {
        using var s = OpenFile(path, FileMode.Create, FileAccess.Write);
        s.Write(data);
    }

    public string ReadAllText(string path) => Encoding.UTF8.GetString(ReadAllBytes(path));
    public void WriteAllText(string path, string text) => WriteAllBytes(path, Encoding.UTF8.GetBytes(text));

    /// <summary>Creates the directory and any missing parents (Directory.CreateDirectory).</summary>
    public void CreateDirectory(string path)
    {
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        string cur = "";
        foreach (var p in parts)
        {
            cur += "/" + p;
            var e = Posix.Mkdir(cur);
            if (e == Errno.EEXIST)
            {
                Check(Posix.Stat(cur, out var a), cur);
                if (!a.IsDir) throw new IOException($"'{cur}' exists and is not a directory");
            }
            else Check(e, cur);
        }
    }

    public bool Exists(string path) => Posix.Stat(path, out _) == Errno.OK;
    public bool FileExists(string path) => Posix.Stat(path, out var a) == Errno.OK && !a.IsDir;
    public bool DirectoryExists(string path) => Posix.Stat(path, out var a) == Errno.OK && a.IsDir;

    public ReservoirEntry GetInfo(string path, bool followLinks = false)
    {
        Check(followLinks ? Posix.Stat(path, out var a) : Posix.Lstat(path, out a), path);
        return new ReservoirEntry(Normalize(path), System.IO.Path.GetFileName(Normalize(path)), a);
    }

    public IEnumerable<ReservoirEntry> EnumerateEntries(string path)
    {
        Check(Posix.ReadDir(path, out var list), path);
        string dir = Normalize(path);
        foreach (var e in list)
        {
            if (Engine.GetAttr(e.Ino, out var a) != Errno.OK) continue; // removed meanwhile
            yield return new ReservoirEntry(dir == "/" ? "/" + e.Name : dir + "/" + e.Name, e.Name, a);
        }
    }

    /// <summary>Creates a subvolume: an independent file tree, linked at <paramref name="path"/>.</summary>
    public void CreateSubvolume(string path) => Check(Posix.CreateSubvolume(path), path);

    /// <summary>Copies a file as a reflink (cp --reflink=always): <paramref name="dest"/> shares
    /// all of <paramref name="source"/>'s data until either changes; no data is copied.</summary>
    public void CloneFile(string source, string dest) => Check(Posix.CloneFile(source, dest), dest);

    /// <summary>Snapshots the subvolume at <paramref name="source"/> as <paramref name="dest"/>:
    /// a new subvolume sharing all of its source's data and metadata until either changes
    /// (constant time, whatever the size). Read-only snapshots refuse every change.</summary>
    public void CreateSnapshot(string source, string dest, bool readOnly = false) => Check(Posix.CreateSnapshot(source, dest, readOnly), dest);

    /// <summary>Deletes the subvolume at <paramref name="path"/> and everything in it; its
    /// space comes back in the background (<see cref="SyncSubvolumeDeletions"/> waits).</summary>
    public void DeleteSubvolume(string path) => Check(Posix.DeleteSubvolume(path), path);

    /// <summary>Waits until deleted subvolumes' space is free (their trees are dropped in the
    /// background). A subvolume deleted while files of it were open keeps its tree until the
    /// last of them is closed, as on btrfs: this waits up to <paramref name="waitForCloses"/>
    /// (none by default; <see cref="Timeout.InfiniteTimeSpan"/> for as long as it takes) for
    /// those closes, then throws an <see cref="FsException"/> with EBUSY naming the subvolumes.</summary>
    public void SyncSubvolumeDeletions(TimeSpan waitForCloses = default)
    {
        long ms = waitForCloses == Timeout.InfiniteTimeSpan ? long.MaxValue / 2 : (long)waitForCloses.TotalMilliseconds;
        if (ms < 0) throw new ArgumentOutOfRangeException(nameof(waitForCloses));
        if (Engine.SyncSubvolumeDeletions(ms) == Errno.OK) return;
        throw new FsException(Errno.EBUSY, "deleted subvolume(s) " + string.Join(", ", Engine.DeletionsWaitingForCloses()) + " keep their space until files of them are closed");
    }

    /// <summary>Every subvolume, with its path from the top-level subvolume's root.</summary>
    public IReadOnlyList<SubvolumeInfo> ListSubvolumes()
    {
        Check(Engine.ListSubvolumes(out var list), "/");
        return list;
    }

    /// <summary>What changed in the subvolume whose root is <paramref name="subvolume"/> since
    /// generation <paramref name="lastGeneration"/> (btrfs's `subvolume find-new`): its file
    /// extents written in that generation or later, after a sync; the marker is the generation
    /// to pass next time. A generation comes from <see cref="SubvolumeInfo.Generation"/> or an
    /// earlier marker. EINVAL when the path is not a subvolume's root.</summary>
    public NewExtents FindNew(string subvolume, ulong lastGeneration)
    {
        Check(Posix.Stat(subvolume, out var a), subvolume);
        var (tree, ino) = Reservoir.Engine.Inodes.NodeIds.Decode(a.Ino);
        if (ino != Filesystem.RootIno) throw new FsException(Errno.EINVAL, $"'{subvolume}' is not a subvolume");
        Check(Engine.FindNew(tree, lastGeneration, out var found), subvolume);
        return found;
    }

    public void Delete(string path, bool recursive = false)
    {
        Check(Posix.Lstat(path, out var a), path);
        if (!a.IsDir) { Check(Posix.Unlink(path), path); return; }
        if (recursive)
            foreach (var e in EnumerateEntries(path).ToList()) Delete(e.Path, true);
        Check(Posix.Rmdir(path), path);
    }

    public void Move(string from, string to, bool overwrite = false) =>
        Check(Posix.Rename(from, to, overwrite ? RenameFlags.None : RenameFlags.NoReplace), from);

    public void CreateSymbolicLink(string path, string target) => Check(Posix.Symlink(target, path), path);
    public void CreateHardLink(string path, string existing) => Check(Posix.Link(existing, path), path);

    public string ReadLink(string path)
    {
        Check(Posix.Readlink(path, out var t), path);
        return t;
    }

    /// <summary>Commits everything written so far (sync(2)).</summary>
    public void Sync() => Check(Engine.Sync(), "/");

    /// <summary>fstrim: commits, then gives the free space back to the device (punches holes in
    /// an image file, so it takes only what its files need on the host). Free ranges shorter
    /// than <paramref name="minimumLength"/> bytes are left. Returns the bytes discarded.</summary>
    public ulong Trim(ulong minimumLength = 0)
    {
        Check(Engine.Trim(0, ulong.MaxValue, minimumLength, out ulong trimmed), "/");
        return trimmed;
    }

    /// <summary>The filesystem's size in bytes (what <see cref="Resize(ulong)"/> changes).</summary>
    public ulong Size => Engine.TotalBytes;

    /// <summary>Grows or shrinks the filesystem to <paramref name="newSize"/> bytes (rounded
    /// down to a node), as `btrfs filesystem resize`: the image file grows with it and is cut
    /// after a shrink. A shrink first moves the extents past the new end below it (snapshots
    /// keep sharing them); when what is in use does not fit it throws an
    /// <see cref="FsException"/> (ENOSPC) saying so, and changes nothing. Returns the new size.</summary>
    public ulong Resize(ulong newSize)
    {
        var e = Engine.Resize(newSize, out var r, out var why);
        if (e != Errno.OK) throw new FsException(e, why ?? e.Describe());
        return r.NewSize;
    }

    /// <summary>The filesystem's label; setting it commits (at most 255 bytes of UTF-8).</summary>
    public string Label
    {
        get => Engine.Label;
        set => Check(Engine.SetLabel(value), "/");
    }

    /// <summary>What a regular file's extents take (<see cref="FileUsage"/>, as `reservoir
    /// filesystem du` prints it): its total, what is its alone, and what it shares with
    /// reflinks and snapshots (<see cref="Filesystem.UnionBytes"/> counts a set's shared bytes
    /// once).</summary>
    public FileUsage DiskUsage(string path)
    {
        Check(Posix.Lstat(path, out var a), path);
        if (!a.IsReg) throw new FsException(Errno.EINVAL, $"'{path}' is not a regular file");
        Check(Engine.DiskUsage(a.Ino, out var u), path);
        return u;
    }

    public StatFsInfo StatFs()
    {
        Engine.StatFs(out var s);
        return s;
    }

    private static string Normalize(string p)
    {
        var parts = p.Split('/', StringSplitOptions.RemoveEmptyEntries);
        return "/" + string.Join('/', parts);
    }

    private static void Check(Errno e, string path)
    {
        if (e != Errno.OK) throw ToException(e, path);
    }

    internal static Exception ToException(Errno e, string path) => e switch
    {
        Errno.ENOENT => new FileNotFoundException($"'{path}': {e.Describe()}", path),
        Errno.EACCES or Errno.EPERM => new UnauthorizedAccessException($"'{path}': {e.Describe()}"),
        _ => new FsException(e, $"'{path}'"),
    };

    public void Dispose()
    {
        Engine.Dispose();
        if (_ownsDevice) _dev.Dispose();
    }
}

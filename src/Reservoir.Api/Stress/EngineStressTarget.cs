using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;

namespace Reservoir.Stress;

/// <summary>The engine in-process: POSIX-style calls through <see cref="PosixApi"/>, data calls
/// straight to the engine (buffered, direct and page-fault writes), reservation checks at the end.</summary>
public sealed class EngineStressTarget(ReservoirFileSystem rfs) : IStressTarget
{
    private PosixApi P => rfs.Posix;
    private Filesystem Fs => rfs.Engine;

    public string Describe => "in-process engine";
    /// <summary>The engine's page-fault write reserves before it stores: a failure changes nothing.</summary>
    public bool FailedMappedWriteLeavesContentsUnspecified(Errno e) => false;
    public string? CheckFile(string path) => P.Lstat(path, out var a) == Common.Errno.OK ? rfs.Engine.CheckExtentsWithinSize(a.Ino) : null;

    public Errno Create(string path)
    {
        var e = P.Open(path, OpenFlags.Create | OpenFlags.Exclusive | OpenFlags.WriteOnly, 0x1A4, out var c);
        if (e == Errno.OK) P.Close(c.Ino);
        return e;
    }

    public Errno Mkdir(string path) => P.Mkdir(path);
    public Errno MkFifo(string path) => P.Mknod(path, 0x1000 | 0x1A4);
    public Errno Symlink(string target, string path) => P.Symlink(target, path);
    public Errno Link(string from, string to) => P.Link(from, to);
    public Errno Unlink(string path) => P.Unlink(path);
    public Errno Rmdir(string path) => P.Rmdir(path);
    public Errno Rename(string from, string to) => P.Rename(from, to);
    public Errno Exchange(string a, string b) => P.Rename(a, b, RenameFlags.Exchange);
    public Errno RenameWhiteout(string from, string to) => P.Rename(from, to, RenameFlags.Whiteout);
    public Errno CreateSubvolume(string path) => P.CreateSubvolume(path);
    public Errno DeleteSubvolume(string path) => P.DeleteSubvolume(path);
    public Errno Snapshot(string source, string dest, bool readOnly) => P.CreateSnapshot(source, dest, readOnly);
    // copy_file_range's semantics, as the path target has (so logs agree with a kernel run):
    // the engine clones the aligned ranges and copies the rest.
    public Errno CloneRange(string src, ulong srcOff, string dst, ulong dstOff, ulong len, out ulong copied) => P.CopyFileRange(src, srcOff, dst, dstOff, len, out copied);

    public Errno Tmpfile(string path, byte[] data)
    {
        int slash = path.LastIndexOf('/');
        var e = P.OpenTmpfile(slash == 0 ? "/" : path[..slash], 0x1A4, out var a);
        if (e != Errno.OK) return e;
        try
        {
            e = Fs.Write(a.Ino, 0, data, out _);
            return e != Errno.OK ? e : P.LinkOpen(a.Ino, path);
        }
        finally { P.Close(a.Ino); }
    }

    public Errno Stat(string path, out StressStat st)
    {
        var e = P.Stat(path, out var a);
        st = e == Errno.OK ? new StressStat(a.IsReg, a.IsDir, a.Size) : default;
        return e;
    }

    public Errno Lstat(string path) => P.Lstat(path, out _);

    public Errno Write(string path, ulong offset, byte[] data, StressWriteKind kind, out int written)
    {
        written = 0;
        var e = P.Stat(path, out var a);
        if (e != Errno.OK) return e;
        if (!a.IsReg) return Errno.EISDIR;
        return kind switch
        {
            StressWriteKind.Mapped => Fs.MappedWrite(a.Ino, offset, data, out written),
            StressWriteKind.Direct => Fs.WriteDirect(a.Ino, offset, data, out written),
            _ => Fs.Write(a.Ino, offset, data, out written),
        };
    }

    public Errno Read(string path, ulong offset, byte[] buffer, bool direct, out int read)
    {
        read = 0;
        var e = P.Stat(path, out var a);
        if (e != Errno.OK) return e;
        if (!a.IsReg) return Errno.EISDIR;
        return direct ? Fs.ReadDirect(a.Ino, offset, buffer, out read) : Fs.Read(a.Ino, offset, buffer, out read);
    }

    public Errno Fallocate(string path, FallocateMode mode, ulong offset, ulong length)
    {
        var e = P.Stat(path, out var a);
        if (e != Errno.OK) return e;
        return a.IsReg ? Fs.Fallocate(a.Ino, mode, offset, length) : Errno.EISDIR;
    }

    public Errno Truncate(string path, ulong size) => P.Truncate(path, size);

    public Errno Fsync(string path, bool dataOnly)
    {
        var e = P.Stat(path, out var a);
        return e == Errno.OK ? Fs.Fsync(a.Ino, dataOnly) : e;
    }

    public Errno Sync() => Fs.Sync();
    private readonly ulong _startSize = rfs.Engine.TotalBytes;
    public Errno DiskUsage(string path)
    {
        var e = P.Lstat(path, out var a);
        return e != Errno.OK ? e : !a.IsReg ? Errno.EINVAL : Fs.DiskUsage(a.Ino, out _);
    }

    public Errno FindNew(string subvolume, int generationsBack)
    {
        var e = P.Lstat(subvolume, out var a);
        if (e != Errno.OK) return e;
        var (tree, ino) = Engine.Inodes.NodeIds.Decode(a.Ino);
        if (ino != Filesystem.RootIno) return Errno.EINVAL;
        ulong since = Fs.Generation > (ulong)generationsBack ? Fs.Generation - (ulong)generationsBack : 0;
        e = Fs.FindNew(tree, since, out var found);
        if (e == Errno.OK) FindNewCheck.Check(subvolume, since, found.Extents, Fs.Generation + 1);
        return e;
    }

    /// <summary>75-125 %: of the size it started with (1 MiB-aligned). Below 75 %, a shrink that
    /// has to move something: to 16-720 KiB below where the last block in use ends (a workload
    /// that fills only the start of the image would otherwise never get a shrink in its way;
    /// much further, and the groups of each kind left could seldom hold what it has).</summary>
    public Errno Resize(int percentOfStart)
    {
        ulong to = percentOfStart >= 75 ? _startSize * (ulong)percentOfStart / 100 >> 20 << 20
            : (Fs.MinimumSizeWithoutMoving - (ulong)(75 - percentOfStart) * 16384) >> 12 << 12;
        var e = Fs.Resize(to, out var r, out _);
        if (e == Errno.OK && r.NewSize < r.OldSize && Fs.LastRelocation is { } m && m.DataExtents + m.TreeBlocks > 0)
            Interlocked.Increment(ref _relocatingShrinks);
        return e;
    }

    private int _relocatingShrinks;
    public (int Shrinks, long DataExtents, long TreeBlocks) Relocations =>
        (Volatile.Read(ref _relocatingShrinks), Fs.Stats.RelocatedDataExtents, Fs.Stats.RelocatedTreeBlocks);
    public Errno Chmod(string path, uint mode) => P.Chmod(path, mode);
    public Errno SetXattr(string path, string name, byte[] value) => P.SetXattr(path, name, value);
    public Errno RemoveXattr(string path, string name) => P.RemoveXattr(path, name);
    public Errno ReadDir(string path) => P.ReadDir(path, out _);
    public Errno Readlink(string path, out string target) => P.Readlink(path, out target);
    public byte[] ReadAll(string path) => rfs.ReadAllBytes(path);
    public bool DirectoryExists(string path) => rfs.DirectoryExists(path);
    public IEnumerable<string> Verify() => Fs.VerifyReservations().Select(v => "reservation ledger: " + v);
}

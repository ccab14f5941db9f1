using Reservoir.Common;

namespace Reservoir.Stress;

/// <summary>How a stress write reaches the file.</summary>
public enum StressWriteKind { Buffered, Direct, Mapped }

/// <summary>Attributes of a path as the stress runner needs them.</summary>
public readonly record struct StressStat(bool IsReg, bool IsDir, ulong Size);

/// <summary>
/// What the stress runner drives: the filesystem under test, addressed by absolute paths
/// ("/p0/f3") relative to the target's root. Two kinds: the engine in-process
/// (<see cref="EngineStressTarget"/>: every path including page-fault writes, plus the
/// reservation checks) and any mounted directory through the kernel's system calls
/// (<see cref="PathStressTarget"/>: Reservoir through FUSE, or kernel ext4 and btrfs for
/// comparison). Every operation answers the errno it got.
/// </summary>
public interface IStressTarget
{
    string Describe { get; }
    /// <summary>Whether a mapped write that reported <paramref name="e"/> may still have changed
    /// what reads return (the runner then stops checking that file's contents and counts it).</summary>
    bool FailedMappedWriteLeavesContentsUnspecified(Errno e);
    Errno Create(string path);
    Errno Mkdir(string path);
    Errno MkFifo(string path);
    Errno Symlink(string target, string path);
    Errno Link(string from, string to);
    Errno Unlink(string path);
    Errno Rmdir(string path);
    Errno Rename(string from, string to);
    /// <summary>renameat2 with RENAME_EXCHANGE: the two names trade what they name.</summary>
    Errno Exchange(string a, string b);
    /// <summary>renameat2 with RENAME_WHITEOUT: a rename that leaves a whiteout (a character
    /// device 0:0, what overlayfs's upper layer holds) at the old name.</summary>
    Errno RenameWhiteout(string from, string to);
    /// <summary>Creates a subvolume (fsstress's subvol_create); EOPNOTSUPP where there are none.</summary>
    Errno CreateSubvolume(string path);
    /// <summary>Deletes a subvolume with everything in it (subvol_delete).</summary>
    Errno DeleteSubvolume(string path);
    /// <summary>Snapshots the subvolume at <paramref name="source"/> as <paramref name="dest"/>
    /// (fsstress's snapshot); EOPNOTSUPP where there are none.</summary>
    Errno Snapshot(string source, string dest, bool readOnly);
    /// <summary>Makes [dstOff, dstOff+len) of <paramref name="dst"/> a copy of [srcOff,
    /// srcOff+len) of <paramref name="src"/> (fsstress's copyrange) with copy_file_range's
    /// semantics: Reservoir in-process clones the aligned ranges and copies the rest; a mounted
    /// directory gets copy_file_range(2) itself. len 0: to the source's end.</summary>
    Errno CloneRange(string src, ulong srcOff, string dst, ulong dstOff, ulong len, out ulong copied);
    /// <summary>open(O_TMPFILE) in <paramref name="path"/>'s directory, <paramref name="data"/>
    /// written whole, then named <paramref name="path"/> by linkat (which replaces nothing:
    /// EEXIST); the first error, the nameless file gone with it.</summary>
    Errno Tmpfile(string path, byte[] data);
    /// <summary>stat (following symlinks).</summary>
    Errno Stat(string path, out StressStat st);
    /// <summary>lstat.</summary>
    Errno Lstat(string path);
    /// <summary>A write of <paramref name="data"/> at <paramref name="offset"/>. Mapped writes
    /// store into the bytes the file already has (the caller trims to its size).
    /// <paramref name="written"/> is what reached the file, also on a short write or an error
    /// after partial progress (a full filesystem): the model keeps exactly that.</summary>
    Errno Write(string path, ulong offset, byte[] data, StressWriteKind kind, out int written);
    Errno Read(string path, ulong offset, byte[] buffer, bool direct, out int read);
    Errno Fallocate(string path, Engine.Data.FallocateMode mode, ulong offset, ulong length);
    Errno Truncate(string path, ulong size);
    Errno Fsync(string path, bool dataOnly);
    Errno Sync();
    /// <summary>Resizes the filesystem to <paramref name="percentOfStart"/> percent of its size
    /// when the target was made, 1 MiB-aligned (`reservoir filesystem resize`; the runner asks
    /// for 30-125 %, so shrinks move what is in their way; a target may read below 75 % as a
    /// shrink past its last block in use): ENOSPC for a shrink that cannot fit what is in use;
    /// ENOTTY where the target cannot resize.</summary>
    Errno Resize(int percentOfStart);
    /// <summary>Shrinks that moved extents out of their way, and what they moved (0 where the
    /// target cannot tell).</summary>
    (int Shrinks, long DataExtents, long TreeBlocks) Relocations => (0, 0, 0);
    /// <summary>`reservoir filesystem du` of one file (read-only: what its extents take and
    /// share); ENOTTY where the target has no such question.</summary>
    Errno DiskUsage(string path);
    /// <summary>`subvolume find-new` of the subvolume whose root is <paramref name="subvolume"/>
    /// from <paramref name="generationsBack"/> generations before its marker (read-only, beside
    /// the writers); the target checks what it gets (in key order, nothing older than asked)
    /// and throws if not. EINVAL for a path that is no subvolume's root; ENOTTY where the
    /// target has no such question.</summary>
    Errno FindNew(string subvolume, int generationsBack);
    Errno Chmod(string path, uint mode);
    Errno SetXattr(string path, string name, byte[] value);
    Errno RemoveXattr(string path, string name);
    Errno ReadDir(string path);
    Errno Readlink(string path, out string target);
    /// <summary>The whole file (end checks).</summary>
    byte[] ReadAll(string path);
    bool DirectoryExists(string path);
    /// <summary>Target-specific checks of one file after an operation (--check-each); null when fine.</summary>
    string? CheckFile(string path);
    /// <summary>Target-specific checks at the end (the engine's reservation ledger).</summary>
    IEnumerable<string> Verify();
}

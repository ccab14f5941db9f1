using Reservoir.Format;

namespace Reservoir.Api.Send;

/// <summary>
/// Where a receive applies a stream: a directory of an unmounted image (the embedded API) or of a
/// mounted Reservoir (the kernel). After <see cref="BeginSubvolume"/>, every path is relative to
/// the new subvolume's root ("" is the root). Each call fails with an <see cref="Reservoir.Common.FsException"/>
/// carrying the errno and the path.
/// </summary>
public interface IReceiveTarget
{
    /// <summary>Creates subvolume <paramref name="name"/> in the destination directory; it must not exist.</summary>
    void BeginSubvolume(string name);

    /// <summary>An incremental stream: makes <paramref name="name"/> in the destination directory a
    /// writable snapshot of <paramref name="parent"/> (as <see cref="FindSubvolume"/> named it),
    /// to which the stream's changes then apply.</summary>
    void BeginSnapshot(string name, string parent);

    /// <summary>The subvolume a stream names as its parent or a clone source, by the sending
    /// side's uuid and ctransid: a read-only one received from it (received uuid equal, as btrfs
    /// receive finds it), or, when the stream comes back to where it was sent from, the
    /// subvolume itself (uuid and generation equal); null if there is none. The answer is what <see cref="BeginSnapshot"/>
    /// and <see cref="Clone"/> take.</summary>
    string? FindSubvolume(Guid uuid, ulong ctransid);

    void Mkfile(string path);
    void Mkdir(string path);
    void Mknod(string path, uint mode, ulong rdev);
    void Symlink(string path, string target);
    void Rename(string from, string to);
    void Link(string path, string existing);
    void Unlink(string path);
    void Rmdir(string path);
    void SetXattr(string path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value);
    void RemoveXattr(string path, ReadOnlySpan<byte> name);
    void Write(string path, long offset, ReadOnlySpan<byte> data);
    /// <summary>Shares <paramref name="length"/> bytes of <paramref name="source"/> at
    /// <paramref name="path"/>, as FICLONERANGE (or copies them). <paramref name="source"/> is a
    /// path in the subvolume being received when <paramref name="sourceSubvolume"/> is null, else in
    /// that subvolume (as <see cref="FindSubvolume"/> named it).</summary>
    void Clone(string path, long offset, long length, string? sourceSubvolume, string source, long sourceOffset);
    /// <summary>fallocate(2) of the stream's FALLOCATE (version 2): <paramref name="mode"/> is
    /// its FALLOC_FL_* bits (KEEP_SIZE 1, PUNCH_HOLE 2 are what btrfs sends).</summary>
    void Fallocate(string path, int mode, long offset, long length);
    void Truncate(string path, long size);
    void Chmod(string path, uint mode);
    void Chown(string path, uint uid, uint gid);
    void Utimes(string path, Timespec atime, Timespec mtime);

    /// <summary>The stream is whole: close what is open, record the sent subvolume's uuid and
    /// ctransid as the received uuid and stransid, and make the subvolume read-only, as `btrfs
    /// receive` leaves it.</summary>
    void EndSubvolume(Guid receivedUuid, ulong stransid);

    /// <summary>A stream ended early or failed: close what is open and remove the partial
    /// subvolume, so that nothing half received is left looking like a snapshot.</summary>
    void Abandon();
}

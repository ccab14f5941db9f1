using System.Buffers;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>Counts an open handle: an unlinked inode lives until its last handle closes.</summary>
    public Errno Open(ulong ino, out InodeAttr attr) => Open(ino, false, out attr);

    /// <summary>Opens an inode; <paramref name="forWrite"/> (O_WRONLY, O_RDWR) answers EROFS
    /// at open, as btrfs's permission check does, when the inode's subvolume or the whole
    /// filesystem is read-only: a write refused only later (at write, or at writeback of a
    /// mapped page, where the kernel keeps the error for the next syncfs) surprises programs.</summary>
    public Errno Open(ulong ino, bool forWrite, out InodeAttr attr)
    {
        attr = default;
        var e = forWrite ? GetWritable(ino, out var inode) : Get(ino, out inode);
        if (e != Errno.OK) return e;
        if (forWrite && Fs.ReadOnly) { Put(inode); return Errno.EROFS; }
        using (inode.Lock.Read())
        {
            if (inode.Deleted) { Put(inode); return Errno.ENOENT; }
            attr = Attr(inode);
        }
        // Keeps the reference taken by Get until Release; refused if the subvolume was deleted
        // since Get (its deletion saw no open file).
        if (!inode.Subvol.TryOpen(inode)) { Put(inode); attr = default; return Errno.ENOENT; }
        return Errno.OK;
    }

    public Errno Release(ulong ino)
    {
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                int left = inode.Subvol.Close(inode);
                Put(inode); // the reference Open kept
                // A deleted subvolume's tree waits for its files' last close (and once dead, a
                // subvolume gets no new opens, so a count reaching 0 stays there).
                if (left == 0 && inode.Subvol.Dead) WakeCleaner();
                if (left == 0)
                {
                    using var lk = inode.Lock.Write();
                    if (inode.Item.Nlink == 0 && inode.Orphaned && inode.Subvol.OpenCountOf(inode) == 0) EvictLocked(inode);
                }
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    public Errno Read(ulong ino, ulong offset, Span<byte> buffer, out int read) => ReadCore(ino, offset, buffer, out read, direct: false);

    /// <summary>O_DIRECT read: bypasses the page cache after writing back the range.</summary>
    public Errno ReadDirect(ulong ino, ulong offset, Span<byte> buffer, out int read) => ReadCore(ino, offset, buffer, out read, direct: true);

    private Errno ReadCore(ulong ino, ulong offset, Span<byte> buffer, out int read, bool direct)
    {
        read = 0;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            bool atimeDue;
            using (inode.Lock.Read())
            {
                if (inode.IsDir) return Errno.EISDIR;
                if (!inode.IsReg) return Errno.EINVAL;
                if (inode.Deleted) return Errno.ENOENT;
                ulong size = inode.Item.FileSize;
                if (offset >= size || buffer.Length == 0) return Errno.OK;
                int n = (int)Math.Min((ulong)buffer.Length, size - offset);
                try
                {
                    if (direct) Data.DirectRead(inode, offset, buffer[..n]);
                    else Data.BufferedRead(inode, offset, buffer[..n]);
                }
                catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException) { return Guard(ino, () => throw ex); }
                read = n;
                atimeDue = AtimeDue(inode);
            }
            // After the shared lock is let go: the update takes the inode's lock exclusively.
            if (atimeDue) TouchAtime(inode, ino);
            return Errno.OK;
        }
        finally { Put(inode); }
    }

    /// <summary>A buffered write: into the page cache with delayed allocation. Returns a short
    /// count with OK when space or quota ran out after some bytes, EDQUOT/ENOSPC when at once.</summary>
    public Errno Write(ulong ino, ulong offset, ReadOnlySpan<byte> data, out int written) => WriteCore(ino, offset, data, out written, direct: false);

    /// <summary>An O_DIRECT write (see DataEngine.DirectWrite).</summary>
    public Errno WriteDirect(ulong ino, ulong offset, ReadOnlySpan<byte> data, out int written) => WriteCore(ino, offset, data, out written, direct: true);

    private Errno WriteCore(ulong ino, ulong offset, ReadOnlySpan<byte> data, out int written, bool direct)
    {
        written = 0;
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            using var lk = inode.Lock.Write();
            if (inode.IsDir) return Errno.EISDIR;
            if (!inode.IsReg) return Errno.EINVAL;
            if (inode.Deleted) return Errno.ENOENT;
            if (Fs.ReadOnly) return Errno.EROFS;
            if (Fs.FailedReason != null) return Errno.EIO;
            if (offset + (ulong)data.Length > MaxFileSize || offset + (ulong)data.Length < offset) return Errno.EFBIG;
            if (data.Length == 0) return Errno.OK;
            try { return direct ? Data.DirectWrite(inode, offset, data, out written) : Data.BufferedWrite(inode, offset, data, out written); }
            catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException) { return Guard(ino, () => throw ex); }
        }
        finally { Put(inode); }
    }

    /// <summary>
    /// fsync and fdatasync: the file's dirty pages are written back and their ordered extents
    /// finished, then the transaction commits (a full commit: every change, not only this
    /// file's, becomes durable; correct, and its cost is measured). A writeback error since the
    /// last fsync is reported here once, as EIO.
    /// </summary>
    /// <summary>Up to this many dirty pages (1 MiB), fsync finishes the ordered extents it
    /// writes on its own thread; more are overlapped with the next IO by the completion workers.</summary>
    private const int InlineFinishPages = 256;

    public Errno Fsync(ulong ino, bool dataOnly = false)
    {
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                // A file of a deleted subvolume (open when it died): its data goes with the
                // tree after the last close, so there is nothing to make durable (and no log
                // record is written for a tree the next mount drops).
                if (Fs.ReadOnly || inode.Subvol.Dead) return Errno.OK;
                if (inode.IsReg && !inode.Deleted)
                {
                    var m = Data.MappingOf(inode);
                    // A few dirty pages (an append, a record): this thread finishes their ordered
                    // extents itself (it holds nothing and would only wait for them).
                    bool small;
                    using (m.State.Lock()) small = m.DirtyPages.Count <= InlineFinishPages;
                    Data.Writeback(m, 0, ulong.MaxValue, wait: true, finishInline: small);
                    Data.WaitOrdered(m, 0, ulong.MaxValue);
                    Data.PersistInode(inode);
                    bool failed;
                    using (m.State.Lock()) { failed = m.WriteError; m.WriteError = false; }
                    // The fsync log when the file's changes since the commit allow it (one
                    // block and one flush), a commit otherwise. Under the inode's read lock:
                    // no name, xattr or truncate of it is half made while its record is read.
                    bool logged;
                    using (inode.Lock.Read()) logged = !failed && !inode.Deleted && Fs.TryLogFsync(inode.Subvol.Tree, inode.Ino, (spans, transid) => InodeLog.Build(Fs, inode.Subvol.Tree, inode.Ino, spans, transid));
                    if (!logged) Fs.Commit();
                    if (failed) return Errno.EIO;
                    return Fs.FailedReason != null ? Errno.EIO : Errno.OK;
                }
                Fs.Commit();
                // A directory's (or any non-file's) fsync is a commit, which a failed
                // filesystem does not make: EIO, not a durability it does not have.
                return Fs.FailedReason != null ? Errno.EIO : Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    /// <summary>fallocate(2) on an open file.</summary>
    public Errno Fallocate(ulong ino, Data.FallocateMode mode, ulong offset, ulong length)
    {
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Write();
                if (inode.IsDir) return Errno.EISDIR;
                if (!inode.IsReg) return Errno.ENODEV;
                if (inode.Deleted) return Errno.ENOENT;
                if (Fs.ReadOnly) return Errno.EROFS;
                return Data.Fallocate(inode, mode, offset, length);
            });
        }
        finally { Put(inode); }
    }

    /// <summary>lseek SEEK_DATA (<paramref name="data"/>) or SEEK_HOLE.</summary>
    public Errno Seek(ulong ino, ulong offset, bool data, out ulong result)
    {
        result = 0;
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        ulong r = 0;
        try
        {
            e = Guard(ino, () =>
            {
                using var lk = inode.Lock.Read();
                if (!inode.IsReg) return Errno.EINVAL;
                return Data.SeekDataHole(inode, offset, data, out r);
            });
        }
        finally { Put(inode); }
        result = r;
        return e;
    }

    /// <summary>
    /// A store into a shared writable mapping of the file: for each page touched, the page-fault
    /// path (page_mkwrite: page lock only, no inode lock) makes the page dirty and reserved, then
    /// the bytes are stored into it. Stores cannot extend the file (SIGBUS beyond EOF: EFAULT).
    /// </summary>
    public Errno MappedWrite(ulong ino, ulong offset, ReadOnlySpan<byte> data) => MappedWrite(ino, offset, data, out _);

    /// <summary>As <see cref="MappedWrite(ulong, ulong, ReadOnlySpan{byte})"/>, telling how many
    /// bytes were stored before an error (stores go page by page, as faults do).</summary>
    public Errno MappedWrite(ulong ino, ulong offset, ReadOnlySpan<byte> data, out int written)
    {
        written = 0;
        int stored = 0;
        var e = GetWritable(ino, out var inode);
        if (e != Errno.OK) return e;
        var copy = data.ToArray();
        try
        {
            var r = Guard(ino, () =>
            {
                if (!inode.IsReg) return Errno.EINVAL;
                if (Fs.ReadOnly) return Errno.EROFS;
                if (offset + (ulong)copy.Length > inode.Item.FileSize) return Errno.EFAULT;
                ulong bs = (ulong)Fs.BlockSize;
                int done = 0;
                while (done < copy.Length)
                {
                    ulong pos = offset + (ulong)done;
                    int within = (int)(pos % bs);
                    int n = Math.Min(copy.Length - done, (int)bs - within);
                    int from = done;
                    var pe = Data.PageMkwrite(inode, (long)(pos / bs), page => copy.AsSpan(from, n).CopyTo(page[within..]));
                    if (pe != Errno.OK) return pe;
                    done += n;
                    stored = done;
                }
                return Errno.OK;
            });
            written = stored;
            return r;
        }
        finally { Put(inode); }
    }
}

using System.Text;
using Reservoir.Common;

namespace Reservoir.Api.Send;

/// <summary>What a receive made: per subvolume, its name and the identity the stream gave it;
/// <paramref name="Errors"/> commands that failed and were passed over (`receive -E`).</summary>
public readonly record struct ReceivedSubvolume(string Name, Guid Uuid, ulong Ctransid, long Commands, int Errors = 0);

/// <summary>
/// Applies send streams to a <see cref="IReceiveTarget"/>. Several streams may follow one another
/// on the input (`cat a b | reservoir receive`, or one send of several subvolumes), each from its
/// header to its END, and one stream may carry several subvolumes (`btrfs send -e`). A stream that is damaged, truncated or asks for what cannot be done stops
/// the receive with an <see cref="FsException"/> naming the command, and the partial subvolume is
/// removed (subvolumes received before it stay). With a larger error limit (`receive -E`, as
/// btrfs receive's), a command the target cannot apply is reported and passed over until the
/// limit is reached; the stream's framing stays whole (each command is read whole before it is
/// applied), so the next command is read as the sender wrote it. A damaged stream still stops.
/// </summary>
public static class Receiver
{
    /// <summary>What a receive says as it begins each subvolume, before its name.</summary>
    private const string AtSnapshot = "At snapshot ", AtSubvol = "At subvol ";

    /// <summary>The subvolume name in a line <see cref="Run"/> said, or null.</summary>
    public static string? NameIn(string line) =>
        line.StartsWith(AtSnapshot, StringComparison.Ordinal) ? line[AtSnapshot.Length..]
        : line.StartsWith(AtSubvol, StringComparison.Ordinal) ? line[AtSubvol.Length..] : null;

    /// <param name="stopAtEnd">`receive -e`: stop at the first END instead of reading on to the
    /// end of the input (for a sender that keeps its end open)</param>
    /// <param name="detail">`receive -v`: <paramref name="trace"/> also gets what each stream
    /// names (uuid, transaction, an increment's parent), in btrfs receive -v's words</param>
    /// <param name="maxErrors">`receive -E`: stop at this many failed commands (1, the
    /// default: at the first; 0: never), reporting each passed over to <paramref name="error"/></param>
    public static List<ReceivedSubvolume> Run(Stream input, IReceiveTarget target, Action<string>? trace = null, bool stopAtEnd = false, bool detail = false, int maxErrors = 1, Action<string>? error = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxErrors);
        var done = new List<ReceivedSubvolume>();
        while (true)
        {
            var r = SendStreamReader.TryOpen(input);
            if (r == null) return done;
            if (!r.Next()) throw r.Error("the stream ends before its first command");
            if (r.Command is not (SendCommand.Subvol or SendCommand.Snapshot)) throw r.Error($"the stream starts with {r.Command}, not SUBVOL or SNAPSHOT");
            // One stream may carry several subvolumes, each begun by its SUBVOL or SNAPSHOT and
            // the last ended by the END (`btrfs send -e a b`, and `reservoir send -e`).
            while (One(r, target, trace, detail, done, maxErrors, error)) { }
            if (stopAtEnd) return done;
        }
    }

    /// <summary>Receives the subvolume whose SUBVOL or SNAPSHOT command <paramref name="r"/> has
    /// just read, up to the END (false) or the next subvolume's command (true).</summary>
    private static bool One(SendStreamReader r, IReceiveTarget target, Action<string>? trace, bool detail, List<ReceivedSubvolume> done, int maxErrors, Action<string>? error)
    {
        string name = r.Path(SendAttr.Path);
        if (!SendStreamFormat.IsSubvolumeName(name)) throw r.Error($"'{name}' is not a subvolume name");
        var found = new Dictionary<(Guid, ulong), string?>(); // the stream's parent and clone sources, looked up once each
        string? Find(Guid u, ulong t) => found.TryGetValue((u, t), out var at) ? at : found[(u, t)] = target.FindSubvolume(u, t);
        var uuid = r.Uuid(SendAttr.Uuid);
        ulong ctransid = r.U64(SendAttr.Ctransid);
        long first = r.CommandsRead;
        if (r.Command == SendCommand.Snapshot)
        {
            // An incremental stream: its changes apply to a snapshot of the subvolume it was
            // sent against, which must be here unchanged (received from it, read-only).
            var parentUuid = r.Uuid(SendAttr.CloneUuid);
            ulong parentCtransid = r.U64(SendAttr.CloneCtransid);
            var parent = Find(parentUuid, parentCtransid)
                ?? throw new FsException(Errno.ENOENT, $"receive: '{name}' is sent against subvolume {UuidText.Of(parentUuid)} at transaction {parentCtransid}, which is not here (receive that first)");
            target.BeginSnapshot(name, parent);
            trace?.Invoke(AtSnapshot + name);
            if (detail) trace?.Invoke($"receiving snapshot {name} uuid={UuidText.Of(uuid)}, ctransid={ctransid} parent_uuid={UuidText.Of(parentUuid)}, parent_ctransid={parentCtransid}");
        }
        else
        {
            target.BeginSubvolume(name);
            trace?.Invoke(AtSubvol + name);
            if (detail) trace?.Invoke($"receiving subvol {name} uuid={UuidText.Of(uuid)}, stransid={ctransid}");
        }
        var batch = new WriteBatch(target);
        bool next;
        int errors = 0;
        // The gathered writes fail, if they do, when a later command flushes them: theirs is
        // the failure then, not that command's.
        void FlushBatch()
        {
            try { batch.Flush(); }
            catch (Exception ex) when (PassOver(ex)) { batch.Drop(); }
        }
        // A command that failed (read whole, so the stream goes on at the next one): passed
        // over while under the limit, said as btrfs receive says it.
        bool PassOver(Exception ex)
        {
            if (ex is not IOException and not UnauthorizedAccessException) return false;
            errors++;
            if (maxErrors > 0 && errors >= maxErrors) return false;
            error?.Invoke($"{name}: {ex.Message}");
            return true;
        }
        try
        {
            while (true)
            {
                if (!r.Next()) throw r.Error("the stream ends before its END command");
                try
                {
                    if (r.Command == SendCommand.Write)
                    {
                        // This command's attributes first: one that is malformed is its own
                        // failure, and leaves the writes gathered before it alone.
                        string path = r.Path(SendAttr.Path);
                        long offset = Offset(r, SendAttr.FileOffset);
                        var data = r.Bytes(SendAttr.Data);
                        if (!batch.Extends(path, offset, data.Length)) FlushBatch();
                        if (batch.TryAdd(path, offset, data)) continue;
                    }
                    else FlushBatch();
                    if (r.Command is SendCommand.End or SendCommand.Subvol or SendCommand.Snapshot) break;
                    Apply(r, target, uuid, Find);
                }
                catch (Exception ex) when (PassOver(ex)) { }
            }
            next = r.Command != SendCommand.End;
            target.EndSubvolume(uuid, ctransid);
        }
        catch (Exception failed)
        {
            // The first failure is the one to report; a partly received subvolume that could
            // not be removed is said too, so that the user knows to delete it.
            string? left = null;
            try { target.Abandon(); } catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { left = ex.Message; }
            if (left == null) throw;
            if (failed is FsException fe) throw new FsException(fe.Errno, $"{fe.Reason}; {left}", fe);
            throw new IOException($"{failed.Message}; {left}", failed);
        }
        done.Add(new ReceivedSubvolume(name, uuid, ctransid, r.CommandsRead - first + (next ? 0 : 1), errors));
        return next;
    }

    private static void Apply(SendStreamReader r, IReceiveTarget t, Guid subvolume, Func<Guid, ulong, string?> find)
    {
        switch (r.Command)
        {
            case SendCommand.Mkfile: t.Mkfile(r.Path(SendAttr.Path)); break;
            case SendCommand.Mkdir: t.Mkdir(r.Path(SendAttr.Path)); break;
            case SendCommand.Mknod:
            case SendCommand.Mkfifo:
            case SendCommand.Mksock:
            {
                uint type = r.Command switch { SendCommand.Mkfifo => 0x1000u, SendCommand.Mksock => 0xC000u, _ => 0u };
                uint mode = (uint)r.U64(SendAttr.Mode);
                if (type != 0) mode = (mode & 0xFFF) | type;
                else if ((mode & 0xF000) is not (0x2000 or 0x6000)) throw r.Error($"MKNOD of mode {Convert.ToString(mode, 8)}, not a device");
                t.Mknod(r.Path(SendAttr.Path), mode, r.Has(SendAttr.Rdev) ? r.U64(SendAttr.Rdev) : 0);
                break;
            }
            case SendCommand.Symlink: t.Symlink(r.Path(SendAttr.Path), Encoding.UTF8.GetString(r.Bytes(SendAttr.PathLink))); break;
            case SendCommand.Rename: t.Rename(r.Path(SendAttr.Path), r.Path(SendAttr.PathTo)); break;
            case SendCommand.Link: t.Link(r.Path(SendAttr.Path), r.Path(SendAttr.PathLink)); break;
            case SendCommand.Unlink: t.Unlink(r.Path(SendAttr.Path)); break;
            case SendCommand.Rmdir: t.Rmdir(r.Path(SendAttr.Path)); break;
            case SendCommand.SetXattr:
                // btrfs's properties travel as attributes named btrfs.* (btrfs.compression, set by
                // `btrfs property set … compression`): they say how btrfs should store data, which
                // a Reservoir extent never is (compressed), and no other filesystem takes the name.
                if (r.Bytes(SendAttr.XattrName).StartsWith("btrfs."u8)) break;
                t.SetXattr(r.Path(SendAttr.Path), r.Bytes(SendAttr.XattrName), r.Bytes(SendAttr.XattrData));
                break;
            case SendCommand.RemoveXattr: t.RemoveXattr(r.Path(SendAttr.Path), r.Bytes(SendAttr.XattrName)); break;
            case SendCommand.Write: t.Write(r.Path(SendAttr.Path), Offset(r, SendAttr.FileOffset), r.Bytes(SendAttr.Data)); break;
            case SendCommand.Clone:
            {
                // From the subvolume being received (its uuid is the stream's own), or from
                // another one the receiving side has: the parent of an incremental stream, or a
                // clone source given to btrfs send -c, found as the parent is.
                var cloneUuid = r.Uuid(SendAttr.CloneUuid);
                string? from = null;
                if (cloneUuid != subvolume)
                {
                    ulong cloneCtransid = r.U64(SendAttr.CloneCtransid);
                    from = find(cloneUuid, cloneCtransid)
                        ?? throw new FsException(Errno.ENOENT, $"receive: '{r.Path(SendAttr.Path)}' clones from subvolume {UuidText.Of(cloneUuid)} at transaction {cloneCtransid}, which is not here");
                }
                t.Clone(r.Path(SendAttr.Path), Offset(r, SendAttr.FileOffset), Offset(r, SendAttr.CloneLen),
                    from, r.Path(SendAttr.ClonePath), Offset(r, SendAttr.CloneOffset));
                break;
            }
            case SendCommand.Truncate: t.Truncate(r.Path(SendAttr.Path), Offset(r, SendAttr.Size)); break;
            case SendCommand.Chmod: t.Chmod(r.Path(SendAttr.Path), (uint)r.U64(SendAttr.Mode) & 0xFFF); break;
            case SendCommand.Chown: t.Chown(r.Path(SendAttr.Path), (uint)r.U64(SendAttr.Uid), (uint)r.U64(SendAttr.Gid)); break;
            case SendCommand.Utimes: t.Utimes(r.Path(SendAttr.Path), r.Time(SendAttr.Atime), r.Time(SendAttr.Mtime)); break;
            case SendCommand.UpdateExtent: break; // only in --no-data streams: nothing to write
            case SendCommand.EncodedWrite: EncodedWrite(r, t); break;
            case SendCommand.Fallocate:
            {
                // What btrfs sends: preallocation (0, or KEEP_SIZE past the end) and punched
                // holes (PUNCH_HOLE | KEEP_SIZE).
                ulong mode = r.Number(SendAttr.FallocateMode);
                if ((mode & ~3UL) != 0 || mode == 2) throw r.Error($"FALLOCATE of mode {mode}");
                t.Fallocate(r.Path(SendAttr.Path), (int)mode, Offset(r, SendAttr.FileOffset), Offset(r, SendAttr.Size));
                break;
            }
            // An inode's flags (chattr): btrfs receive leaves them unset too, for now.
            case SendCommand.Fileattr: break;
            case SendCommand.EnableVerity:
                throw new FsException(Errno.EOPNOTSUPP, $"receive: '{r.Path(SendAttr.Path)}' asks for fs-verity, which Reservoir does not have");
            default: throw r.Error($"{r.Command} inside a subvolume's stream");
        }
    }

    /// <summary>
    /// Consecutive WRITEs of one file at consecutive offsets (how every send writes a file: 48 KiB
    /// a command) joined into writes of up to 1 MiB, so that a receive through a mount makes a
    /// twentieth of the write requests. Flushed before any other command, which may read or
    /// change the file.
    /// </summary>
    private sealed class WriteBatch(IReceiveTarget target)
    {
        private const int Limit = 1 << 20;
        private readonly byte[] _buf = new byte[Limit];
        private string? _path;
        private long _offset;
        private int _length;

        /// <summary>True when a write of <paramref name="length"/> bytes at
        /// <paramref name="offset"/> of <paramref name="path"/> joins what is gathered.</summary>
        public bool Extends(string path, long offset, int length) =>
            _length == 0 || (_path == path && offset == _offset + _length && _length + length <= Limit);

        /// <summary>Gathers the write, if it <see cref="Extends"/> what is gathered (the caller
        /// flushes first otherwise) and is not larger than a batch.</summary>
        public bool TryAdd(string path, long offset, ReadOnlySpan<byte> data)
        {
            if (!Extends(path, offset, data.Length) || data.Length > Limit) return false;
            if (_length == 0)
            {
                _path = path;
                _offset = offset;
            }
            data.CopyTo(_buf.AsSpan(_length));
            _length += data.Length;
            return true;
        }

        public void Flush()
        {
            if (_path != null && _length > 0) target.Write(_path, _offset, _buf.AsSpan(0, _length));
            Drop();
        }

        /// <summary>Forgets what is gathered (after its write failed and was passed over).</summary>
        public void Drop()
        {
            _path = null;
            _length = 0;
        }
    }

    /// <summary>An ENCODED_WRITE (version 2): one compressed extent, decoded, of which the file
    /// takes <c>unencoded_file_len</c> bytes from <c>unencoded_offset</c> at its offset.</summary>
    private static void EncodedWrite(SendStreamReader r, IReceiveTarget t)
    {
        // No ENCRYPTION attribute means none, as btrfs receive reads it (a stream from the
        // kernel's btrfs through the mount once came without it).
        if (r.Has(SendAttr.Encryption) && r.Number(SendAttr.Encryption) != 0) throw r.Error("ENCODED_WRITE of encrypted data");
        ulong fileLen = r.U64(SendAttr.UnencodedFileLen), len = r.U64(SendAttr.UnencodedLen), at = r.U64(SendAttr.UnencodedOffset);
        if (len > EncodedExtent.MaxUnencoded || at > len || fileLen > len - at)
            throw r.Error($"ENCODED_WRITE of {fileLen} bytes at {at} of an extent of {len}");
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(EncodedExtent.MaxUnencoded);
        try
        {
            EncodedExtent.Decode((uint)r.Number(SendAttr.Compression), r.Bytes(SendAttr.Data), (int)len, buf, what => r.Error("ENCODED_WRITE: " + what));
            t.Write(r.Path(SendAttr.Path), Offset(r, SendAttr.FileOffset), buf.AsSpan((int)at, (int)fileLen));
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
    }

    private static long Offset(SendStreamReader r, SendAttr a)
    {
        ulong v = r.U64(a);
        if (v > long.MaxValue) throw r.Error($"{r.Command}: {a} {v} is out of range");
        return (long)v;
    }
}

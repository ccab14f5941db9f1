using System.Buffers;
using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The fsync log (SPEC.md §9; btrfs's log tree and ext4's fast commit do the same job): an
/// fsync of a file whose only changes since the last commit are to its data, size, times and
/// mode writes one block holding the file's inode item and the extent items that changed,
/// and flushes once, instead of committing every tree. The commit that follows supersedes the
/// log; a mount after a power cut replays it (<see cref="ReplayLog"/>).
///
/// All chain state is guarded by the commit mutex: a log write and a commit never overlap, so
/// a record always extends the chain of the commit the running transaction follows.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>Where the next log block goes (claimed), 0 while there is no chain: the mounted
    /// superblock had none, so the first fsync commits and the commit starts one.</summary>
    private ulong _logNext;
    private ulong _logSeq;
    /// <summary>The generation of the commit the chain follows (written in every block).</summary>
    private ulong _logGeneration;
    /// <summary>Every block the chain holds, the claimed next one included; released (pinned)
    /// by the commit that supersedes them.</summary>
    private readonly List<ulong> _logBlocks = new();

    private bool LogEnabled => Options.FsyncLog && !ReadOnly;

    /// <summary>
    /// Makes the file durable through the log if it can: the inode existed at the last commit,
    /// nothing the log does not carry changed it since (<see cref="Transaction.BlockLog"/>),
    /// its record (made by <paramref name="build"/> from the spans its ordered extents changed,
    /// or null when it cannot be logged) fits a block, and metadata space has room for the next
    /// block. Returns false when the caller must commit instead. The caller has written back
    /// the file and waited for its ordered extents and holds the inode's lock (read), so the
    /// inode item and extents read by <paramref name="build"/> are a state the file had, with
    /// no name, xattr or truncate of it half made.
    /// </summary>
    public bool TryLogFsync(BTree tree, ulong ino, Func<List<(ulong Start, ulong End)>, ulong, LogInodeRecord?> build)
    {
        if (!LogEnabled || FailedReason != null) return false;
        using var serial = _commitMutex.Lock();
        var tx = Running;
        if (_logNext == 0 || tx.IsLogBlocked(tree.Id, ino)) return false;
        var spans = tx.TakeLogSpans(tree.Id, ino);
        try
        {
            // No record (too big, a new inode) or no room: the commit the caller makes next
            // carries everything, the spans taken included.
            var rec = build(spans, tx.Transid);
            if (rec == null || LogBlock.HeaderSize + rec.EncodedSize > NodeSize) return false;
            if (!WriteLogBlock(rec)) return false;
            Stats.FsyncLogWrites++;
            return true;
        }
        catch
        {
            // The spans taken are in no durable record: the next fsync must commit.
            tx.BlockLog(tree.Id, ino);
            throw;
        }
    }

    /// <summary>Writes one block of the chain at the claimed address, naming the next one,
    /// and flushes: data written back before it and the block reach the device together,
    /// and replay checks the data against the logged checksums.</summary>
    private bool WriteLogBlock(LogInodeRecord rec)
    {
        int length = LogBlock.HeaderSize + rec.EncodedSize;
        int written = (int)Units.AlignUp((ulong)length, (ulong)BlockSize);
        var buf = ArrayPool<byte>.Shared.Rent(written);
        try
        {
            var s = buf.AsSpan(0, written);
            s.Clear();
            rec.Write(s[LogBlock.HeaderSize..]);
            if (!Space.TryClaimLogBlock(out ulong next)) return false;
            _logBlocks.Add(next);
            LogBlock.WriteHeader(s, Fsid, _logGeneration, _logSeq, next, length, 1);
            Device.Write(_logNext, s);
            Device.Flush();
            _logNext = next;
            _logSeq++;
            return true;
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    /// <summary>Part of a commit, before its superblock is written (caller holds the commit
    /// mutex): the old chain's blocks are freed once the commit is durable, and the superblock
    /// gets a fresh chain start when the log is on and metadata space has room.</summary>
    private void StartNextLog(Superblock sb)
    {
        DropLog(sb, pin: true);
        if (!LogEnabled || Options.ReadOnly) return;
        if (!Space.TryClaimLogBlock(out _logNext)) return; // short of metadata space: no log
        _logBlocks.Add(_logNext);
        _logGeneration = sb.Generation;
        sb.LogStart = _logNext;
        sb.Incompat |= Features.IncompatFsyncLog;
    }

    /// <summary>Ends the chain: its blocks are released (pinned until the commit that
    /// supersedes them is durable, or at once when nothing can need them any more) and
    /// <paramref name="sb"/> names no log. Caller holds the commit mutex.</summary>
    private void DropLog(Superblock sb, bool pin)
    {
        Space.ReleaseLogBlocks(_logBlocks, pin);
        _logBlocks.Clear();
        _logNext = 0;
        _logSeq = 0;
        sb.LogStart = 0;
        sb.Incompat &= ~Features.IncompatFsyncLog;
    }
}

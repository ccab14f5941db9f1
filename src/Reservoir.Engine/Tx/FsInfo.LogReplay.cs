using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// Replay of the fsync log (SPEC.md §9) at mount, before anything else runs: the chain is read
/// whole from the superblock's log_start, each record's new data is checked against its
/// logged checksums, and the records are applied in order through ordinary transaction
/// handles (so reference counts, checksums and quota accounting come out as if the writes had
/// been committed), then committed. A chain ends at the first block that is not the next one
/// of this log (the claimed-but-unwritten next block, or one the power cut tore), and at the
/// first record whose data did not reach the device whole: its fsync never returned.
/// </summary>
internal sealed partial class FsInfo
{
    /// <summary>Replays the log of the mounted commit, if it has one, and commits (which starts
    /// a fresh log); returns how many records were applied. <paramref name="apply"/> makes one
    /// record's changes in a handle (the inode layer knows how). Runs first at mount, with the
    /// filesystem writable for the duration even on a read-only mount when the device can be
    /// written, as ext4 replays its journal: what fsync made durable is part of the filesystem.
    /// </summary>
    internal int ReplayLog(Func<LogInodeRecord, bool> apply)
    {
        if (Super.LogStart == 0) return 0;
        if (Device.ReadOnly)
        {
            Warn($"fsync log after commit {Super.Generation} not replayed: the device is read-only (files show their state at that commit)");
            return 0;
        }
        bool ro = ReadOnly;
        ReadOnly = false;
        try
        {
            var records = new List<LogInodeRecord>();
            int blocks = 0;
            foreach (var (block, recs) in ReadLogChain(Device, Super, Warn))
            {
                // Kept from reuse until the replay's commit is durable: a power cut during that
                // commit replays this log again at the next mount.
                if (!Space.ClaimLogBlockAt(block)) { Warn($"fsync log: block {blocks} at {block} lies in space the commit uses; the log ends before it"); break; }
                _logBlocks.Add(block);
                records.AddRange(recs);
                blocks++;
            }
            int applied = 0;
            var claimed = new HashSet<ulong>();
            foreach (var rec in records)
            {
                string where = $"record {applied + 1} of {records.Count} (inode {rec.Ino} of tree {rec.Tree})";
                if (!Plausible(rec, out string why))
                {
                    Warn($"fsync log: {where} and the rest are not replayed: {why}");
                    break;
                }
                if (!DataLanded(rec, out why))
                {
                    Warn($"fsync log: {where} is not replayed: {why}; the power was cut during its fsync");
                    break;
                }
                if (!ClaimNewExtents(rec, claimed, out why))
                {
                    Warn($"fsync log: {where} and the rest are not replayed: {why}");
                    break;
                }
                if (!apply(rec))
                {
                    Warn($"fsync log: {where} and the rest are not replayed: the inode is not in the commit");
                    break;
                }
                applied++;
            }
            // Extents taken back for records not applied go back to free space.
            foreach (var (bytenr, len) in NewInReplay) Space.FreeReserved(bytenr, len);
            NewInReplay.Clear();
            Stats.LogRecordsReplayed += applied;
            if (applied > 0) Warn($"fsync log: replayed {applied} record(s) from {blocks} block(s) after commit {Super.Generation}");
            ForceCommit = true;
            Commit();
            return applied;
        }
        finally { ReadOnly = ro; }
    }

    /// <summary>Takes back, as allocated, each data extent the record references that the
    /// commit does not have (written after it, so free in it), once. False when one is neither
    /// an extent of the commit nor free space: the record cannot be trusted.</summary>
    private bool ClaimNewExtents(LogInodeRecord rec, HashSet<ulong> claimed, out string why)
    {
        why = "";
        foreach (var (_, fe) in rec.Extents)
        {
            if (fe.DiskBytenr == 0 || claimed.Contains(fe.DiskBytenr)) continue;
            bool committed;
            using (ExtentTree.Lock.Read()) committed = ExtentTree.Get(new Key(fe.DiskBytenr, KeyTypes.ExtentItem, fe.DiskNumBytes)) != null;
            if (committed) continue;
            if (!Space.ClaimData(fe.DiskBytenr, fe.DiskNumBytes))
            {
                why = $"inode {rec.Ino} references data extent [{fe.DiskBytenr}, +{fe.DiskNumBytes}), which is neither an extent of the commit nor free";
                return false;
            }
            claimed.Add(fe.DiskBytenr);
            NewInReplay[fe.DiskBytenr] = fe.DiskNumBytes;
        }
        return true;
    }

    /// <summary>Data extents the replay took back (their first reference creates the
    /// EXTENT_ITEM). Only used during <see cref="ReplayLog"/>.</summary>
    internal Dictionary<ulong, ulong> NewInReplay { get; } = new();

    /// <summary>The blocks of the log after <paramref name="sb"/>'s commit, in order, each with
    /// its records. Never throws on what it reads: a block that is not the next one of this
    /// log ends it (the normal end); <paramref name="note"/> hears of an unreadable block or a
    /// malformed record, which end it too. Replay and fsck both read the chain here.</summary>
    internal static List<(ulong Block, List<LogInodeRecord> Records)> ReadLogChain(IBlockDevice dev, Superblock sb, Action<string>? note)
    {
        var chain = new List<(ulong, List<LogInodeRecord>)>();
        var buf = new byte[sb.NodeSize];
        var seen = new HashSet<ulong>();
        ulong at = sb.LogStart, seq = 0;
        while (at != 0 && seen.Add(at))
        {
            if (at % sb.NodeSize != 0 || at < FormatConstants.ReservedPrefix || at + sb.NodeSize > sb.TotalBytes) break;
            try { dev.Read(at, buf); }
            catch (FsException ex) { note?.Invoke($"fsync log: block {seq} at {at} unreadable ({ex.Message}); the log ends before it"); break; }
            if (!LogBlock.TryRead(buf, sb.Fsid, sb.Generation, seq, out ulong next, out int length, out int count, out _)) break;
            var recs = new List<LogInodeRecord>();
            int off = LogBlock.HeaderSize;
            for (int i = 0; i < count; i++)
            {
                var r = LogInodeRecord.TryRead(buf.AsSpan(off, length - off), out int used, out string why);
                if (r == null) { note?.Invoke($"fsync log: block {seq} at {at} has a malformed record ({why}); the log ends before it"); return chain; }
                recs.Add(r);
                off += used;
            }
            chain.Add((at, recs));
            at = next;
            seq++;
        }
        return chain;
    }

    /// <summary>A record whose block checksummed whole can still be nonsense if the image was
    /// made to be: its spans must be ascending and disjoint, its extent items ascending,
    /// inside its spans, block-aligned, and inside their extents, which lie on the device.
    /// Checked before anything is applied, so a crafted log stops the replay, not the mount.</summary>
    private bool Plausible(LogInodeRecord rec, out string why)
    {
        ulong bs = (ulong)BlockSize;
        ulong prev = 0;
        foreach (var (a, b) in rec.Spans)
        {
            if (a < prev || a >= b) { why = $"span [{a}, {b}) out of order"; return false; }
            prev = b;
        }
        prev = 0;
        foreach (var (pos, fe) in rec.Extents)
        {
            ulong end = pos + fe.NumBytes;
            bool inSpan = rec.Spans.Any(sp => pos >= sp.Start && end <= sp.End);
            bool fits = fe.NumBytes > 0 && end > pos && fe.DiskNumBytes > 0 && fe.Offset <= fe.DiskNumBytes && fe.NumBytes <= fe.DiskNumBytes - fe.Offset
                && (fe.DiskBytenr == 0 || (fe.DiskBytenr % bs == 0 && fe.DiskNumBytes % bs == 0 && fe.DiskBytenr + fe.DiskNumBytes <= Super.TotalBytes && fe.DiskBytenr + fe.DiskNumBytes > fe.DiskBytenr));
            if (pos < prev || !inSpan || !fits || pos % bs != 0) { why = $"extent item at file offset {pos} does not fit its span or its extent"; return false; }
            prev = end;
        }
        why = "";
        return true;
    }

    /// <summary>Whether every block of data written since the commit that the record's extent
    /// items reference holds what its logged checksum says.</summary>
    private bool DataLanded(LogInodeRecord rec, out string why)
    {
        why = "";
        var bs = (ulong)BlockSize;
        var buf = new byte[BlockSize];
        foreach (var (pos, fe) in rec.Extents)
        {
            if (fe.Type != FileExtentType.Regular || fe.DiskBytenr == 0 || fe.Generation <= Super.Generation) continue;
            var sums = rec.Csums.FirstOrDefault(c => c.Bytenr == fe.DiskBytenr).Sums;
            if (sums == null) continue; // a no-checksum (nodatacow) file: nothing to check by
            for (ulong o = fe.Offset / bs * bs; o < fe.Offset + fe.NumBytes; o += bs)
            {
                int i = (int)(o / bs);
                if (i >= sums.Length || o + bs > fe.DiskNumBytes) { why = $"extent {fe.DiskBytenr} has {sums.Length} checksums for {fe.DiskNumBytes} bytes"; return false; }
                try { Device.Read(fe.DiskBytenr + o, buf); }
                catch (FsException ex) { why = $"data block {fe.DiskBytenr + o} unreadable ({ex.Message})"; return false; }
                if (Crc32C.Compute(buf) != sums[i]) { why = $"data block {fe.DiskBytenr + o} (file offset {pos + o - fe.Offset}) does not hold the logged data"; return false; }
            }
        }
        return true;
    }
}

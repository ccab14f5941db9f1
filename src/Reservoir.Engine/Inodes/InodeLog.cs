using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// What an inode's fsync log record holds and how replay applies it (SPEC.md §9); the chain,
/// its blocks and the replay's order live with the transaction machinery (FsInfo.FsyncLog,
/// FsInfo.LogReplay).
/// </summary>
internal static class InodeLog
{
    /// <summary>The record for the inode: its item, and for each span its ordered extents
    /// changed since the last commit (or the last record), widened to whole extent items, the
    /// items covering it and the checksums of the extents written in this transaction. Null
    /// when it cannot be logged: created in this transaction, not a regular file, inline data,
    /// or data in a block group made since the commit.</summary>
    public static LogInodeRecord? Build(FsInfo fs, BTree tree, ulong ino, List<(ulong Start, ulong End)> spans, ulong transid)
    {
        var rec = new LogInodeRecord { Tree = tree.Id, Ino = ino };
        var sumsOf = new SortedSet<ulong>();
        using (tree.Lock.Read())
        {
            var item = tree.Get(DirItems.InodeKey(ino));
            if (item == null || item.Length != InodeItem.Size) return null;
            rec.Item = InodeItem.Read(item);
            if (rec.Item.Generation >= transid || !Mode.IsReg(rec.Item.Mode)) return null;
            foreach (var (s, e) in spans)
            {
                ulong a = s, b = e;
                foreach (var m in FileExtents.Overlapping(tree, ino, s, e))
                {
                    if (m.Fe.Type == FileExtentType.Inline) return null;
                    a = Math.Min(a, m.Pos);
                    b = Math.Max(b, m.End);
                    // An item a previous span was widened to is not repeated.
                    if (rec.Extents.Count == 0 || rec.Extents[^1].Pos < m.Pos) rec.Extents.Add((m.Pos, m.Fe));
                    if (m.Fe.Generation == transid && m.Fe.DiskBytenr != 0)
                    {
                        if (!fs.Space.InCommittedGroup(m.Fe.DiskBytenr, m.Fe.DiskNumBytes)) return null;
                        if (m.Fe.Type == FileExtentType.Regular) sumsOf.Add(m.Fe.DiskBytenr);
                    }
                }
                if (rec.Spans.Count > 0 && a <= rec.Spans[^1].End) rec.Spans[^1] = (rec.Spans[^1].Start, Math.Max(rec.Spans[^1].End, b));
                else rec.Spans.Add((a, b));
            }
        }
        if (sumsOf.Count > 0)
            using (fs.CsumTree.Lock.Read())
                foreach (var bytenr in sumsOf)
                {
                    var d = fs.CsumTree.Get(FileExtents.CsumKey(bytenr));
                    if (d == null) continue; // a no-checksum (nodatacow) file
                    var sums = new uint[d.Length / 4];
                    for (int i = 0; i < sums.Length; i++) sums[i] = BinaryPrimitives.ReadUInt32LittleEndian(d.AsSpan(i * 4));
                    rec.Csums.Add((bytenr, sums));
                }
        return rec;
    }

    /// <summary>Replays the mounted commit's log (FsInfo.ReplayLog) with <see cref="Apply"/>.</summary>
    public static int Replay(FsInfo fs) => fs.ReplayLog(rec => Apply(fs, rec));

    /// <summary>Makes the inode's item, and its extent items in the record's spans, what the
    /// record says, with the reference and checksum changes that implies, in one handle. False,
    /// changing nothing, when the inode is not in the commit (never so for a log this version
    /// wrote: only inodes the commit has are logged).</summary>
    private static bool Apply(FsInfo fs, LogInodeRecord rec)
    {
        var t = fs.FsTree(rec.Tree);
        if (t == null) return false;
        var e = fs.StartDeletion(rec.Extents.Count * 2 + rec.Spans.Count * 3 + rec.Csums.Count + 2, out var h);
        if (e != Errno.OK) throw new FsException(e, "cannot start the log replay's transaction");
        using (h)
        {
            using (t.Lock.Write())
            {
                if (t.Get(DirItems.InodeKey(rec.Ino)) == null) return false;
                long delta = 0;
                foreach (var (a, b) in rec.Spans) FileExtents.Drop(h, t, rec.Ino, a, b, ref delta, logged: true);
                Span<byte> buf = stackalloc byte[FileExtentItem.RegularSize];
                foreach (var (pos, fe) in rec.Extents)
                {
                    fe.Write(buf);
                    t.Put(h, FileExtents.ExtentKey(rec.Ino, pos), buf);
                    if (fe.DiskBytenr == 0) continue;
                    // The first reference to an extent the replay took back creates its item.
                    bool isNew = fs.NewInReplay.Remove(fe.DiskBytenr);
                    h.FileExtentRef(t, fe.DiskBytenr, fe.DiskNumBytes, rec.Ino, pos - fe.Offset, +1, isNew);
                }
                DirItems.PutInode(h, t, rec.Ino, rec.Item);
            }
            if (rec.Csums.Count > 0)
                using (fs.CsumTree.Lock.Write())
                    foreach (var (bytenr, sums) in rec.Csums)
                    {
                        var d = new byte[sums.Length * 4];
                        for (int i = 0; i < sums.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(i * 4), sums[i]);
                        fs.CsumTree.Put(h, FileExtents.CsumKey(bytenr), d);
                    }
        }
        return true;
    }
}

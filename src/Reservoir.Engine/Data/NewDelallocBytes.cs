using Reservoir.Engine.Inodes;

namespace Reservoir.Engine.Data;

internal sealed partial class DataEngine
{
    /// <summary>
    /// Bytes the file's byte count (st_blocks) will gain when what is dirty or being written
    /// reaches its extents: the delalloc ranges and copy-on-write ordered extents not finished
    /// yet, where the file has no extent today (btrfs's new_delalloc_bytes, which its getattr
    /// adds to i_blocks; ext4 adds its reserved delalloc blocks the same way). Without it a
    /// file just written shows 0 blocks until writeback: `du` says 0, and cp (which takes a
    /// file whose blocks fall short of its size for a sparse one, and then reads it instead of
    /// calling copy_file_range) copied it instead of sharing its extents.
    /// Rewritten ranges add nothing: their extents are replaced byte for byte. Caller holds the
    /// inode lock (shared is enough) and no tree lock.
    /// </summary>
    internal ulong NewDelallocBytes(Inode inode, out ulong nbytes)
    {
        var t = inode.Subvol.Tree;
        // Under the tree lock: completion inserts an ordered extent's items and adds to the
        // byte count under its write lock, and leaves the ordered extents only after, so that
        // a range is counted once, either still pending over a hole or in nbytes.
        using var lk = t.Lock.Read();
        nbytes = inode.Item.Nbytes;
        if (Volatile.Read(ref inode.Mapping) is not { } m || !inode.IsReg) return 0;
        List<(ulong Start, ulong End)> pending;
        using (m.State.Lock())
        {
            if (m.Ordered.Count == 0 && m.Ledger.IsEmpty) return 0; // the common case: nothing pending
            pending = m.Ledger.Runs(RangeBits.Delalloc);
            foreach (var oe in m.Ordered.Values)
                if (!oe.Complete && oe.Kind is OrderedKind.Regular or OrderedKind.Direct) pending.Add((oe.FileOffset, oe.End));
        }
        if (pending.Count == 0) return 0;
        // A page dirtied again while its ordered extent is in flight is both: count it once.
        pending.Sort((a, b) => a.Start.CompareTo(b.Start));
        ulong total = 0;
        (ulong s, ulong e) run = pending[0];
        for (int i = 1; i <= pending.Count; i++)
        {
            if (i < pending.Count && pending[i].Start <= run.e) { run.e = Math.Max(run.e, pending[i].End); continue; }
            total += HoleBytes(t, inode.Ino, run.s, run.e);
            if (i < pending.Count) run = pending[i];
        }
        return total;
    }

    /// <summary>Bytes of [start, end) no file extent item covers. Caller holds the tree lock.</summary>
    private static ulong HoleBytes(Tree.BTree t, ulong ino, ulong start, ulong end)
    {
        ulong holes = 0, pos = start;
        foreach (var mp in FileExtents.Overlapping(t, ino, start, end))
        {
            if (mp.Pos > pos) holes += Math.Min(mp.Pos, end) - pos;
            pos = Math.Max(pos, mp.End);
            if (pos >= end) break;
        }
        if (pos < end) holes += end - pos;
        return holes;
    }
}

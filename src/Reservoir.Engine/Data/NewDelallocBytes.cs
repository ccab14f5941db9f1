using Reservoir.Common.Collections;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;

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
        // The runs are gathered in a list on loan, and one tree path serves every run: a stat
        // of a file being written allocates nothing, and a run that lies in the leaf the last
        // one ended in searches that leaf alone (bench --alloc: FUSE GETATTR of a dirty file).
        using var lease = ListLease<(ulong Start, ulong End)>.Rent(out var pending);
        using (m.State.Lock())
        {
            if (m.Ordered.Count == 0 && m.Ledger.IsEmpty) return 0; // the common case: nothing pending
            m.Ledger.AddRuns(pending, RangeBits.Delalloc);
            if (m.Ordered.Count > 0) // (a sorted dictionary's enumerator allocates, even empty)
                foreach (var oe in m.Ordered.Values)
                    if (!oe.Complete && oe.Kind is OrderedKind.Regular or OrderedKind.Direct) pending.Add((oe.FileOffset, oe.End));
        }
        if (pending.Count == 0) return 0;
        // A page dirtied again while its ordered extent is in flight is both: count it once.
        pending.Sort(static (a, b) => a.Start.CompareTo(b.Start));
        using var pathLease = TreePath.Rent(out var path);
        ulong total = 0;
        (ulong s, ulong e) run = pending[0];
        for (int i = 1; i <= pending.Count; i++)
        {
            if (i < pending.Count && pending[i].Start <= run.e) { run.e = Math.Max(run.e, pending[i].End); continue; }
            total += run.e - run.s - FileExtents.CoveredBytes(t, inode.Ino, run.s, run.e, path);
            if (i < pending.Count) run = pending[i];
        }
        return total;
    }
}

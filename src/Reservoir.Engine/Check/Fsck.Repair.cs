using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tx;
using Reservoir.Common;

namespace Reservoir.Engine.Check;

public sealed partial class Fsck
{
    /// <summary>
    /// Applies the repairs that only recompute counters: inode link counts, sizes and byte
    /// counts, orphan items for lost inodes, block group usage and the superblock's byte count
    /// (the last two are recomputed by mounting and committing). Structural damage is left
    /// alone and stays reported.
    /// </summary>
    private void ApplyRepairs()
    {
        if (_r.Errors.Any(f => !f.Repairable)) return; // never write over structural damage
        try
        {
            using var fs = Filesystem.Mount(_dev, new MountOptions { CommitIntervalMs = 0 });
            foreach (var (node, fix) in _inodeFixes)
            {
                var (tree, ino) = NodeIds.Decode(node);
                var sv = fs.SubvolumeOf(tree);
                if (sv == null || sv.Acquire(ino, out var inode) != Errno.OK) continue;
                try
                {
                    using var lk = inode.Lock.Write();
                    using var h = fs.Fs.Start(1, useGlobalReserve: true);
                    fix(inode);
                    using (sv.Tree.Lock.Write()) DirItems.PutInode(h, sv.Tree, inode);
                }
                finally { sv.Release(inode); }
            }
            foreach (var node in _orphansToAdd)
            {
                var (tree, ino) = NodeIds.Decode(node);
                var sv = fs.SubvolumeOf(tree);
                if (sv == null) continue;
                using var h = fs.Fs.Start(1, useGlobalReserve: true);
                using (sv.Tree.Lock.Write()) sv.Tree.Put(h, DirItems.OrphanKey(ino), ReadOnlySpan<byte>.Empty);
            }
            // Mounting recomputed block group usage from the extents (and marked the groups
            // dirty); committing writes it, with the superblock's byte count.
            fs.Fs.ForceCommit = _countersNeedCommit;
            fs.Fs.Commit();
            _r.Repaired = _r.Errors.Count();
        }
        catch (FsException ex)
        {
            _r.OperationalError = "repair failed: " + ex.Message;
        }
    }
}

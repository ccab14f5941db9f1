using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>The file's extents in file order (holes omitted), as FIEMAP reports them.</summary>
    public Errno ExtentMap(ulong ino, out List<ExtentMapping> map)
    {
        map = new();
        var e = Get(ino, out var inode);
        if (e != Errno.OK) return e;
        var result = map;
        try
        {
            return Guard(ino, () =>
            {
                using var lk = inode.Lock.Read();
                using var lk2 = inode.Subvol.Tree.Lock.Read();
                foreach (var m in FileExtents.Overlapping(inode.Subvol.Tree, inode.Ino, 0, ulong.MaxValue))
                    result.Add(new ExtentMapping(m.Pos, m.Fe.NumBytes, m.Fe.DiskBytenr, m.Fe.DiskNumBytes, m.Fe.Offset,
                        m.Fe.Type.ToString().ToLowerInvariant(), m.Fe.Generation));
                return Errno.OK;
            });
        }
        finally { Put(inode); }
    }

    /// <summary>
    /// fsck's rule for one file, on the live trees: written extents end within the size the
    /// inode item in the tree records (rounded up to a block); and the size on disk is the
    /// size in memory unless something above it waits to reach the disk. The stress runner
    /// asks it after every operation with --check-each, to pin a violation to the operation
    /// that made it.
    /// </summary>
    public string? CheckExtentsWithinSize(ulong node)
    {
        var (tree, ino) = NodeIds.Decode(node);
        var sv = SubvolumeOf(tree);
        if (sv == null) return null;
        var t = sv.Tree;
        ulong bs = (ulong)Fs.BlockSize, end = 0;
        InodeItem it;
        using (t.Lock.Read())
        {
            var item = t.Get(DirItems.InodeKey(ino));
            if (item == null || item.Length != InodeItem.Size) return null;
            it = InodeItem.Read(item);
            if (!Inodes.Mode.IsReg(it.Mode)) return null;
            foreach (var m in FileExtents.Overlapping(t, ino, 0, ulong.MaxValue))
                if (m.Fe.Type == FileExtentType.Regular) end = Math.Max(end, m.End);
        }
        ulong limit = (it.FileSize + bs - 1) / bs * bs;
        if (end > limit) return $"inode {node}: written extents reach {end}, beyond the size {it.FileSize} in the tree (in memory {MemorySize(node)})";
        return DiskSizeProblem(node);
    }

    /// <summary>The loaded inode's size on disk against its size in memory
    /// (<see cref="Data.DataEngine.DiskSizeProblem"/>).</summary>
    private string? DiskSizeProblem(ulong node)
    {
        if (Get(node, out var inode) != Errno.OK) return null;
        try
        {
            using var lk = inode.Lock.Read();
            if (inode.Mapping is not { } m) return null;
            using (m.State.Lock()) return Data.DiskSizeProblem(m);
        }
        finally { Put(inode); }
    }

    private string MemorySize(ulong node) => GetAttr(node, out var a) == Errno.OK ? a.Size.ToString() : "?";
}

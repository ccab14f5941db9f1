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
}

using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

/// <summary>
/// The tree half of a relocation (FsInfo.Relocate.cs): walks every tree from its root and
/// writes a copy, at a new address below the limit, of each block that must change: one at or
/// past the limit, a leaf of a subvolume whose file extent items name a moved data extent, and
/// every block above such a one (its pointer changes). A block shared by several trees
/// (snapshots) is visited once and copied once, so every parent points at the same copy and
/// its reference count stays right. A copy keeps the block's owner, level and generation; only
/// its address and the pointers or extent addresses inside it change.
/// The walk writes only to space the last commit does not use and changes no tree: until
/// <see cref="FsInfo"/> installs the copies, <see cref="Undo"/> gives everything back.
/// Caller holds every tree's write lock.
/// </summary>
internal sealed class RelocationWalk(FsInfo fs, ulong limit, IReadOnlyDictionary<ulong, ulong> dataMoves)
{
    /// <summary>A block's new address and generation (its old one).</summary>
    public readonly record struct Copy(ulong Bytenr, ulong Generation, int Level);

    /// <summary>Every block visited: its copy, or null when it stays where it is.</summary>
    private readonly Dictionary<ulong, Copy?> _visited = new();
    /// <summary>The blocks copied, in the order they were written: old address and copy.</summary>
    public List<(ulong Old, Copy Copy)> Moved { get; } = new();

    /// <summary>Where a block went, if it moved.</summary>
    public Copy? CopyOf(ulong bytenr) => _visited.GetValueOrDefault(bytenr);

    /// <summary>Walks one tree; returns how many blocks it holds that no tree walked before
    /// held.</summary>
    public int Visit(BTree tree)
    {
        int before = _visited.Count;
        Walk(tree.Root, tree.Id == TreeIds.FsTree || tree.Id >= TreeIds.FirstSubvolume);
        return _visited.Count - before;
    }

    private Copy? Walk(TreeNode node, bool fileTree)
    {
        if (_visited.TryGetValue(node.Bytenr, out var done)) return done;
        TreeNode? copy = null;
        if (!node.IsLeaf)
        {
            for (int i = 0; i < node.NrItems; i++)
            {
                var child = fs.Store.Read(node.ChildAt(i), node.ChildGenAt(i), node.Level - 1);
                if (Walk(child, fileTree) is not { } c) continue;
                copy ??= node.CloneData();
                copy.SetPtr(i, c.Bytenr, c.Generation);
            }
        }
        else if (fileTree && dataMoves.Count > 0)
        {
            for (int i = 0; i < node.NrItems; i++)
            {
                if (node.KeyAt(i).Type != KeyTypes.ExtentData) continue;
                if (!FileExtentItem.TryRead(node.ItemDataRO(i), out var fe))
                    throw new CorruptionException($"tree {node.Owner}: malformed EXTENT_DATA {node.KeyAt(i)}", node.Bytenr);
                if (fe.Type == FileExtentType.Inline || !dataMoves.TryGetValue(fe.DiskBytenr, out ulong to)) continue;
                copy ??= node.CloneData();
                fe.DiskBytenr = to;
                fe.Write(copy.ItemData(i));
            }
        }
        if (copy == null && node.Bytenr + (ulong)fs.NodeSize > limit) copy = node.CloneData();
        Copy? result = null;
        if (copy != null)
        {
            ulong at = fs.Space.AllocNode(fromReservation: false, belowFence: true); // ENOSPC throws
            copy.Bytenr = at;
            copy.Dirty = false;
            result = new Copy(at, copy.Generation, copy.Level);
            Moved.Add((node.Bytenr, result.Value));
            fs.Store.Write(copy);
        }
        _visited[node.Bytenr] = result;
        return result;
    }

    /// <summary>Gives back every block the walk took (nothing points at them yet).</summary>
    public void Undo()
    {
        foreach (var (_, c) in Moved) fs.Space.Free(c.Bytenr, (ulong)fs.NodeSize, pin: false);
        Moved.Clear();
        _visited.Clear();
    }
}

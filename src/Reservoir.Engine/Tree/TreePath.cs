using System.Runtime.CompilerServices;
using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>The nodes and slots from the root down to a leaf position, level-indexed. The two
/// level arrays are inline (one object per path, not three: a lookup makes a path or more).</summary>
internal sealed class TreePath
{
    public LevelNodes Nodes;
    public LevelSlots Slots;

    public TreeNode Leaf => Nodes[0]!;
    public int Slot { get => Slots[0]; set => Slots[0] = value; }
    public bool Valid => Nodes[0] != null && Slots[0] < Nodes[0]!.NrItems;
    public Key Key => Leaf.KeyAt(Slot);
    public ReadOnlySpan<byte> Data => Leaf.ItemDataRO(Slot);
    public Span<byte> MutableData => Leaf.ItemData(Slot);

    public void Reset()
    {
        ((Span<TreeNode?>)Nodes).Clear();
        ((Span<int>)Slots).Clear();
    }

    /// <summary>Spare paths of this thread, so that the tree's own short searches (a lookup, an
    /// insert, a delete: a path or two each, nested at most a few deep) allocate none. A path is
    /// on loan from <see cref="Rent"/> until its lease is disposed, and must not be kept past it
    /// (spans into the leaf are fine: they point into the node, not the path).</summary>
    [ThreadStatic] private static TreePath?[]? t_spares;
    [ThreadStatic] private static int t_spareCount;

    public static Lease Rent(out TreePath path)
    {
        var spares = t_spares;
        if (spares != null && t_spareCount > 0)
        {
            path = spares[--t_spareCount]!;
            spares[t_spareCount] = null;
        }
        else path = new TreePath();
        return new Lease(path);
    }

    /// <summary>Gives the path back to its thread's spares, cleared (the nodes it named are no
    /// longer held).</summary>
    public readonly struct Lease(TreePath path) : IDisposable
    {
        public void Dispose()
        {
            path.Reset();
            var spares = t_spares ??= new TreePath?[4];
            if (t_spareCount < spares.Length) spares[t_spareCount++] = path;
        }
    }

    [InlineArray(FormatConstants.MaxLevel)]
    public struct LevelNodes { private TreeNode? _first; }

    [InlineArray(FormatConstants.MaxLevel)]
    public struct LevelSlots { private int _first; }
}

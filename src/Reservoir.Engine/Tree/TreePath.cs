using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>The nodes and slots from the root down to a leaf position, level-indexed.</summary>
internal sealed class TreePath
{
    public readonly TreeNode?[] Nodes = new TreeNode?[FormatConstants.MaxLevel];
    public readonly int[] Slots = new int[FormatConstants.MaxLevel];

    public TreeNode Leaf => Nodes[0]!;
    public int Slot { get => Slots[0]; set => Slots[0] = value; }
    public bool Valid => Nodes[0] != null && Slots[0] < Nodes[0]!.NrItems;
    public Key Key => Leaf.KeyAt(Slot);
    public ReadOnlySpan<byte> Data => Leaf.ItemDataRO(Slot);
    public Span<byte> MutableData => Leaf.ItemData(Slot);

    public void Reset()
    {
        Array.Clear(Nodes);
        Array.Clear(Slots);
    }
}

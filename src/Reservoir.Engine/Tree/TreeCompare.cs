using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>
/// The keys whose items differ between two trees, found by walking both in key order at once
/// and stepping over every subtree the two share (btrfs's btrfs_compare_trees, what makes an
/// incremental send cost what changed rather than what exists). A snapshot and its source, or
/// two snapshots of one subvolume, point at the same node for every part neither changed since;
/// copy-on-write never changes a shared node, so one address at one place in both trees is one
/// subtree with the same items, and its items need not be read.
///
/// Each side is a cursor that stands either on an item of a leaf or on a child pointer of an
/// internal node, meaning "everything from here on is still to compare". Moving down into a
/// child never passes an item; moving to the next entry passes the current item or subtree,
/// which is done only once it is compared, or when both sides stand on the same child pointer
/// under the same key (so both skip one and the same sequence of items).
///
/// Callers hold both trees' locks for reading throughout (the trees must not change under the
/// walk).
/// </summary>
internal static class TreeCompare
{
    /// <summary>What a side holds that the other does not, or holds differently.</summary>
    public enum Difference { OnlyLeft, OnlyRight, Changed }

    /// <summary>Calls <paramref name="found"/> for every key whose item is only in
    /// <paramref name="left"/>, only in <paramref name="right"/>, or in both with other bytes,
    /// in key order. Returns the number of nodes read (both sides), which is what the walk
    /// costs.</summary>
    public static long Run(BTree left, BTree right, Action<Key, Difference> found)
    {
        var a = new Cursor(left);
        var b = new Cursor(right);
        while (!a.End || !b.End)
        {
            if (a.End || b.End)
            {
                // One side is used up: the rest of the other is all its own.
                var rest = a.End ? b : a;
                var what = a.End ? Difference.OnlyRight : Difference.OnlyLeft;
                if (rest.Level > 0) rest.Down();
                else { found(rest.Key, what); rest.Next(); }
                continue;
            }
            // Keys compare only between entries of one level: a side higher up goes down first
            // (which passes nothing).
            if (a.Level > b.Level) { a.Down(); continue; }
            if (b.Level > a.Level) { b.Down(); continue; }
            int cmp = a.Key.CompareTo(b.Key);
            if (a.Level == 0)
            {
                if (cmp < 0) { found(a.Key, Difference.OnlyLeft); a.Next(); }
                else if (cmp > 0) { found(b.Key, Difference.OnlyRight); b.Next(); }
                else
                {
                    if (!a.ItemData.SequenceEqual(b.ItemData)) found(a.Key, Difference.Changed);
                    a.Next();
                    b.Next();
                }
            }
            else if (cmp == 0 && a.Child == b.Child && a.ChildGen == b.ChildGen)
            {
                a.Next(); // one shared subtree: the same items on both sides
                b.Next();
            }
            else if (cmp < 0) a.Down();
            else if (cmp > 0) b.Down();
            else { a.Down(); b.Down(); }
        }
        return a.NodesRead + b.NodesRead;
    }

    /// <summary>A position in one tree: the node and slot at every level from the root down to
    /// <see cref="Level"/>.</summary>
    private sealed class Cursor
    {
        private readonly BTree _tree;
        private readonly TreeNode[] _nodes = new TreeNode[FormatConstants.MaxLevel];
        private readonly int[] _slots = new int[FormatConstants.MaxLevel];
        private readonly int _top;
        public int Level { get; private set; }
        public bool End { get; private set; }
        public long NodesRead { get; private set; } = 1;

        public Cursor(BTree tree)
        {
            _tree = tree;
            var root = tree.Root;
            _top = Level = root.Level;
            _nodes[Level] = root;
            _slots[Level] = 0;
            End = root.NrItems == 0;
        }

        private TreeNode Node => _nodes[Level];
        public Key Key => Node.KeyAt(_slots[Level]);
        public ReadOnlySpan<byte> ItemData => Node.ItemDataRO(_slots[Level]);
        public ulong Child => Node.ChildAt(_slots[Level]);
        public ulong ChildGen => Node.ChildGenAt(_slots[Level]);

        /// <summary>Into the child under the current pointer, at its first entry.</summary>
        public void Down()
        {
            var child = _tree.ReadChild(Node, _slots[Level]);
            NodesRead++;
            Level--;
            _nodes[Level] = child;
            _slots[Level] = 0;
        }

        /// <summary>Past the current item or subtree: the next entry of this node, else of the
        /// nearest node above that has one (the cursor then stands at that level).</summary>
        public void Next()
        {
            while (++_slots[Level] >= Node.NrItems)
            {
                if (Level == _top) { End = true; return; }
                Level++;
            }
        }
    }
}

using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>
/// One B+tree node in memory: its nodesize bytes exactly as on disk (SPEC.md §3), with accessors
/// and the in-place mutators the tree algorithms need. A node is only mutated while it is dirty
/// in the running transaction (copy-on-write happened) and while its tree's lock is held for
/// writing; clean nodes are immutable and may be shared.
/// </summary>
internal sealed class TreeNode
{
    public readonly byte[] Data;
    public bool Dirty;

    public TreeNode(byte[] data) => Data = data;

    private Span<byte> S => Data;
    public int NodeSize => Data.Length;
    public ulong Bytenr
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(Data.AsSpan(NodeLayout.OffBytenr));
        set => BinaryPrimitives.WriteUInt64LittleEndian(S[NodeLayout.OffBytenr..], value);
    }
    public ulong Generation
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(Data.AsSpan(NodeLayout.OffGeneration));
        set => BinaryPrimitives.WriteUInt64LittleEndian(S[NodeLayout.OffGeneration..], value);
    }
    public ulong Owner
    {
        get => BinaryPrimitives.ReadUInt64LittleEndian(Data.AsSpan(NodeLayout.OffOwner));
        set => BinaryPrimitives.WriteUInt64LittleEndian(S[NodeLayout.OffOwner..], value);
    }
    public int NrItems
    {
        get => (int)BinaryPrimitives.ReadUInt32LittleEndian(Data.AsSpan(NodeLayout.OffNrItems));
        private set => BinaryPrimitives.WriteUInt32LittleEndian(S[NodeLayout.OffNrItems..], (uint)value);
    }
    public int Level
    {
        get => Data[NodeLayout.OffLevel];
        set => Data[NodeLayout.OffLevel] = (byte)value;
    }
    public bool IsLeaf => Level == 0;

    public static TreeNode CreateEmpty(int nodeSize, Guid fsid, ulong bytenr, ulong generation, ulong owner, int level)
    {
        var n = new TreeNode(new byte[nodeSize]);
        fsid.TryWriteBytes(n.S[NodeLayout.OffFsid..]);
        n.Bytenr = bytenr;
        n.Generation = generation;
        n.Owner = owner;
        n.Level = level;
        return n;
    }

    // ---- keys (both kinds) ----

    private int KeyOffset(int i) => NodeLayout.HeaderSize + i * (IsLeaf ? NodeLayout.ItemSize : NodeLayout.KeyPtrSize);
    public Key KeyAt(int i) => Key.Read(Data.AsSpan(KeyOffset(i)));
    public void SetKey(int i, Key k) => k.Write(S[KeyOffset(i)..]);

    /// <summary>Binary search. Returns true and the slot if found; else false and the slot
    /// where the key would be inserted.</summary>
    public bool Search(Key key, out int slot) => Search(key, 0, out slot);

    /// <summary>Whether <paramref name="key"/> lies between this node's first and last keys (in
    /// a leaf: no other leaf can hold it).</summary>
    public bool Spans(Key key)
    {
        int n = NrItems;
        return n > 0 && KeyAt(0) <= key && key <= KeyAt(n - 1);
    }

    /// <summary><see cref="Search(Key, out int)"/> that looks at slot <paramref name="hint"/>
    /// first: keys asked in order are most often at the previous answer's slot or just after
    /// it (the commit's accounting reads the extents it changed in address order).</summary>
    public bool SearchFrom(Key key, int hint, out int slot)
    {
        int lo = 0;
        if ((uint)hint < (uint)NrItems)
        {
            int c = KeyAt(hint).CompareTo(key);
            if (c == 0) { slot = hint; return true; }
            if (c < 0) lo = hint + 1;
        }
        return Search(key, lo, out slot);
    }

    /// <summary><see cref="Search(Key, out int)"/> among the slots from <paramref name="lo"/> on,
    /// for a caller that knows the key is not below slot <paramref name="lo"/>'s.</summary>
    public bool Search(Key key, int lo, out int slot)
    {
        int hi = NrItems - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int c = KeyAt(mid).CompareTo(key);
            if (c == 0) { slot = mid; return true; }
            if (c < 0) lo = mid + 1; else hi = mid - 1;
        }
        slot = lo;
        return false;
    }

    // ---- internal nodes ----

    public int MaxPtrs => NodeLayout.MaxKeyPtrs(NodeSize);
    public ulong ChildAt(int i) => BinaryPrimitives.ReadUInt64LittleEndian(Data.AsSpan(KeyOffset(i) + Key.Size));
    public ulong ChildGenAt(int i) => BinaryPrimitives.ReadUInt64LittleEndian(Data.AsSpan(KeyOffset(i) + Key.Size + 8));

    public void SetPtr(int i, ulong bytenr, ulong gen)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(S[(KeyOffset(i) + Key.Size)..], bytenr);
        BinaryPrimitives.WriteUInt64LittleEndian(S[(KeyOffset(i) + Key.Size + 8)..], gen);
    }

    public void InsertPtr(int slot, Key key, ulong bytenr, ulong gen)
    {
        int n = NrItems;
        if (n >= MaxPtrs) ThrowHelper.Invariant("InsertPtr into a full node");
        int at = KeyOffset(slot);
        Data.AsSpan(at, (n - slot) * NodeLayout.KeyPtrSize).CopyTo(S[(at + NodeLayout.KeyPtrSize)..]);
        NrItems = n + 1;
        SetKey(slot, key);
        SetPtr(slot, bytenr, gen);
    }

    public void DeletePtrs(int slot, int count)
    {
        int n = NrItems;
        int at = KeyOffset(slot);
        int tail = (n - slot - count) * NodeLayout.KeyPtrSize;
        Data.AsSpan(at + count * NodeLayout.KeyPtrSize, tail).CopyTo(S[at..]);
        NrItems = n - count;
        S.Slice(KeyOffset(n - count), count * NodeLayout.KeyPtrSize).Clear();
    }

    /// <summary>Moves key pointers [from, NrItems) to the end of <paramref name="dst"/>.</summary>
    public void MovePtrsTo(TreeNode dst, int from)
    {
        int n = NrItems, cnt = n - from, dn = dst.NrItems;
        Data.AsSpan(KeyOffset(from), cnt * NodeLayout.KeyPtrSize).CopyTo(dst.S[dst.KeyOffset(dn)..]);
        dst.NrItems = dn + cnt;
        S.Slice(KeyOffset(from), cnt * NodeLayout.KeyPtrSize).Clear();
        NrItems = from;
    }

    // ---- leaves ----
    // Item data offsets are relative to the end of the header. Item i's data lies just below
    // item i-1's: data of the whole leaf is one contiguous run at the end of the node.

    private int ItemHdr(int i) => NodeLayout.HeaderSize + i * NodeLayout.ItemSize;
    public int ItemOffset(int i) => (int)BinaryPrimitives.ReadUInt32LittleEndian(Data.AsSpan(ItemHdr(i) + Key.Size));
    public int ItemSize(int i) => (int)BinaryPrimitives.ReadUInt32LittleEndian(Data.AsSpan(ItemHdr(i) + Key.Size + 4));
    private void SetItemOffset(int i, int v) => BinaryPrimitives.WriteUInt32LittleEndian(S[(ItemHdr(i) + Key.Size)..], (uint)v);
    private void SetItemSize(int i, int v) => BinaryPrimitives.WriteUInt32LittleEndian(S[(ItemHdr(i) + Key.Size + 4)..], (uint)v);

    public Span<byte> ItemData(int i) => S.Slice(NodeLayout.HeaderSize + ItemOffset(i), ItemSize(i));
    public ReadOnlySpan<byte> ItemDataRO(int i) => Data.AsSpan(NodeLayout.HeaderSize + ItemOffset(i), ItemSize(i));

    private int DataCapacity => NodeSize - NodeLayout.HeaderSize;
    /// <summary>Relative offset where the leaf's packed data begins.</summary>
    private int DataStart => NrItems == 0 ? DataCapacity : ItemOffset(NrItems - 1);
    public int LeafFreeSpace => DataStart - NrItems * NodeLayout.ItemSize;
    public int LeafUsed => DataCapacity - LeafFreeSpace;
    public int ItemsBytes(int from, int to) => to <= from ? 0 : (from == 0 ? DataCapacity : ItemOffset(from - 1)) - ItemOffset(to - 1) + (to - from) * NodeLayout.ItemSize;

    /// <summary>Inserts an item of <paramref name="size"/> bytes at <paramref name="slot"/> and
    /// returns its (uninitialised) data. The caller checked <see cref="LeafFreeSpace"/>.</summary>
    public Span<byte> InsertItem(int slot, Key key, int size)
    {
        int n = NrItems;
        if (LeafFreeSpace < size + NodeLayout.ItemSize) ThrowHelper.Invariant("InsertItem into a full leaf");
        int end = slot == 0 ? DataCapacity : ItemOffset(slot - 1); // new item's data ends here
        int start = DataStart;
        // Data of items [slot, n) moves down by size.
        int h = NodeLayout.HeaderSize;
        Data.AsSpan(h + start, end - start).CopyTo(S[(h + start - size)..]);
        for (int i = slot; i < n; i++) SetItemOffset(i, ItemOffset(i) - size);
        // Headers of items [slot, n) move up by one.
        Data.AsSpan(ItemHdr(slot), (n - slot) * NodeLayout.ItemSize).CopyTo(S[ItemHdr(slot + 1)..]);
        NrItems = n + 1;
        key.Write(S[ItemHdr(slot)..]);
        SetItemOffset(slot, end - size);
        SetItemSize(slot, size);
        return ItemData(slot);
    }

    public void DeleteItems(int slot, int count)
    {
        int n = NrItems;
        int h = NodeLayout.HeaderSize;
        int dsize = 0;
        for (int i = slot; i < slot + count; i++) dsize += ItemSize(i);
        int start = DataStart;
        int end = ItemOffset(slot + count - 1); // data of items after the run ends here
        // Data of items [slot+count, n) moves up by dsize.
        Data.AsSpan(h + start, end - start).CopyTo(S[(h + start + dsize)..]);
        for (int i = slot + count; i < n; i++) SetItemOffset(i, ItemOffset(i) + dsize);
        Data.AsSpan(ItemHdr(slot + count), (n - slot - count) * NodeLayout.ItemSize).CopyTo(S[ItemHdr(slot)..]);
        NrItems = n - count;
        // Keep freed bytes zero so images compress and nothing stale leaks.
        S.Slice(ItemHdr(n - count), count * NodeLayout.ItemSize).Clear();
        S.Slice(h + start, dsize).Clear();
    }

    /// <summary>Grows or shrinks item <paramref name="slot"/> at its end, keeping the prefix.</summary>
    public void ResizeItem(int slot, int newSize)
    {
        int old = ItemSize(slot);
        int delta = newSize - old;
        if (delta == 0) return;
        if (delta > 0 && LeafFreeSpace < delta) ThrowHelper.Invariant("ResizeItem beyond free space");
        int h = NodeLayout.HeaderSize;
        int start = DataStart;
        int keepEnd = ItemOffset(slot) + Math.Min(old, newSize);
        Data.AsSpan(h + start, keepEnd - start).CopyTo(S[(h + start - delta)..]);
        for (int i = slot; i < NrItems; i++) SetItemOffset(i, ItemOffset(i) - delta);
        SetItemSize(slot, newSize);
        if (delta > 0) ItemData(slot)[old..].Clear();
        else S.Slice(h + start, -delta).Clear();
    }

    /// <summary>Appends items [from, to) of <paramref name="src"/> to this leaf.</summary>
    public void AppendItemsFrom(TreeNode src, int from, int to) => InsertItemsFrom(NrItems, src, from, to);

    /// <summary>Inserts items [from, to) of another leaf at <paramref name="slot"/>, moving this
    /// leaf's later items once for all of them. The caller checked the room.</summary>
    public void InsertItemsFrom(int slot, TreeNode src, int from, int to)
    {
        int c = to - from;
        if (c <= 0) return;
        int n = NrItems;
        int dsize = src.ItemsBytes(from, to) - c * NodeLayout.ItemSize;
        if (LeafFreeSpace < dsize + c * NodeLayout.ItemSize) ThrowHelper.Invariant("InsertItemsFrom into a leaf without room");
        int h = NodeLayout.HeaderSize;
        int end = slot == 0 ? DataCapacity : ItemOffset(slot - 1); // the new items' data ends here
        int start = DataStart;
        // Data of items [slot, n) moves down by dsize, their headers up by c.
        Data.AsSpan(h + start, end - start).CopyTo(S[(h + start - dsize)..]);
        for (int i = slot; i < n; i++) SetItemOffset(i, ItemOffset(i) - dsize);
        Data.AsSpan(ItemHdr(slot), (n - slot) * NodeLayout.ItemSize).CopyTo(S[ItemHdr(slot + c)..]);
        NrItems = n + c;
        int off = end;
        for (int i = 0; i < c; i++)
        {
            var d = src.ItemDataRO(from + i);
            off -= d.Length;
            src.KeyAt(from + i).Write(S[ItemHdr(slot + i)..]);
            SetItemOffset(slot + i, off);
            SetItemSize(slot + i, d.Length);
            d.CopyTo(S.Slice(h + off, d.Length));
        }
    }

    /// <summary>Empties the node's items, keeping the header identity.</summary>
    public void ClearItems()
    {
        S[NodeLayout.HeaderSize..].Clear();
        NrItems = 0;
    }

    public TreeNode CloneData() => new((byte[])Data.Clone());
}

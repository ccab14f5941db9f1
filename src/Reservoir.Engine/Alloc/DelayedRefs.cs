using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Alloc;

/// <summary>
/// Reference-count changes to extents made during a transaction, applied to the extent tree at
/// commit (btrfs's delayed refs). Recording them instead of updating the extent tree at once
/// keeps tree operations from recursing into the extent tree, and lets an extent allocated and
/// freed within one transaction cancel out without ever reaching the tree.
/// </summary>
internal sealed class DelayedRefs
{
    internal sealed class Head(ulong bytenr, ulong numBytes, bool isData)
    {
        public ulong Bytenr { get; } = bytenr;
        public ulong NumBytes { get; set; } = numBytes;
        public bool IsData { get; } = isData;
        public int TreeDelta;
        public int Level;
        public ulong Owner;
        /// <summary>The extent was allocated in this transaction: it has no item yet.</summary>
        public bool New;
        public readonly Dictionary<(ulong Root, ulong Inode, ulong Offset), int> DataDeltas = new();
        public ulong Generation;
    }

    private readonly FsMutex _lock; // guards _heads
    private Dictionary<ulong, Head> _heads = new();

    public DelayedRefs(IScheduler sched) => _lock = sched.CreateMutex("delayed-refs");

    public void AddTreeRef(ulong bytenr, ulong numBytes, ulong owner, int level, int delta, bool isNew, ulong gen)
    {
        using var _ = _lock.Lock();
        if (!_heads.TryGetValue(bytenr, out var h)) _heads[bytenr] = h = new Head(bytenr, numBytes, false) { Owner = owner, Level = level, Generation = gen };
        h.TreeDelta += delta;
        if (isNew) { h.New = true; h.Owner = owner; h.Level = level; h.Generation = gen; }
    }

    public void AddDataRef(ulong bytenr, ulong numBytes, ulong root, ulong inode, ulong offset, int delta, bool isNew, ulong gen)
    {
        using var _ = _lock.Lock();
        if (!_heads.TryGetValue(bytenr, out var h)) _heads[bytenr] = h = new Head(bytenr, numBytes, true) { Owner = root, Generation = gen };
        if (isNew) { h.New = true; h.Owner = root; h.Generation = gen; }
        var k = (root, inode, offset);
        h.DataDeltas[k] = h.DataDeltas.GetValueOrDefault(k) + delta;
    }

    /// <summary>Takes every pending head, sorted by address.</summary>
    public List<Head> Drain()
    {
        using var _ = _lock.Lock();
        var list = _heads.Values.OrderBy(h => h.Bytenr).ToList();
        _heads = new Dictionary<ulong, Head>();
        return list;
    }

    public int Count { get { using var _ = _lock.Lock(); return _heads.Count; } }

    /// <summary>Adds to <paramref name="inodes"/> the inode of every reference this
    /// transaction adds to the data extent at <paramref name="bytenr"/> (not yet in the extent
    /// tree's EXTENT_DATA_REFs).</summary>
    public void AddedReferrers(ulong bytenr, ISet<ulong> inodes)
    {
        using var _ = _lock.Lock();
        if (!_heads.TryGetValue(bytenr, out var h)) return;
        foreach (var ((_, ino, _), d) in h.DataDeltas)
            if (d > 0) inodes.Add(ino);
    }

    /// <summary>Net pending reference change of a tree block in this transaction.</summary>
    public int PendingTreeDelta(ulong bytenr)
    {
        using var _ = _lock.Lock();
        return _heads.TryGetValue(bytenr, out var h) ? h.TreeDelta : 0;
    }

    /// <summary>Whether this transaction adds a reference to a data extent from anything but
    /// the file range (root, inode, back-reference offset) given (a clone, say).</summary>
    public bool AddsDataRefsOtherThan(ulong bytenr, ulong root, ulong ino, ulong refOffset)
    {
        using var _ = _lock.Lock();
        if (!_heads.TryGetValue(bytenr, out var h)) return false;
        foreach (var ((r, i, o), d) in h.DataDeltas)
            if (d > 0 && (r != root || i != ino || o != refOffset)) return true;
        return false;
    }

    /// <summary>Owner and generation of a data extent allocated in this transaction (it has no
    /// EXTENT_ITEM yet), or null.</summary>
    public (ulong Owner, ulong Generation)? NewDataExtent(ulong bytenr)
    {
        using var _ = _lock.Lock();
        return Born(bytenr);
    }

    /// <summary>Owner and generation of a data extent allocated in this transaction. Caller holds _lock.</summary>
    private (ulong Owner, ulong Generation)? Born(ulong bytenr) =>
        _heads.TryGetValue(bytenr, out var h) && h.IsData && h.New ? (h.Owner, h.Generation) : null;

    /// <summary>Net pending reference delta of a data extent (for deciding whether an extent
    /// allocated in this transaction is still referenced).</summary>
    public int PendingDataRefs(ulong bytenr)
    {
        using var _ = _lock.Lock();
        return _heads.TryGetValue(bytenr, out var h) ? h.DataDeltas.Values.Sum() : 0;
    }
}

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Format;

namespace Reservoir.Engine.Tree;

/// <summary>
/// Reads, verifies, caches and writes tree nodes. Every node read from the device is checked
/// (checksum, own address, fsid, level, generation against its parent pointer, item bounds and
/// key order) before any code looks inside it, so a corrupted image yields a
/// <see cref="CorruptionException"/> naming the block, never an out-of-range access.
/// </summary>
internal sealed class NodeStore
{
    private readonly IBlockDevice _dev;
    private readonly FsMutex _lock; // guards _cache, _clock
    private readonly Dictionary<ulong, (TreeNode Node, long Used)> _cache = new();
    private long _clock;
    public int NodeSize { get; }
    public Guid Fsid { get; }
    /// <summary>Clean nodes kept in memory before eviction starts.</summary>
    public int CacheLimit { get; set; }
    public long Reads, CacheHits;
    /// <summary>The trees of this store whose root moved in the running transaction.</summary>
    public MovedRoots MovedRoots { get; } = new();

    public NodeStore(IBlockDevice dev, IScheduler sched, int nodeSize, Guid fsid, long cacheBytes)
    {
        _dev = dev;
        _lock = sched.CreateMutex("node-cache");
        NodeSize = nodeSize;
        Fsid = fsid;
        CacheLimit = (int)Math.Max(64, cacheBytes / nodeSize);
    }

    public TreeNode Read(ulong bytenr, ulong expectedGen, int expectedLevel)
    {
        using (_lock.Lock())
        {
            if (_cache.TryGetValue(bytenr, out var e))
            {
                _cache[bytenr] = (e.Node, ++_clock);
                CacheHits++;
                if (expectedGen != 0 && e.Node.Generation != expectedGen)
                    ThrowHelper.Corrupt($"tree block generation {e.Node.Generation}, parent expects {expectedGen}", bytenr);
                // A cached node passed Verify when it was read, but as whatever its first parent
                // said it was: a damaged parent pointing at it as a child of another level (a
                // loop back to itself, say) is caught here, not by an index out of range later.
                if (expectedLevel >= 0 && e.Node.Level != expectedLevel)
                    ThrowHelper.Corrupt($"tree block level {e.Node.Level}, expected {expectedLevel}", bytenr);
                return e.Node;
            }
        }
        var buf = new byte[NodeSize];
        if (bytenr % (ulong)NodeSize != 0 || bytenr + (ulong)NodeSize > _dev.Size)
            ThrowHelper.Corrupt($"tree block address outside the device", bytenr);
        _dev.Read(bytenr, buf);
        Reads++;
        Verify(buf, bytenr, expectedGen, expectedLevel);
        var node = new TreeNode(buf);
        using (_lock.Lock())
        {
            if (_cache.TryGetValue(bytenr, out var raced)) return raced.Node;
            _cache[bytenr] = (node, ++_clock);
            if (_cache.Count > CacheLimit) EvictUnsynchronized();
        }
        return node;
    }

    /// <summary>Structural verification of a node image; throws CorruptionException.</summary>
    public void Verify(ReadOnlySpan<byte> buf, ulong bytenr, ulong expectedGen, int expectedLevel)
    {
        uint stored = NodeLayout.StoredChecksum(buf), computed = NodeLayout.ComputeChecksum(buf);
        if (stored != computed) ThrowHelper.Corrupt($"tree block checksum mismatch (stored {stored:x8}, computed {computed:x8})", bytenr);
        if (buf[4..NodeLayout.ChecksumStart].ContainsAnyExcept((byte)0)) ThrowHelper.Corrupt("tree block has non-zero bytes in the unused part of its checksum field", bytenr);
        if (NodeLayout.Bytenr(buf) != bytenr) ThrowHelper.Corrupt($"tree block claims address {NodeLayout.Bytenr(buf)}", bytenr);
        if (NodeLayout.Fsid(buf) != Fsid) ThrowHelper.Corrupt("tree block belongs to another filesystem (fsid)", bytenr);
        int level = NodeLayout.Level(buf);
        if (level >= FormatConstants.MaxLevel || (expectedLevel >= 0 && level != expectedLevel))
            ThrowHelper.Corrupt($"tree block level {level}, expected {expectedLevel}", bytenr);
        if (expectedGen != 0 && NodeLayout.Generation(buf) != expectedGen)
            ThrowHelper.Corrupt($"tree block generation {NodeLayout.Generation(buf)}, parent expects {expectedGen}", bytenr);
        int n = NodeLayout.NrItems(buf);
        int cap = NodeSize - NodeLayout.HeaderSize;
        if (level > 0)
        {
            if (n < 1 || n > NodeLayout.MaxKeyPtrs(NodeSize)) ThrowHelper.Corrupt($"internal node with {n} pointers", bytenr);
        }
        else
        {
            if (n * NodeLayout.ItemSize > cap) ThrowHelper.Corrupt($"leaf with {n} items cannot fit", bytenr);
            int expectEnd = cap;
            for (int i = 0; i < n; i++)
            {
                int h = NodeLayout.HeaderSize + i * NodeLayout.ItemSize + Key.Size;
                uint off = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(buf[h..]);
                uint size = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(buf[(h + 4)..]);
                if (off + (ulong)size != (ulong)expectEnd || off < (uint)(n * NodeLayout.ItemSize))
                    ThrowHelper.Corrupt($"leaf item {i} data [{off}, +{size}) out of place", bytenr);
                expectEnd = (int)off;
            }
        }
        int stride = level > 0 ? NodeLayout.KeyPtrSize : NodeLayout.ItemSize;
        for (int i = 1; i < n; i++)
        {
            var a = Key.Read(buf[(NodeLayout.HeaderSize + (i - 1) * stride)..]);
            var b = Key.Read(buf[(NodeLayout.HeaderSize + i * stride)..]);
            if (a >= b) ThrowHelper.Corrupt($"keys out of order at slot {i}: {a} then {b}", bytenr);
        }
    }

    public void Add(TreeNode node)
    {
        using var _ = _lock.Lock();
        _cache[node.Bytenr] = (node, ++_clock);
    }

    public void Remove(ulong bytenr)
    {
        using var _ = _lock.Lock();
        _cache.Remove(bytenr);
    }

    /// <summary>Checksums and writes a node at its own address.</summary>
    public void Write(TreeNode node)
    {
        NodeLayout.WriteChecksum(node.Data);
        _dev.Write(node.Bytenr, node.Data);
    }

    public void DropAll()
    {
        using var _ = _lock.Lock();
        _cache.Clear();
    }

    public int Cached { get { using var _ = _lock.Lock(); return _cache.Count; } }

    /// <summary>Evicts the least recently used half of the clean nodes. Caller holds _lock.</summary>
    private void EvictUnsynchronized()
    {
        var clean = _cache.Where(kv => !kv.Value.Node.Dirty).OrderBy(kv => kv.Value.Used).Take(_cache.Count / 2).Select(kv => kv.Key).ToList();
        foreach (var k in clean) _cache.Remove(k);
    }
}

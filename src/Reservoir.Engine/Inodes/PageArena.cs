using System.Buffers;
using System.Runtime.InteropServices;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// Frames for the page cache: block-sized frames carved from 2 MiB native chunks, the way the
/// kernel's page allocator hands out struct pages from its zones.
///
/// Why not one managed array per page: a 4 KiB pinned array per cached block costs a GC
/// allocation, a zeroing memset and a page fault for every block written, and the GC churns
/// through hundreds of megabytes of pinned heap as files come and go. Each chunk is populated
/// writable in one call when it is made (MADV_POPULATE_WRITE), and freed frames are reused
/// before fresh memory is touched, so resident memory stays at the peak number of cached pages
/// (the page cache budget).
///
/// Why populate, and why not huge pages (measured on the 2-core VM, fresh mount, 256 MiB
/// written in 1 MiB requests, 3 alternating runs): faulting frames in one by one as the first
/// write touches them cost 0.54-0.81 s of the daemon's system time, most of it TLB shootdowns
/// between the request threads (the faults went through the write-protect path); populating
/// each chunk at once cost 0.28-0.31 s and the write went from 235-329 to 460-482 MiB/s.
/// Advising chunks as transparent huge pages was slower still where the host reclaims free
/// guest memory: a fresh 2 MiB page costs up to 9 times its 4 KiB pages (a C loop touching 256
/// MiB: 950 ms against 110).
///
/// Safety rule (the caller's half): a frame is returned only by the one who removed its page
/// from the cache, under the mapping's State lock, with the page neither locked nor under
/// writeback; so nobody can still be reading or writing it (page-lock holders and writeback
/// are the only users outside State).
///
/// Lock: <see cref="_lock"/> guards the chunk lists and every chunk's free stack. It is a leaf
/// lock with no scheduling point inside (no wait, no IO, no other lock), so it is a plain
/// monitor rather than an <c>IScheduler</c> primitive: no interleaving can depend on it.
/// </summary>
internal sealed class PageArena : IDisposable
{
    public const int ChunkBytes = 2 << 20;
    private const int MadvNoHugepage = 15, MadvPopulateWrite = 23;
    private readonly Lock _lock = new();
    private readonly List<ArenaChunk> _chunks = new();     // every live chunk
    private readonly List<ArenaChunk> _withFree = new();   // chunks with at least one free frame
    private int _emptyChunks;                              // live chunks with every frame free
    private readonly int _maxSpareChunks;
    private bool _disposed;

    public int FrameSize { get; }
    public int FramesPerChunk { get; }

    /// <param name="frameSize">the block size</param>
    /// <param name="maxSpareBytes">how much entirely free memory to keep for reuse (at least one
    /// chunk): refilling the cache from kept chunks costs no page faults and no zeroing.</param>
    public PageArena(int frameSize, long maxSpareBytes = ChunkBytes)
    {
        if (frameSize <= 0 || ChunkBytes % frameSize != 0) throw new ArgumentOutOfRangeException(nameof(frameSize));
        FrameSize = frameSize;
        FramesPerChunk = ChunkBytes / frameSize;
        _maxSpareChunks = (int)Math.Clamp(maxSpareBytes / ChunkBytes, 1, int.MaxValue);
    }

    /// <summary>Frames handed out and not yet returned.</summary>
    public long FramesInUse { get { lock (_lock) return _inUse; } }
    /// <summary>Bytes of native memory the arena holds (live chunks).</summary>
    public long BytesReserved { get { lock (_lock) return (long)_chunks.Count * ChunkBytes; } }
    private long _inUse;

    /// <summary>A frame; zero-filled when <paramref name="zeroed"/> (a recycled frame holds old
    /// data; fresh chunk memory is zero already).</summary>
    public PageFrame Rent(bool zeroed)
    {
        ArenaChunk c;
        int idx;
        bool fresh;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_withFree.Count == 0)
            {
                var n = new ArenaChunk(this, _chunks.Count);
                _chunks.Add(n);
                n.FreeSlot = _withFree.Count;
                _withFree.Add(n);
            }
            c = _withFree[^1];
            if (c.FreeCount == FramesPerChunk && c.Touched) _emptyChunks--;
            (idx, fresh) = c.Take();
            if (c.FreeCount == 0) RemoveFromFree(c);
            _inUse++;
        }
        var f = new PageFrame(c, idx);
        if (zeroed && !fresh) f.Span.Clear();
        return f;
    }

    /// <summary>Gives a frame back (see the safety rule above). A chunk whose frames are all free
    /// goes back to the operating system beyond the spare allowance.</summary>
    public void Return(PageFrame f)
    {
        var c = f.Chunk ?? throw new ArgumentException("not a frame of this arena", nameof(f));
        if (c.Arena != this) throw new ArgumentException("not a frame of this arena", nameof(f));
        lock (_lock)
        {
            if (_disposed) return;
            c.Put(f.Index);
            _inUse--;
            if (c.FreeCount == 1) { c.FreeSlot = _withFree.Count; _withFree.Add(c); }
            if (c.FreeCount == FramesPerChunk)
            {
                if (_emptyChunks >= _maxSpareChunks)
                {
                    RemoveFromFree(c);
                    _chunks.Remove(c);
                    c.Release();
                }
                else _emptyChunks++;
            }
        }
    }

    private void RemoveFromFree(ArenaChunk c)
    {
        int slot = c.FreeSlot;
        var last = _withFree[^1];
        _withFree[slot] = last;
        last.FreeSlot = slot;
        _withFree.RemoveAt(_withFree.Count - 1);
        c.FreeSlot = -1;
    }

    /// <summary>Frees every chunk. Called at unmount, after the flusher and the completion
    /// workers stopped: no frame is in use any more.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var c in _chunks) c.Release();
            _chunks.Clear();
            _withFree.Clear();
        }
    }

    /// <summary>A zero-filled, 2 MiB aligned chunk. On Linux it is an anonymous mapping (zero
    /// by definition, returned to the system by munmap) trimmed to alignment and populated;
    /// elsewhere zeroed native memory.</summary>
    internal static unsafe void* AllocChunk()
    {
        if (!OperatingSystem.IsLinux()) return NativeMemory.AllocZeroed(ChunkBytes);
        nint p = Mmap(0, 2 * ChunkBytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == -1) throw new OutOfMemoryException($"page cache: mmap of {2 * ChunkBytes} bytes failed (errno {Marshal.GetLastPInvokeError()})");
        nint aligned = (p + ChunkBytes - 1) & ~(nint)(ChunkBytes - 1);
        if (aligned > p) _ = Munmap(p, (nuint)(aligned - p));
        nint tail = aligned + ChunkBytes, end = p + 2 * ChunkBytes;
        if (end > tail) _ = Munmap(tail, (nuint)(end - tail));
        // Best effort (populating needs Linux 5.14+; older kernels fault frames in on first
        // use): see the class comment for why the chunk is populated now, in one call, and in
        // small pages even where transparent huge pages are on for every mapping.
        _ = Madvise(aligned, ChunkBytes, MadvNoHugepage);
        _ = Madvise(aligned, ChunkBytes, MadvPopulateWrite);
        return (void*)aligned;
    }

    internal static unsafe void FreeChunk(void* p)
    {
        if (!OperatingSystem.IsLinux()) { NativeMemory.Free(p); return; }
        _ = Munmap((nint)p, ChunkBytes);
    }

    private const int ProtRead = 1, ProtWrite = 2, MapPrivate = 2, MapAnonymous = 0x20;

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static extern int Munmap(nint addr, nuint length);

    [DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static extern int Madvise(nint addr, nuint length, int advice);
}

/// <summary>One 2 MiB chunk of frames: a stack of free frame indexes plus a bump pointer for
/// frames never handed out (still zero). Fields guarded by the arena's lock. It is also the
/// <see cref="MemoryManager{T}"/> whose slices let writeback hand page frames to a gathered
/// write without copying.</summary>
internal sealed unsafe class ArenaChunk : MemoryManager<byte>
{
    public readonly PageArena Arena;
    public readonly int Id;
    private byte* _base;
    private readonly int[] _free;
    private int _freeTop;
    private int _bump;
    public int FreeSlot = -1;

    public ArenaChunk(PageArena arena, int id)
    {
        Arena = arena;
        Id = id;
        _base = (byte*)PageArena.AllocChunk();
        _free = new int[arena.FramesPerChunk];
    }

    public int FreeCount => _freeTop + (Arena.FramesPerChunk - _bump);

    /// <summary>Some frame was handed out once (an untouched chunk is not a spare: it is new).</summary>
    public bool Touched => _bump > 0;

    public (int Index, bool Fresh) Take()
    {
        if (_freeTop > 0) return (_free[--_freeTop], false);
        return (_bump++, true);
    }

    public void Put(int index) => _free[_freeTop++] = index;

    public byte* Frame(int index)
    {
        if (_base == null) throw new ObjectDisposedException(nameof(ArenaChunk), "page frame used after its arena was freed");
        return _base + (long)index * Arena.FrameSize;
    }

    public void Release()
    {
        if (_base == null) return;
        PageArena.FreeChunk(_base);
        _base = null;
    }

    public override Span<byte> GetSpan()
    {
        if (_base == null) throw new ObjectDisposedException(nameof(ArenaChunk));
        return new Span<byte>(_base, PageArena.ChunkBytes);
    }

    public override MemoryHandle Pin(int elementIndex = 0) => new(_base + elementIndex);
    public override void Unpin() { }
    protected override void Dispose(bool disposing) { }
}

/// <summary>A page frame: a chunk and an index in it.</summary>
internal readonly struct PageFrame(ArenaChunk chunk, int index)
{
    public readonly ArenaChunk Chunk = chunk;
    public readonly int Index = index;

    public unsafe Span<byte> Span => new(Chunk.Frame(Index), Chunk.Arena.FrameSize);

    /// <summary>The frame as memory, for gathered device writes (no copy).</summary>
    public Memory<byte> Memory => Chunk.Memory.Slice(Index * Chunk.Arena.FrameSize, Chunk.Arena.FrameSize);
}

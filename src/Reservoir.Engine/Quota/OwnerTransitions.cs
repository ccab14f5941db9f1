using System.Runtime.InteropServices;
using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Quota;

/// <summary>
/// One extent's transitions in a transaction: its net change per subvolume (the first
/// subvolume's inline, since most extents have one; any others in <see cref="More"/>), and,
/// when a subvolume wrote it in this transaction, that writer and the transaction
/// (<see cref="BornGeneration"/> 0 when the ledger did not see the write: the caller asks the
/// delayed refs). The slot is in use while <see cref="Net0"/> ≠ 0; an entry whose nets all
/// cancelled is <see cref="IsEmpty"/> and left in place.
/// </summary>
internal struct ExtentTransitions
{
    public ulong Bytenr, NumBytes, BornOwner, BornGeneration, Root0;
    public int Net0;
    public List<(ulong Root, int Net)>? More;
    /// <summary>Bumped by every change of the entry (<see cref="OwnerTransitions"/>'s early
    /// accounting compares it with <see cref="EarlyVersion"/>).</summary>
    public int Version;
    /// <summary>The <see cref="Version"/> the early accounting worked this entry out at (its
    /// numbers are then in the ledger's sums as <see cref="Early"/>), or 0.</summary>
    public int EarlyVersion;
    /// <summary>Waiting in the early accounting's queue; or left to the commit (not a case it
    /// works out early).</summary>
    public bool Queued, CommitOnly;
    public EarlyResult Early;

    /// <summary>Worked out early and unchanged since.</summary>
    public readonly bool IsEarly => EarlyVersion != 0 && EarlyVersion == Version;

    public readonly bool IsEmpty => Net0 == 0 && (More == null || More.Count == 0);

    /// <summary>Exactly one subvolume started referencing the extent and none stopped.</summary>
    public readonly bool OnlyAcquiredBy(ulong root) => Net0 > 0 && Root0 == root && (More == null || More.Count == 0);

    public readonly bool AnyAcquired
    {
        get
        {
            if (Net0 > 0) return true;
            if (More != null) foreach (var (_, n) in More) if (n > 0) return true;
            return false;
        }
    }

    /// <summary>The subvolumes that started (<paramref name="acquired"/>) and stopped
    /// referencing the extent, each in subvolume order; the shared empty array for a side
    /// nobody is on, and <paramref name="single"/>'s one-element array (kept for the last
    /// subvolume asked about) for an extent with one transition. Read-only: one array may
    /// serve many extents.</summary>
    public readonly (ulong[] Acquired, ulong[] Dropped) Split(ref ulong[]? single)
    {
        if (More is not { Count: > 0 })
        {
            if (single == null || single[0] != Root0) single = [Root0];
            return Net0 > 0 ? (single, []) : ([], single);
        }
        int up = Net0 > 0 ? 1 : 0;
        foreach (var (_, n) in More) if (n > 0) up++;
        int all = More.Count + 1;
        ulong[] acquired = up == 0 ? [] : new ulong[up], dropped = up == all ? [] : new ulong[all - up];
        int a = 0, d = 0;
        if (Net0 > 0) acquired[a++] = Root0; else dropped[d++] = Root0;
        foreach (var (r, n) in More)
            if (n > 0) acquired[a++] = r; else dropped[d++] = r;
        if (acquired.Length > 1) Array.Sort(acquired);
        if (dropped.Length > 1) Array.Sort(dropped);
        return (acquired, dropped);
    }

    public readonly int NetOf(ulong root)
    {
        if (Net0 != 0 && Root0 == root) return Net0;
        if (More != null) foreach (var (r, n) in More) if (r == root) return n;
        return 0;
    }

    public void Add(ulong root, int delta)
    {
        if (Net0 != 0 && Root0 == root)
        {
            Net0 += delta;
            if (Net0 == 0 && More is { Count: > 0 }) { (Root0, Net0) = More[^1]; More.RemoveAt(More.Count - 1); }
            return;
        }
        if (More != null)
            for (int i = 0; i < More.Count; i++)
                if (More[i].Root == root)
                {
                    int net = More[i].Net + delta;
                    if (net == 0) More.RemoveAt(i);
                    else More[i] = (root, net);
                    return;
                }
        if (Net0 == 0) (Root0, Net0) = (root, delta);
        else (More ??= new()).Add((root, delta));
    }
}

/// <summary>
/// The running transaction's ledger of EXTENT_OWNER_REF transitions (SPEC.md §5.9): a
/// subvolume whose count of file extent items naming an extent went from 0 to ≥ 1 (+1) or back
/// (−1). Only the net change per (subvolume, extent) matters, so a pair that cancels leaves an
/// empty entry, which the commit skips. Entries are recorded by the operation changing the
/// subvolume's tree, under that tree's write lock, so a snapshot taken under the same lock
/// copies exactly the source's entries its tree already reflects. They are kept per extent as
/// they arrive, in a list of structs with an index by address, so the commit walks them in
/// place: no sort of every entry, no copy, nothing allocated per extent.
/// </summary>
internal sealed partial class OwnerTransitions(IScheduler sched)
{
    private readonly FsMutex _lock = sched.CreateMutex("owner-transitions"); // guards _extents, _index and every entry's More
    private List<ExtentTransitions> _extents = new();
    private Dictionary<ulong, int> _index = new(); // extent address → its entry in _extents

    /// <summary>Records a transition. <paramref name="bornGeneration"/> (≠ 0) says that
    /// <paramref name="root"/> is writing the extent in this transaction (its first file
    /// extent item), which spares the commit the question.</summary>
    public void Note(ulong root, ulong bytenr, ulong numBytes, int delta, ulong bornGeneration = 0)
    {
        using var _ = _lock.Lock();
        ref int i = ref CollectionsMarshal.GetValueRefOrAddDefault(_index, bytenr, out bool exists);
        if (!exists)
        {
            i = _extents.Count;
            _extents.Add(new ExtentTransitions { Bytenr = bytenr, NumBytes = numBytes });
        }
        ref var c = ref CollectionsMarshal.AsSpan(_extents)[i];
        if (bornGeneration != 0) (c.BornOwner, c.BornGeneration) = (root, bornGeneration);
        c.Add(root, delta);
        Changed(ref c, i);
    }

    /// <summary>A snapshot of <paramref name="source"/> taken in this transaction holds what the
    /// source holds now; the commit starts both from the source's committed numbers, so the
    /// snapshot repeats the source's transitions so far. Caller holds the source tree's lock.</summary>
    public void CopyRoot(ulong source, ulong snapshot)
    {
        using var _ = _lock.Lock();
        // A snapshot changes who can reference what (the lineage): nothing worked out early
        // in this transaction holds (the commit sees the lineage moved, too).
        _earlyInvalid = true;
        foreach (ref var c in CollectionsMarshal.AsSpan(_extents))
            if (c.NetOf(source) is var net and not 0) c.Add(snapshot, net);
    }

    /// <summary>Takes every extent's entry, in no particular order (the commit sorts the ones it
    /// searches for), empty ones included; the ledger starts over.</summary>
    public List<ExtentTransitions> Take() => Take(out _);

    /// <summary><see cref="Take"/>, with what the early accounting worked out (null when none
    /// of it can be used: see <see cref="EarlyAccounting"/>).</summary>
    public List<ExtentTransitions> Take(out EarlyAccounting? early)
    {
        using var _ = _lock.Lock();
        var all = _extents;
        // New ones rather than cleared: clearing the index touched every slot of a table the
        // transaction's writes had long pushed out of the caches, inside the commit.
        _extents = new();
        _index = new();
        early = TakeEarly();
        return all;
    }

    /// <summary>
    /// Sorts <paramref name="addresses"/> and returns where each sorted one came from. Extent
    /// addresses are block-aligned, so their low bits are zero: when there are few enough
    /// entries, each index is packed into them and one sort of bare numbers does it all (sorting
    /// the addresses with the indices as items was a sixth of the accounting's time); else the
    /// indices ride along as items.
    /// </summary>
    internal static int[] SortedOrder(ulong[] addresses)
    {
        int n = addresses.Length;
        var order = new int[n];
        // Usually in order already: the ledger lists extents as their writes completed, and a
        // writer's extents are allocated in ascending order. Then no sort (cold after a large
        // rewrite: 7-12 µs for 100 addresses).
        int k = 1;
        while (k < n && addresses[k - 1] <= addresses[k]) k++;
        if (k >= n)
        {
            for (int i = 0; i < n; i++) order[i] = i;
            return order;
        }
        ulong any = 0;
        foreach (var a in addresses) any |= a;
        int freeBits = any == 0 ? 64 : System.Numerics.BitOperations.TrailingZeroCount(any);
        if (freeBits < 63 && (ulong)n <= 1UL << freeBits)
        {
            ulong mask = (1UL << freeBits) - 1;
            for (int i = 0; i < n; i++) addresses[i] |= (uint)i;
            Array.Sort(addresses);
            for (int i = 0; i < n; i++)
            {
                order[i] = (int)(addresses[i] & mask);
                addresses[i] &= ~mask;
            }
            return order;
        }
        for (int i = 0; i < n; i++) order[i] = i;
        Array.Sort(addresses, order);
        return order;
    }
}

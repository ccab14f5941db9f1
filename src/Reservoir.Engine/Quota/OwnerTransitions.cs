using Reservoir.Common.Concurrency;

namespace Reservoir.Engine.Quota;

/// <summary>
/// The running transaction's ledger of EXTENT_OWNER_REF transitions (SPEC.md §5.9): a
/// subvolume whose count of file extent items naming an extent went from 0 to ≥ 1 (+1) or back
/// (−1). Only the net change per (subvolume, extent) matters, so a pair that cancels leaves no
/// entry. Entries are recorded by the operation changing the subvolume's tree, under that
/// tree's write lock, so a snapshot taken under the same lock copies exactly the source's
/// entries its tree already reflects.
/// </summary>
internal sealed class OwnerTransitions(IScheduler sched)
{
    private readonly FsMutex _lock = sched.CreateMutex("owner-transitions"); // guards _net
    private readonly Dictionary<(ulong Root, ulong Bytenr), (ulong NumBytes, int Net)> _net = new();

    public void Note(ulong root, ulong bytenr, ulong numBytes, int delta)
    {
        using var _ = _lock.Lock();
        var k = (root, bytenr);
        int net = (_net.TryGetValue(k, out var v) ? v.Net : 0) + delta;
        if (net == 0) _net.Remove(k);
        else _net[k] = (numBytes, net);
    }

    /// <summary>A snapshot of <paramref name="source"/> taken in this transaction holds what the
    /// source holds now; the commit starts both from the source's committed numbers, so the
    /// snapshot repeats the source's transitions so far. Caller holds the source tree's lock.</summary>
    public void CopyRoot(ulong source, ulong snapshot)
    {
        using var _ = _lock.Lock();
        foreach (var ((r, b), v) in _net.Where(kv => kv.Key.Root == source).ToList()) _net[(snapshot, b)] = v;
    }

    /// <summary>Takes every entry, grouped by extent in address order (so the commit's lookups
    /// of consecutive extents land in the same leaves): (extent, length, subvolumes that
    /// started referencing it, subvolumes that stopped), each in subvolume order. This runs
    /// inside every commit with quotas on, so it sorts the entries once on their bare
    /// addresses (a sort with a comparer was a fifth of the accounting's time) and gives each
    /// extent one array, with the shared empty array on the side nobody is on (lists and a
    /// dictionary per extent were another fifth).</summary>
    public List<(ulong Bytenr, ulong NumBytes, ulong[] Acquired, ulong[] Dropped)> Take()
    {
        ulong[] addresses;
        (ulong Root, ulong NumBytes, int Net)[] entries;
        int n;
        using (_lock.Lock())
        {
            n = _net.Count;
            if (n == 0) return [];
            addresses = new ulong[n];
            entries = new (ulong, ulong, int)[n];
            int i = 0;
            foreach (var ((root, bytenr), (numBytes, net)) in _net)
            {
                addresses[i] = bytenr;
                entries[i++] = (root, numBytes, net);
            }
            _net.Clear();
        }
        var order = SortedOrder(addresses);
        var list = new List<(ulong, ulong, ulong[], ulong[])>(n);
        for (int i = 0; i < n;)
        {
            int j = i + 1;
            while (j < n && addresses[j] == addresses[i]) j++;
            int up = 0;
            for (int k = i; k < j; k++) if (entries[order[k]].Net > 0) up++;
            ulong[] acquired = up == 0 ? [] : new ulong[up], dropped = up == j - i ? [] : new ulong[j - i - up];
            int a = 0, d = 0;
            for (int k = i; k < j; k++)
            {
                var e = entries[order[k]];
                if (e.Net > 0) acquired[a++] = e.Root;
                else dropped[d++] = e.Root;
            }
            if (acquired.Length > 1) Array.Sort(acquired);
            if (dropped.Length > 1) Array.Sort(dropped);
            list.Add((addresses[i], entries[order[i]].NumBytes, acquired, dropped));
            i = j;
        }
        return list;
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

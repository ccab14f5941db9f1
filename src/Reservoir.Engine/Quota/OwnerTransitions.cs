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
    /// started referencing it, subvolumes that stopped), each list in subvolume order. Grouped
    /// in one pass and sorted on the bare addresses: this runs inside every commit with quotas
    /// on (a sort of the entries with a comparer was a fifth of the accounting's time).</summary>
    public List<(ulong Bytenr, ulong NumBytes, List<ulong> Acquired, List<ulong> Dropped)> Take()
    {
        Dictionary<ulong, (ulong NumBytes, List<ulong> Acquired, List<ulong> Dropped)> byExtent;
        using (_lock.Lock())
        {
            if (_net.Count == 0) return [];
            byExtent = new(_net.Count);
            foreach (var ((root, bytenr), (numBytes, net)) in _net)
            {
                if (!byExtent.TryGetValue(bytenr, out var g)) byExtent[bytenr] = g = (numBytes, new List<ulong>(1), new List<ulong>(1));
                (net > 0 ? g.Acquired : g.Dropped).Add(root);
            }
            _net.Clear();
        }
        var addresses = new ulong[byExtent.Count];
        byExtent.Keys.CopyTo(addresses, 0);
        Array.Sort(addresses);
        var list = new List<(ulong, ulong, List<ulong>, List<ulong>)>(addresses.Length);
        foreach (var bytenr in addresses)
        {
            var (numBytes, acquired, dropped) = byExtent[bytenr];
            if (acquired.Count > 1) acquired.Sort();
            if (dropped.Count > 1) dropped.Sort();
            list.Add((bytenr, numBytes, acquired, dropped));
        }
        return list;
    }
}

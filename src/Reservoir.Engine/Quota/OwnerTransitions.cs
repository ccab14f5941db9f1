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

    /// <summary>Takes every entry, grouped by extent in address order: (extent, length,
    /// subvolumes that started referencing it, subvolumes that stopped), each list in
    /// subvolume order. One sort of the entries, not a LINQ grouping: this runs inside every
    /// commit with quotas on.</summary>
    public List<(ulong Bytenr, ulong NumBytes, List<ulong> Acquired, List<ulong> Dropped)> Take()
    {
        (ulong Bytenr, ulong Root, ulong NumBytes, int Net)[] entries;
        using (_lock.Lock())
        {
            if (_net.Count == 0) return [];
            entries = new (ulong, ulong, ulong, int)[_net.Count];
            int i = 0;
            foreach (var ((root, bytenr), (numBytes, net)) in _net) entries[i++] = (bytenr, root, numBytes, net);
            _net.Clear();
        }
        Array.Sort(entries, static (a, b) => a.Bytenr != b.Bytenr ? a.Bytenr.CompareTo(b.Bytenr) : a.Root.CompareTo(b.Root));
        var list = new List<(ulong, ulong, List<ulong>, List<ulong>)>();
        for (int i = 0; i < entries.Length;)
        {
            var (bytenr, _, numBytes, _) = entries[i];
            List<ulong> acquired = [], dropped = [];
            for (; i < entries.Length && entries[i].Bytenr == bytenr; i++)
                (entries[i].Net > 0 ? acquired : dropped).Add(entries[i].Root);
            list.Add((bytenr, numBytes, acquired, dropped));
        }
        return list;
    }
}

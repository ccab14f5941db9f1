using Reservoir.Format.Items;

namespace Reservoir.Engine.Quota;

/// <summary>The definition of qgroup usage, as a full recount computes it (btrfs's
/// semantics): a group references an extent when one of its level-0 members does, and holds
/// it exclusively when every subvolume referencing it is a member.</summary>
internal static class QgroupRecount
{
    /// <summary>Notes that subvolume <paramref name="root"/> references the extent.</summary>
    public static void AddReferrer(Dictionary<ulong, (ulong Len, List<ulong> Roots)> referrers, ulong bytenr, ulong len, ulong root)
    {
        if (!referrers.TryGetValue(bytenr, out var e)) referrers[bytenr] = e = (len, new List<ulong>());
        e.Roots.Add(root);
    }

    /// <param name="extents">Each data extent's length and the subvolumes referencing it.</param>
    /// <param name="members">Each group's level-0 members (a level-0 group is its own).</param>
    public static Dictionary<ulong, (ulong Referenced, ulong Exclusive)> Compute(
        IEnumerable<(ulong Len, List<ulong> Roots)> extents, IReadOnlyDictionary<ulong, HashSet<ulong>> members)
    {
        var result = new Dictionary<ulong, (ulong, ulong)>();
        var higher = members.Where(kv => QgroupId.Level(kv.Key) > 0).ToList();
        foreach (var (len, roots) in extents)
        {
            if (roots.Count == 0) continue;
            foreach (var r in roots)
            {
                ulong id = QgroupId.Of(0, r);
                var (rf, ex) = result.GetValueOrDefault(id);
                result[id] = (rf + len, ex + (roots.Count == 1 ? len : 0));
            }
            foreach (var (id, m) in higher)
            {
                bool any = roots.Any(r => m.Contains(QgroupId.Of(0, r)));
                if (!any) continue;
                bool all = roots.All(r => m.Contains(QgroupId.Of(0, r)));
                var (rf, ex) = result.GetValueOrDefault(id);
                result[id] = (rf + len, ex + (all ? len : 0));
            }
        }
        return result;
    }
}

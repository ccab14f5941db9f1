using System.Runtime.InteropServices;

namespace Reservoir.Engine.Quota;

/// <summary>
/// What one commit's accounting changes in the groups' referenced and exclusive, summed per
/// group and handed to <see cref="Qgroups.Apply"/> once at the end: taking the qgroup lock
/// per extent was a tenth of the accounting. Nothing in the accounting reads a group's
/// numbers, only who references what and the relations (which cannot change during a
/// commit), so summing first gives the same numbers. Used by the committing thread alone,
/// cleared and reused from one commit to the next.
/// </summary>
internal sealed class QgroupDeltas
{
    private readonly Dictionary<ulong, (long Referenced, long Exclusive)> _byGroup = new();
    private readonly Dictionary<ulong, ulong> _writtenAlone = new();

    /// <summary>Group id → (referenced, exclusive) to add. (The dictionaries themselves, not an
    /// interface: enumerating through one boxed the enumerator and dispatched every step.)</summary>
    public Dictionary<ulong, (long Referenced, long Exclusive)> ByGroup => _byGroup;

    /// <summary>Subvolume → bytes it wrote in this transaction and alone references.</summary>
    public Dictionary<ulong, ulong> WrittenAlone => _writtenAlone;

    public void Clear()
    {
        _byGroup.Clear();
        _writtenAlone.Clear();
    }

    public void Add(ulong qgroup, long referenced, long exclusive)
    {
        if (referenced == 0 && exclusive == 0) return;
        ref var d = ref CollectionsMarshal.GetValueRefOrAddDefault(_byGroup, qgroup, out _);
        d = (d.Referenced + referenced, d.Exclusive + exclusive);
    }

    /// <summary>Extents of <paramref name="bytes"/> that <paramref name="subvolume"/> wrote in
    /// this transaction and alone references: its group and every group above it reference
    /// them and hold them exclusively.</summary>
    public void AddWrittenAlone(ulong subvolume, ulong bytes) =>
        CollectionsMarshal.GetValueRefOrAddDefault(_writtenAlone, subvolume, out _) += bytes;

    /// <summary><see cref="AddWrittenAlone"/> or, negative, taking back bytes added before
    /// (the early accounting's sums, when an extent it worked out changes again).</summary>
    public void AddWrittenAlone(ulong subvolume, long bytes) =>
        CollectionsMarshal.GetValueRefOrAddDefault(_writtenAlone, subvolume, out _) += unchecked((ulong)bytes);

    /// <summary>Adds every sum of <paramref name="other"/> (the early accounting's).</summary>
    public void AddFrom(QgroupDeltas other)
    {
        foreach (var (id, (r, e)) in other._byGroup) Add(id, r, e);
        foreach (var (subvolume, bytes) in other._writtenAlone) if (bytes != 0) AddWrittenAlone(subvolume, bytes);
    }

    /// <summary>
    /// The level-0 groups for one extent of <paramref name="len"/> bytes: those that started
    /// referencing it gain it, those that stopped lose it, and exclusive moves for the one
    /// sole referrer before or after, if there is one. <paramref name="after"/> is who
    /// references it now (the acquired ones first), all of them when
    /// <paramref name="complete"/>; when not complete, two or more others reference it before
    /// and after, so no one's exclusive changes.
    /// </summary>
    public void AccountExtent(ulong len, ulong[] acquired, ulong[] dropped, List<ulong> after, bool complete)
    {
        foreach (var r in acquired) Add(Qgroups.ForSubvolume(r), (long)len, 0);
        foreach (var r in dropped) Add(Qgroups.ForSubvolume(r), -(long)len, 0);
        if (!complete) return;
        // Who referenced it before: those now, less the ones that just started, plus the ones
        // that just stopped (a subvolume is in at most one of the two lists). Counted, not
        // listed: only a sole referrer matters.
        int before = dropped.Length;
        ulong sole = dropped.Length == 1 ? dropped[0] : 0;
        foreach (var r in after)
            if (Array.IndexOf(acquired, r) < 0) { before++; sole = r; }
        if (before == 1) Add(Qgroups.ForSubvolume(sole), 0, -(long)len);
        if (after.Count == 1) Add(Qgroups.ForSubvolume(after[0]), 0, (long)len);
    }
}

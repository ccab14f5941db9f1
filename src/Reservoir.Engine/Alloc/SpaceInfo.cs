namespace Reservoir.Engine.Alloc;

/// <summary>
/// Space counters for one kind of extent, as btrfs's space_info (see design notes A):
/// - Total: capacity of the block groups of this kind;
/// - Used: bytes in live extents;
/// - Pinned: freed in the running transaction, reusable only after its commit;
/// - MayUse: promised to reservations that have not allocated yet.
/// Free = Total − Used − Pinned − MayUse (negative means overcommitted into unallocated space).
/// Guarded by the SpaceManager's lock.
/// </summary>
internal sealed class SpaceInfo(string name)
{
    public string Name { get; } = name;
    public ulong Total;
    public ulong Used;
    public ulong Pinned;
    public ulong MayUse;
    /// <summary>Times a release or free would have taken a counter below zero (a bug).</summary>
    public long Underflows;

    public long Free => (long)Total - (long)Used - (long)Pinned - (long)MayUse;

    public static void Sub(ref ulong counter, ulong v, SpaceInfo owner)
    {
        if (v > counter) { owner.Underflows++; counter = 0; }
        else counter -= v;
    }

    public override string ToString() => $"{Name}: total {Total} used {Used} pinned {Pinned} may_use {MayUse}";
}

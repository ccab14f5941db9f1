namespace Reservoir.Engine.Alloc;

/// <summary>
/// Space counters for one kind of extent, as btrfs's space_info (see design notes A):
/// - Total: capacity of the block groups of this kind;
/// - Used: bytes of extents the extent tree has (or gets in the running commit);
/// - Reserved: data extents allocated at writeback or direct IO whose EXTENT_ITEM is not
///   inserted yet (btrfs's block-group reserved bytes): allocation happens outside any
///   transaction handle, so it must not move what a commit writes as used;
/// - Pinned: freed in the running transaction, reusable only after its commit;
/// - MayUse: promised to reservations that have not allocated yet.
/// Free = Total − Used − Reserved − Pinned − MayUse (negative means overcommitted into unallocated space).
/// Guarded by the SpaceManager's lock.
/// </summary>
internal sealed class SpaceInfo(string name)
{
    public string Name { get; } = name;
    public ulong Total;
    public ulong Used;
    public ulong Reserved;
    public ulong Pinned;
    public ulong MayUse;
    /// <summary>Times a release or free would have taken a counter below zero (a bug).</summary>
    public long Underflows;

    public long Free => (long)Total - (long)Used - (long)Reserved - (long)Pinned - (long)MayUse;

    public static void Sub(ref ulong counter, ulong v, SpaceInfo owner)
    {
        if (v > counter) { owner.Underflows++; counter = 0; }
        else counter -= v;
    }

    public override string ToString() => $"{Name}: total {Total} used {Used} reserved {Reserved} pinned {Pinned} may_use {MayUse}";
}

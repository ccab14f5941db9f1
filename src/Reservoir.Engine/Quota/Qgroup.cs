namespace Reservoir.Engine.Quota;

/// <summary>One quota group's numbers. Guarded by <see cref="Qgroups"/>' lock.</summary>
internal sealed class Qgroup(ulong id)
{
    public ulong Id { get; } = id;
    /// <summary>Bytes of data extents charged to this group, as of the last commit.</summary>
    public ulong Referenced, Exclusive;
    public ulong MaxReferenced = ulong.MaxValue, MaxExclusive = ulong.MaxValue;
    /// <summary>The limits differ from the group's QGROUP_LIMIT item (a new group has none
    /// yet). Usage changes at almost every commit and limits almost never: the item, in
    /// another leaf than the QGROUP_INFO once there are a few hundred groups, is written only
    /// when this is set.</summary>
    public bool LimitDirty = true;
    /// <summary>Data bytes reserved for writes not yet accounted (btrfs's rsv.values[DATA]).</summary>
    public ulong RsvData;
    public long Underflows;
}

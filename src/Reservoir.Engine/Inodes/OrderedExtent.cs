namespace Reservoir.Engine.Inodes;

internal enum OrderedKind : byte
{
    /// <summary>Copy-on-write into a newly allocated extent.</summary>
    Regular,
    /// <summary>In place, into a preallocated extent (converted to regular when finished).</summary>
    Prealloc,
    /// <summary>A direct-IO write into a newly allocated extent.</summary>
    Direct,
    /// <summary>In place, into a written extent of a no-CoW file (no checksums).</summary>
    NoCow,
}

/// <summary>
/// Data on its way to disk whose file extent items are not in the tree yet (btrfs's
/// btrfs_ordered_extent). It carries what its range owned when it was created: the qgroup
/// reservation (<see cref="QgroupRsv"/>, released from the inode's ledger at creation, seed 000)
/// and a metadata reservation for the handle that finishes it. Finishing inserts the items and
/// hands <see cref="QgroupRsv"/> to the transaction, whose commit frees it once the extent is
/// accounted. State guarded by the mapping's state lock.
/// </summary>
internal sealed class OrderedExtent
{
    public ulong FileOffset;
    public ulong NumBytes;
    public ulong DiskBytenr;
    public ulong DiskNumBytes;
    /// <summary>For Prealloc: where in the preallocated disk extent the range starts.</summary>
    public ulong ExtentOffset;
    public OrderedKind Kind;
    public ulong QgroupRsv;
    public ulong MetaRsv;
    public ulong BytesLeft;
    public bool IoDone;
    public bool IoError;
    public bool Complete;
    public bool Truncated;
    /// <summary>Block checksums of the data written, computed at submission.</summary>
    public uint[] Csums = [];

    public ulong End => FileOffset + NumBytes;
    public override string ToString() => $"OE {Kind} file [{FileOffset}, +{NumBytes}) disk {DiskBytenr} qgroup_rsv {QgroupRsv} meta_rsv {MetaRsv}{(IoDone ? " io-done" : "")}{(Complete ? " complete" : "")}";
}

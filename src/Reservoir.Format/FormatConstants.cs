namespace Reservoir.Format;

/// <summary>Constants of on-disk format v1; docs/SPEC.md is the authority and cites these.</summary>
public static class FormatConstants
{
    /// <summary>"RSRVOIR1" read as a little-endian u64.</summary>
    public const ulong Magic = 0x3152494F56525352UL;
    public const uint FormatVersion = 1;
    public const int SuperblockSize = 4096;

    /// <summary>Byte offsets of the superblock copies. A copy exists only if it fits on the
    /// device; the first 1 MiB is never allocated (boot loaders, partition tables).</summary>
    public static readonly ulong[] SuperblockOffsets = [64UL << 10, 256UL << 10, 64UL << 20, 256UL << 30];
    public const ulong ReservedPrefix = 1UL << 20;

    public const int MinBlockSize = 4096;
    public const int MaxBlockSize = 65536;
    public const int MinNodeSize = 4096;
    public const int MaxNodeSize = 65536;
    public const int DefaultBlockSize = 4096;
    public const int DefaultNodeSize = 16384;
    public const int MaxLevel = 8;
    public const int MaxNameLength = 255;
    public const int LabelSize = 256;
    public const ulong MinDeviceSize = 8UL << 20;
    /// <summary>Largest file size: offsets stay well inside i64 for lseek and FUSE.</summary>
    public const ulong MaxFileSize = 1UL << 60;

    /// <summary>First inode number of every fs tree; the root directory.</summary>
    public const ulong FirstFreeObjectId = 256;
    public const ulong RootDirObjectId = 256;
}

/// <summary>Well-known tree ids (owner field of node headers, ROOT_ITEM objectids).</summary>
public static class TreeIds
{
    public const ulong RootTree = 1;
    public const ulong ExtentTree = 2;
    public const ulong FsTree = 5;
    public const ulong CsumTree = 7;
    public const ulong QuotaTree = 8;
    public const ulong FirstSubvolume = 256;
    /// <summary>Objectid of orphan items in an fs tree (-5).</summary>
    public const ulong OrphanObjectId = unchecked((ulong)-5L);
    /// <summary>Objectid of EXTENT_OWNER_REF items in an fs tree (-4): above every inode
    /// number and the orphan items, so inode scans never meet them (SPEC.md §5.9).</summary>
    public const ulong OwnerRefObjectId = unchecked((ulong)-4L);
    /// <summary>Objectid of checksum items in the csum tree (-10).</summary>
    public const ulong CsumObjectId = unchecked((ulong)-10L);
}

/// <summary>Key types. Numbers follow btrfs where the meaning is the same, so readers of
/// btrfs_tree.h find their way.</summary>
public static class KeyTypes
{
    public const byte InodeItem = 1;
    public const byte InodeRef = 12;
    /// <summary>(inode, 13, hash of parent and name): names of the inode that did not fit its
    /// INODE_REF for their directory (SPEC.md §5.2; btrfs's INODE_EXTREF).</summary>
    public const byte InodeExtref = 13;
    public const byte XattrItem = 24;
    public const byte OrphanItem = 48;
    public const byte DirItem = 84;
    public const byte DirIndex = 96;
    public const byte ExtentData = 108;
    public const byte ExtentCsum = 128;
    public const byte RootItem = 132;
    /// <summary>(subvolume, 134, 0) in the root tree, beside its ROOT_ITEM: the usage of the
    /// subvolume's level-0 qgroup, laid out as a QGROUP_INFO (SPEC.md §7, quota version 3). A
    /// commit rewrites the subvolume's ROOT_ITEM whenever its usage changes, so the usage
    /// rides in a leaf the commit writes anyway instead of a quota tree leaf and its path.</summary>
    public const byte SubvolQgroupInfo = 134;
    public const byte RootBackref = 144;
    public const byte RootRef = 156;
    public const byte ExtentItem = 168;
    public const byte MetadataItem = 169;
    public const byte TreeBlockRef = 176;
    public const byte ExtentDataRef = 178;
    /// <summary>(−4, 186, extent address) in an fs tree: how many of this subvolume's file
    /// extent items name the extent (SPEC.md §5.9).</summary>
    public const byte ExtentOwnerRef = 186;
    /// <summary>(extent address, 188, subvolume) in the extent tree: a subvolume that started
    /// referencing the extent other than by writing it or inheriting it from a snapshot source.</summary>
    public const byte SharedRootRef = 188;
    /// <summary>(extent address, 189, subvolume) in the extent tree: an origin of the extent (its
    /// writer, or a subvolume with a SHARED_ROOT_REF) stopped referencing it in the transaction
    /// the item holds, and has not referenced it since; snapshots of it taken after that cannot
    /// have inherited the extent from it.</summary>
    public const byte OriginDrop = 189;
    /// <summary>(subvolume, 190, snapshot source) in the root tree: where a snapshot came from.</summary>
    public const byte SnapshotLineage = 190;
    /// <summary>(extent address, 191, 0) in the extent tree: where the quota accounting's search
    /// for the extent's referrers got to (a cursor over subvolume ids and the referrers known),
    /// kept for extents whose search was long (quota version 5).</summary>
    public const byte ReferrerEntry = 191;
    public const byte BlockGroupItem = 192;
    public const byte QgroupStatus = 240;
    public const byte QgroupInfo = 242;
    public const byte QgroupLimit = 244;
    public const byte QgroupRelation = 246;

    public static string Name(byte t) => t switch
    {
        InodeItem => "INODE_ITEM",
        InodeRef => "INODE_REF",
        InodeExtref => "INODE_EXTREF",
        XattrItem => "XATTR_ITEM",
        OrphanItem => "ORPHAN_ITEM",
        DirItem => "DIR_ITEM",
        DirIndex => "DIR_INDEX",
        ExtentData => "EXTENT_DATA",
        ExtentCsum => "EXTENT_CSUM",
        RootItem => "ROOT_ITEM",
        SubvolQgroupInfo => "SUBVOL_QGROUP_INFO",
        RootBackref => "ROOT_BACKREF",
        RootRef => "ROOT_REF",
        ExtentItem => "EXTENT_ITEM",
        MetadataItem => "METADATA_ITEM",
        TreeBlockRef => "TREE_BLOCK_REF",
        ExtentDataRef => "EXTENT_DATA_REF",
        BlockGroupItem => "BLOCK_GROUP_ITEM",
        ExtentOwnerRef => "EXTENT_OWNER_REF",
        SharedRootRef => "SHARED_ROOT_REF",
        OriginDrop => "ORIGIN_DROP",
        ReferrerEntry => "REFERRER_ENTRY",
        SnapshotLineage => "SNAPSHOT_LINEAGE",
        QgroupRelation => "QGROUP_RELATION",
        QgroupStatus => "QGROUP_STATUS",
        QgroupInfo => "QGROUP_INFO",
        QgroupLimit => "QGROUP_LIMIT",
        _ => $"TYPE_{t}",
    };
}

/// <summary>Feature flags; the masks say which bits this build understands. Unknown incompat
/// bits refuse the mount; unknown ro-compat bits allow read-only only.</summary>
public static class Features
{
    /// <summary>compat_ro bit 0: quota groups are enabled and kept in the quota tree (SPEC.md
    /// §7). A version that does not know them may read the image but must not write it, or
    /// usage would go stale.</summary>
    public const ulong CompatRoQuota = 1;

    /// <summary>incompat bit 0: the image has (or had) subvolumes besides the top-level one
    /// (SPEC.md §5.7): directory entries may name a subvolume instead of an inode, which a
    /// version that does not know them would misread as a missing inode.</summary>
    public const ulong IncompatSubvolumes = 1;

    /// <summary>incompat bit 1: the image has (or had) snapshots (SPEC.md §5.8): tree blocks
    /// may have several parents and a leaf's data back-references name its owner, which a
    /// version that frees a block with its first parent would corrupt.</summary>
    public const ulong IncompatSnapshots = 2;

    /// <summary>incompat bit 2, in a superblock only: its commit was written with a single
    /// flush (SPEC.md §1) and must be checked whole before it is trusted; the copy written at a
    /// clean unmount does not carry it. A version that does not know the check must not trust
    /// such a superblock after a power cut, so it refuses the mount (as ext4's needs_recovery).</summary>
    public const ulong IncompatUnverifiedCommit = 4;

    /// <summary>incompat bit 3, in a superblock only: the fsync log at its log_start may hold
    /// changes fsync made durable after this commit (SPEC.md §9), which the mount replays. A
    /// version that does not know the log would lose them, so it refuses the mount. The copy
    /// written at a clean unmount has no log and does not carry it.</summary>
    public const ulong IncompatFsyncLog = 8;

    /// <summary>incompat bit 4: some inode has INODE_EXTREF items (SPEC.md §5.2), names that
    /// did not fit the INODE_REF of their directory (many hard links in one directory). A version
    /// that does not know them would find names without a back-reference and fail to unlink
    /// them, so it refuses the mount (btrfs's EXTENDED_IREF).</summary>
    public const ulong IncompatExtendedIref = 16;

    /// <summary>incompat bit 5: the block groups are cut with the superblock's group_size, not
    /// the size derived from total_bytes (SPEC.md §1): the filesystem was resized after mkfs.
    /// A version that derives the size would find no block group on a slot, so it refuses the
    /// mount.</summary>
    public const ulong IncompatGroupSize = 32;

    /// <summary>The names of the feature bits set in <paramref name="compatRo"/> and
    /// <paramref name="incompat"/> (SPEC.md §6), unknown ones as their bit number.</summary>
    public static IEnumerable<string> Names(ulong compatRo, ulong incompat)
    {
        (ulong Bit, string Name)[] ro = [(CompatRoQuota, "QUOTA")];
        (ulong Bit, string Name)[] inc = [(IncompatSubvolumes, "SUBVOLUMES"), (IncompatSnapshots, "SNAPSHOTS"), (IncompatUnverifiedCommit, "UNVERIFIED_COMMIT"),
            (IncompatFsyncLog, "FSYNC_LOG"), (IncompatExtendedIref, "EXTENDED_IREF"), (IncompatGroupSize, "GROUP_SIZE")];
        foreach (var (word, known) in new[] { (compatRo, ro), (incompat, inc) })
            for (int b = 0; b < 64; b++)
                if ((word & (1UL << b)) != 0)
                    yield return known.FirstOrDefault(k => k.Bit == 1UL << b).Name ?? $"bit {b}";
    }

    public const ulong CompatSupported = 0;
    public const ulong CompatRoSupported = CompatRoQuota;
    public const ulong IncompatSupported = IncompatSubvolumes | IncompatSnapshots | IncompatUnverifiedCommit | IncompatFsyncLog | IncompatExtendedIref | IncompatGroupSize;
}

/// <summary>Block group type flags (BLOCK_GROUP_ITEM.flags, EXTENT_ITEM.flags).</summary>
[Flags]
public enum BlockGroupFlags : ulong
{
    Data = 1,
    Metadata = 2,
}

[Flags]
public enum ExtentFlags : ulong
{
    Data = 1,
    TreeBlock = 2,
}

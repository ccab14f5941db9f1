using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine.Alloc;
using Reservoir.Engine.Tree;
using Reservoir.Format;

namespace Reservoir.Engine.Tx;

internal sealed partial class FsInfo
{
    /// <summary>
    /// Writes a new, empty filesystem: one metadata and one data block group, empty extent,
    /// checksum and root trees, and a top-level subvolume whose root directory
    /// <paramref name="populate"/> creates. Everything is written by the ordinary commit path.
    /// </summary>
    public static void Mkfs(IBlockDevice dev, MkfsOptions o, Action<FsInfo, TransHandle> populate, Common.Concurrency.IScheduler sched)
    {
        if (!IsPow2(o.BlockSize) || o.BlockSize < FormatConstants.MinBlockSize || o.BlockSize > FormatConstants.MaxBlockSize)
            throw new FsException(Errno.EINVAL, $"block size {o.BlockSize} must be a power of two from {FormatConstants.MinBlockSize} to {FormatConstants.MaxBlockSize}");
        if (!IsPow2(o.NodeSize) || o.NodeSize < FormatConstants.MinNodeSize || o.NodeSize > FormatConstants.MaxNodeSize || o.NodeSize < o.BlockSize)
            throw new FsException(Errno.EINVAL, $"node size {o.NodeSize} must be a power of two from {FormatConstants.MinNodeSize} to {FormatConstants.MaxNodeSize}, at least the block size");
        if (dev.Size < FormatConstants.MinDeviceSize)
            throw new FsException(Errno.EINVAL, $"device of {Units.Human(dev.Size)} is smaller than the minimum {Units.Human(FormatConstants.MinDeviceSize)}");
        if (System.Text.Encoding.UTF8.GetByteCount(o.Label) >= FormatConstants.LabelSize)
            throw new FsException(Errno.EINVAL, $"label longer than {FormatConstants.LabelSize - 1} bytes");
        ulong total = dev.Size / (ulong)o.NodeSize * (ulong)o.NodeSize;
        var sb = new Superblock
        {
            BlockSize = (uint)o.BlockSize,
            NodeSize = (uint)o.NodeSize,
            TotalBytes = total,
            Fsid = o.Uuid ?? Guid.NewGuid(),
            Created = Timespec.Now(),
            Label = o.Label,
            Generation = 0,
        };
        ulong groupSize = Geometry.DerivedGroupSize(total, o.NodeSize);
        sb.GroupSize = groupSize; // for readers (inspect); authoritative only once resized (GROUP_SIZE)
        if (total < FormatConstants.ReservedPrefix + 2 * groupSize)
            throw new FsException(Errno.EINVAL, $"device of {Units.Human(dev.Size)} is too small for node size {o.NodeSize}");
        var space = new SpaceManager(sched, total, o.BlockSize, o.NodeSize, groupSize);
        var opts = new MountOptions { Scheduler = sched, CommitIntervalMs = 0 };
        var fs = new FsInfo(dev, sb, opts, space, 0);
        // Wipe stale superblocks of a previous filesystem before anything else is written.
        var zero = new byte[FormatConstants.SuperblockSize];
        foreach (var off in FormatConstants.SuperblockOffsets)
            if (off + FormatConstants.SuperblockSize <= dev.Size) dev.Write(off, zero);
        space.AddGroup(FormatConstants.ReservedPrefix, groupSize, BlockGroupFlags.Metadata, onDisk: false);
        space.AddGroup(FormatConstants.ReservedPrefix + groupSize, Math.Min(groupSize, total - FormatConstants.ReservedPrefix - groupSize), BlockGroupFlags.Data, onDisk: false);
        var h = new TransHandle(fs, fs.Running, 0, holdsCommitLock: false);
        fs.RootTree = new BTree(TreeIds.RootTree, fs.Store, BTree.NewEmptyRoot(h, TreeIds.RootTree), sched);
        fs.ExtentTree = new BTree(TreeIds.ExtentTree, fs.Store, BTree.NewEmptyRoot(h, TreeIds.ExtentTree), sched) { RootChanged = true };
        fs.CsumTree = new BTree(TreeIds.CsumTree, fs.Store, BTree.NewEmptyRoot(h, TreeIds.CsumTree), sched) { RootChanged = true };
        var fsTree = new BTree(TreeIds.FsTree, fs.Store, BTree.NewEmptyRoot(h, TreeIds.FsTree), sched) { RootChanged = true };
        fs._fsTrees[TreeIds.FsTree] = fsTree;
        populate(fs, h);
        fs.Commit();
        fs.WriteCleanSuperblock(); // a new image needs no check at its first mount
    }

    private static bool IsPow2(int v) => v > 0 && (v & (v - 1)) == 0;
}

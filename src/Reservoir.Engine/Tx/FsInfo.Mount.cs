using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Alloc;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Tx;

internal sealed partial class FsInfo
{
    /// <summary>
    /// The superblock to mount: of the valid copies, the newest whose commit is whole. A copy
    /// marked unverified (its commit used a single flush, SPEC.md §1) is trusted only once
    /// <see cref="CommitVerifier"/> has found every block and data extent of its generation on
    /// the device; otherwise the power cut came during that flush, and the previous commit,
    /// which the other primary slot still holds, is used (with a note). Of one generation, the
    /// copy written at a clean unmount is taken first and needs no check.
    /// </summary>
    public static (Superblock Sb, List<string> Notes) ReadSuperblock(IBlockDevice dev, IScheduler? sched = null) =>
        ReadSuperblock(dev, sched, out _);

    /// <param name="newestSeen">The highest generation of any valid copy, whole or not: the
    /// next commit takes a higher one, so that a torn commit's leftovers (a backup copy of it,
    /// its blocks) never share a generation with a later commit.</param>
    public static (Superblock Sb, List<string> Notes) ReadSuperblock(IBlockDevice dev, IScheduler? sched, out ulong newestSeen)
    {
        var notes = new List<string>();
        var valid = new List<Superblock>();
        var buf = new byte[FormatConstants.SuperblockSize];
        foreach (var off in FormatConstants.SuperblockOffsets)
        {
            if (off + FormatConstants.SuperblockSize > dev.Size) continue;
            try { dev.Read(off, buf); }
            catch (FsException ex) { notes.Add($"superblock copy at {off}: {ex.Message}"); continue; }
            var sb = Superblock.TryRead(buf, off, out string err);
            if (sb == null) { notes.Add($"superblock copy at {off}: {err}"); continue; }
            if (sb.TotalBytes > dev.Size)
            {
                notes.Add($"superblock copy at {off}: filesystem is {sb.TotalBytes} bytes but the device has {dev.Size} (truncated image?)");
                continue;
            }
            valid.Add(sb);
        }
        if (valid.Count == 0)
        {
            if (dev.Size < FormatConstants.SuperblockOffsets[0] + FormatConstants.SuperblockSize)
                throw new FsException(Errno.EINVAL, $"device of {dev.Size} bytes is too small to hold a Reservoir filesystem");
            throw new FsException(Errno.EINVAL, "not a valid Reservoir filesystem: " + string.Join("; ", notes));
        }
        static bool Unverified(Superblock s) => (s.Incompat & Features.IncompatUnverifiedCommit) != 0;
        newestSeen = valid.Max(s => s.Generation);
        var checkedCommits = new Dictionary<(ulong, ulong), string?>();
        foreach (var sb in valid.OrderByDescending(s => s.Generation).ThenBy(s => Unverified(s) ? 1 : 0))
        {
            if (!Unverified(sb)) return (sb, notes);
            // One check per commit (its copies share generation and root), one note per failure.
            if (!checkedCommits.TryGetValue((sb.Generation, sb.RootTreeBytenr), out var why))
            {
                checkedCommits[(sb.Generation, sb.RootTreeBytenr)] = why = CommitVerifier.Check(dev, sb, sched);
                if (why != null) notes.Add($"commit {sb.Generation} did not reach the device whole ({why}): the power was cut while it was written; using the commit before it");
            }
            if (why == null) return (sb, notes);
        }
        throw new FsException(Errno.EUCLEAN, "no superblock copy points at a whole commit: " + string.Join("; ", notes));
    }

    public static FsInfo Mount(IBlockDevice dev, MountOptions opts)
    {
        var (sb, notes) = ReadSuperblock(dev, opts.Scheduler, out ulong newestSeen);
        if ((sb.Incompat & ~Features.IncompatSupported) != 0)
            throw new FsException(Errno.EINVAL, $"filesystem uses unsupported incompatible features 0x{sb.Incompat & ~Features.IncompatSupported:x}");
        if ((sb.CompatRo & ~Features.CompatRoSupported) != 0 && !opts.ReadOnly && !dev.ReadOnly)
            throw new FsException(Errno.EROFS, $"filesystem uses read-only-compatible features 0x{sb.CompatRo & ~Features.CompatRoSupported:x} this version does not know: mount read-only");
        var space = new SpaceManager(opts.Scheduler, sb.TotalBytes, (int)sb.BlockSize, (int)sb.NodeSize, sb.EffectiveGroupSize);
        var fs = new FsInfo(dev, sb, opts, space, newestSeen);
        foreach (var n in notes) fs.Warn(n);
        fs.LoadTrees();
        return fs;
    }

    private void LoadTrees()
    {
        var rootNode = Store.Read(Super.RootTreeBytenr, 0, Super.RootTreeLevel);
        if (rootNode.Generation > Super.Generation)
            ThrowHelper.Corrupt($"root tree generation {rootNode.Generation} is newer than the superblock's {Super.Generation}", Super.RootTreeBytenr);
        RootTree = new BTree(TreeIds.RootTree, Store, rootNode, Sched);
        ExtentTree = LoadTree(TreeIds.ExtentTree) ?? throw new CorruptionException("the root tree has no extent tree");
        CsumTree = LoadTree(TreeIds.CsumTree) ?? throw new CorruptionException("the root tree has no checksum tree");
        var fsTree = LoadTree(TreeIds.FsTree) ?? throw new CorruptionException("the root tree has no top-level subvolume");
        _fsTrees[TreeIds.FsTree] = fsTree;
        LoadSubvolumeTrees();
        foreach (var t in new[] { RootTree, ExtentTree, CsumTree }.Concat(_fsTrees.Values)) NoteNodeLevel(t.Root.Level);
        LoadSpace();
        if ((Super.CompatRo & Features.CompatRoQuota) != 0) LoadQuota();
        if (QuotaTree != null) NoteNodeLevel(QuotaTree.Root.Level);
        // Ids handed out while quotas were on are not handed out again (FsInfo.ReferrerEntryItems.cs).
        using (_treesLock.Lock()) _highestIdAtMount = _lastSubvolumeId = Math.Max(_lastSubvolumeId, _quotaIdsUpTo);
    }

    private BTree? LoadTree(ulong id)
    {
        var data = RootTree.Get(new Key(id, KeyTypes.RootItem, 0));
        if (data == null) return null;
        if (data.Length != RootItem.Size) ThrowHelper.Corrupt($"ROOT_ITEM of tree {id} has {data.Length} bytes");
        var ri = RootItem.Read(data);
        if (ri.Level >= FormatConstants.MaxLevel) ThrowHelper.Corrupt($"tree {id} root level {ri.Level}");
        var node = Store.Read(ri.Bytenr, ri.Generation, ri.Level);
        return new BTree(id, Store, node, Sched) { LastSnapshot = ri.LastSnapshot };
    }

    /// <summary>Builds the in-memory free space from the extent tree: block groups first, then
    /// every extent marks its range used.</summary>
    private void LoadSpace()
    {
        var groups = new List<(Key Key, BlockGroupItem Item)>();
        var extents = new List<(ulong Start, ulong Len, bool Data)>();
        var path = new TreePath();
        if (ExtentTree.SeekGE(Key.Min, path))
        {
            do
            {
                var k = path.Key;
                switch (k.Type)
                {
                    case KeyTypes.BlockGroupItem:
                        if (!BlockGroupItem.TryRead(path.Data, out var bg)) ThrowHelper.Corrupt($"malformed BLOCK_GROUP_ITEM {k}");
                        groups.Add((k, bg));
                        break;
                    case KeyTypes.ExtentItem:
                        extents.Add((k.ObjectId, k.Offset, true));
                        break;
                    case KeyTypes.MetadataItem:
                        extents.Add((k.ObjectId, (ulong)NodeSize, false));
                        break;
                }
            } while (ExtentTree.Next(path));
        }
        if (groups.Count == 0) ThrowHelper.Corrupt("the extent tree has no block groups");
        var groupSize = groups[0].Key.Offset;
        foreach (var (k, item) in groups)
        {
            var g = Space.AddGroup(k.ObjectId, k.Offset, item.Flags, onDisk: true);
            g.Dirty = false;
        }
        foreach (var (s, l, d) in extents) Space.MarkAllocated(s, l, d);
        foreach (var (k, item) in groups)
        {
            var g = Space.GroupOf(k.ObjectId)!;
            if (g.Used != item.Used)
            {
                Warn($"block group {k.ObjectId}: item says {item.Used} bytes used, extents add up to {g.Used}; using the extents");
                g.Dirty = true;
            }
        }
        // Which groups and slots of a sparse image the host has given their room, so that no
        // reservation counts on space the host may refuse at the write (SpaceManager.HostRoom.cs).
        if (!ReadOnly && !Space.AttachHost(Device.HasRoom, Device.MakeRoom))
            Warn("the image's host has no room for all of its metadata groups: a commit may fail when the host refuses a write; free some room on the host");
    }
}

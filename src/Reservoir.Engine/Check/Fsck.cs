using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Device;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Check;

public sealed class FsckOptions
{
    /// <summary>Repair what can be recomputed (link counts, sizes, usage counters, orphans).</summary>
    public bool Repair { get; set; }
    /// <summary>Read every data block and verify its checksum.</summary>
    public bool CheckDataCsums { get; set; }
    public Action<string>? Progress { get; set; }
}

/// <summary>
/// Checks every invariant of the format (SPEC.md §8) by reading the image directly, without
/// mounting it: node structure and generations, tree-block and data-extent references against
/// the extent tree, block group usage, free space, checksums, inodes, names and link counts.
/// </summary>
public sealed partial class Fsck
{
    private readonly IBlockDevice _dev;
    private readonly FsckOptions _o;
    private readonly FsckReport _r = new();
    private Superblock _sb = null!;
    private NodeStore _store = null!;
    private TreeWalker _walker = null!;

    // extent tree
    private readonly List<(ulong Start, ulong Len, BlockGroupItem Item)> _groups = new();
    private readonly Dictionary<ulong, (int Level, ExtentItem Item)> _metaItems = new();
    private readonly Dictionary<ulong, (ulong Len, ExtentItem Item)> _dataExtents = new();
    private readonly Dictionary<ulong, Dictionary<(ulong, ulong, ulong), long>> _dataRefs = new();
    private readonly Dictionary<ulong, int> _csums = new();
    private readonly Dictionary<ulong, RootItem> _roots = new();
    // fs tree
    private readonly Dictionary<ulong, InodeItem> _inodes = new();
    /// <summary>Every name each inode's INODE_REFs and INODE_EXTREFs record (a set: an inode may
    /// have 65,000 names).</summary>
    private readonly Dictionary<ulong, HashSet<(ulong Parent, ulong Index, string Name)>> _inodeRefs = new();

    private HashSet<(ulong Parent, ulong Index, string Name)> NamesOf(ulong ino) =>
        _inodeRefs.TryGetValue(ino, out var set) ? set : _inodeRefs[ino] = new();
    private readonly Dictionary<(ulong Dir, string Name), (ulong Child, byte Type, bool Subvol)> _dirItems = new();
    private readonly Dictionary<(ulong Dir, ulong Index), (string Name, ulong Child, byte Type, bool Subvol)> _dirIndex = new();
    /// <summary>The fs tree being walked (its per-tree state above is reset between trees).</summary>
    private ulong _tree = TreeIds.FsTree;
    // root tree: subvolume links and deleted subvolumes
    private readonly Dictionary<(ulong Parent, ulong Child), (ulong DirId, ulong Index, string Name)> _rootRefs = new();
    private readonly Dictionary<(ulong Child, ulong Parent), (ulong DirId, ulong Index, string Name)> _rootBackrefs = new();
    private readonly HashSet<ulong> _deletedSubvols = new();
    private readonly HashSet<(ulong Parent, ulong Child)> _linkedSubvols = new();
    private readonly Dictionary<ulong, List<(ulong Pos, FileExtentItem Fe)>> _fileExtents = new();
    private readonly HashSet<ulong> _orphans = new();
    private readonly HashSet<ulong> _objectIds = new();
    private readonly Dictionary<(ulong Bytenr, ulong Root, ulong Inode, ulong Offset), long> _expectedRefs = new();
    private readonly Dictionary<ulong, ulong> _expectedExtentLen = new();

    // repairs to apply
    private readonly Dictionary<ulong, Action<Inode>> _inodeFixes = new();
    private readonly List<ulong> _orphansToAdd = new();
    private bool _countersNeedCommit;

    private Fsck(IBlockDevice dev, FsckOptions o) { _dev = dev; _o = o; }

    public static FsckReport Run(IBlockDevice dev, FsckOptions? options = null)
    {
        var f = new Fsck(dev, options ?? new FsckOptions());
        try { f.Check(); }
        catch (FsException ex) { f._r.OperationalError = ex.Message; }
        if (f._o.Repair && f._r.OperationalError == null && f._r.Errors.Any()) f.ApplyRepairs();
        return f._r;
    }

    private static string Latin1(ReadOnlySpan<byte> b) => Encoding.Latin1.GetString(b);
    private static string Show(string latin1) => Encoding.UTF8.GetString(Encoding.Latin1.GetBytes(latin1));

    private void Check()
    {
        var (sb, notes) = FsInfo.ReadSuperblock(_dev);
        _sb = sb;
        _r.Generation = sb.Generation;
        foreach (var n in notes) _r.Add(FindingKind.Notice, "superblock", n);
        NoteFsyncLog(sb);
        _store = new NodeStore(_dev, RealScheduler.Instance, (int)sb.NodeSize, sb.Fsid, 64L << 20);
        _walker = new TreeWalker(_store, _r, sb.Generation);
        _o.Progress?.Invoke("root tree");
        _walker.Walk(TreeIds.RootTree, sb.RootTreeBytenr, 0, sb.RootTreeLevel, VisitRoot);
        foreach (var id in new[] { TreeIds.ExtentTree, TreeIds.CsumTree, TreeIds.FsTree })
            if (!_roots.ContainsKey(id)) _r.Add(FindingKind.Structure, "root tree", $"no ROOT_ITEM for tree {id}");
        WalkTree(TreeIds.ExtentTree, "extent tree", VisitExtent);
        WalkTree(TreeIds.CsumTree, "checksum tree", VisitCsum);
        WalkTree(TreeIds.QuotaTree, "quota tree", VisitQuota);
        foreach (var id in _roots.Keys.Where(IsFsTree).OrderBy(i => i).ToList())
        {
            ResetFsTreeState(id);
            WalkTree(id, id == TreeIds.FsTree ? "top-level subvolume" : $"subvolume {id}", (k, d) => VisitFs(id, k, d));
            // A deleted subvolume's tree is half dropped: its extents still count, its
            // namespace is no longer whole.
            if (_deletedSubvols.Contains(id)) continue;
            _o.Progress?.Invoke(id == TreeIds.FsTree ? "cross-checking" : $"cross-checking subvolume {id}");
            CheckInodes();
            if (_o.CheckDataCsums) CheckDataCsums();
        }
        CheckSubvolumeLinks();
        CheckExtents();
        CheckQuota();
    }

    /// <summary>The fsync log after the commit (SPEC.md §9) is not part of the committed
    /// state this checks; it is counted and reported, as a journal needing recovery is.</summary>
    private void NoteFsyncLog(Superblock sb)
    {
        if (sb.LogStart == 0) return;
        var chain = FsInfo.ReadLogChain(_dev, sb, n => _r.Add(FindingKind.Notice, "fsync log", n));
        int records = chain.Sum(b => b.Records.Count);
        if (records > 0)
            _r.Add(FindingKind.Notice, "fsync log", $"{records} record(s) in {chain.Count} block(s) after commit {sb.Generation}, applied at the next read-write mount");
    }

    private static bool IsFsTree(ulong id) => id == TreeIds.FsTree || (id >= TreeIds.FirstSubvolume && id < TreeIds.OrphanObjectId);

    private void ResetFsTreeState(ulong id)
    {
        _tree = id;
        _inodes.Clear(); _inodeRefs.Clear(); _dirItems.Clear(); _dirIndex.Clear();
        _fileExtents.Clear(); _orphans.Clear(); _objectIds.Clear();
    }

    /// <summary>"inode N" in the top-level subvolume, "subvolume S inode N" elsewhere.</summary>
    private string InodeWhere(ulong ino) => _tree == TreeIds.FsTree ? $"inode {ino}" : $"subvolume {_tree} inode {ino}";

    private void WalkTree(ulong id, string name, TreeWalker.ItemVisitor v)
    {
        if (!_roots.TryGetValue(id, out var ri)) return;
        _o.Progress?.Invoke(name);
        _walker.Walk(id, ri.Bytenr, ri.Generation, ri.Level, v);
    }

    private void VisitRoot(Key k, ReadOnlySpan<byte> d)
    {
        switch (k.Type)
        {
            case KeyTypes.RootItem:
                if (d.Length != RootItem.Size) { _r.Add(FindingKind.Structure, "root tree", $"ROOT_ITEM {k.ObjectId} has {d.Length} bytes"); return; }
                _roots[k.ObjectId] = RootItem.Read(d);
                break;
            case KeyTypes.RootRef or KeyTypes.RootBackref:
                if (!RootRef.TryRead(d, out var rr)) { _r.Add(FindingKind.Structure, "root tree", $"malformed {KeyTypes.Name(k.Type)} {k}"); return; }
                var v = (rr.DirId, rr.Sequence, Latin1(rr.Name));
                if (k.Type == KeyTypes.RootRef) _rootRefs[(k.ObjectId, k.Offset)] = v;
                else _rootBackrefs[(k.ObjectId, k.Offset)] = v;
                break;
            case KeyTypes.OrphanItem when k.ObjectId == TreeIds.OrphanObjectId:
                _deletedSubvols.Add(k.Offset);
                break;
            case KeyTypes.SubvolQgroupInfo:
                if (k.Offset != 0 || !QgroupInfoItem.TryRead(d, out var usage)) { _r.Add(FindingKind.Structure, "root tree", $"malformed SUBVOL_QGROUP_INFO {k}"); return; }
                _level0Usage[k.ObjectId] = usage;
                break;
            case KeyTypes.SnapshotLineage:
                if (!U64Item.TryRead(d, out var otransid)) { _r.Add(FindingKind.Structure, "root tree", $"malformed SNAPSHOT_LINEAGE {k}"); return; }
                _lineage[k.ObjectId] = (k.Offset, otransid);
                break;
            default:
                _r.Add(FindingKind.Structure, "root tree", $"unexpected item {k}");
                break;
        }
    }

    /// <summary>Every live subvolume is linked exactly once: ROOT_BACKREF, ROOT_REF and the
    /// parent's directory entry agree (the entries were matched while their tree was checked);
    /// a deleted one (orphan item) has no links left.</summary>
    private void CheckSubvolumeLinks()
    {
        foreach (var id in _roots.Keys.Where(i => i >= TreeIds.FirstSubvolume && IsFsTree(i)))
        {
            string where = $"subvolume {id}";
            var back = _rootBackrefs.Where(kv => kv.Key.Child == id).ToList();
            if (_deletedSubvols.Contains(id))
            {
                if (back.Count > 0) _r.Add(FindingKind.Structure, where, "deleted (orphan item) but still linked");
                else _r.Add(FindingKind.Notice, where, "deleted; its items are dropped at the next mount");
                continue;
            }
            if (back.Count != 1) { _r.Add(FindingKind.Structure, where, $"{back.Count} ROOT_BACKREFs, expected 1"); continue; }
            var ((_, parent), link) = back[0];
            if (!_rootRefs.TryGetValue((parent, id), out var fwd) || fwd != link) _r.Add(FindingKind.Structure, where, $"no ROOT_REF in {parent} matching its ROOT_BACKREF");
            if (!_linkedSubvols.Contains((parent, id))) _r.Add(FindingKind.Structure, where, $"no directory entry in subvolume {parent} names it");
        }
        foreach (var ((parent, child), _) in _rootRefs)
            if (!_rootBackrefs.ContainsKey((child, parent))) _r.Add(FindingKind.Structure, $"subvolume {child}", $"ROOT_REF in {parent} without a ROOT_BACKREF");
        foreach (var id in _deletedSubvols)
            if (!_roots.ContainsKey(id)) _r.Add(FindingKind.Structure, $"subvolume {id}", "orphan item for a subvolume without a ROOT_ITEM");
    }

    private void VisitExtent(Key k, ReadOnlySpan<byte> d)
    {
        string where = $"extent tree item {k}";
        switch (k.Type)
        {
            case KeyTypes.BlockGroupItem:
                if (!BlockGroupItem.TryRead(d, out var bg)) { _r.Add(FindingKind.Structure, where, "malformed block group item"); return; }
                _groups.Add((k.ObjectId, k.Offset, bg));
                break;
            case KeyTypes.MetadataItem:
                if (!ExtentItem.TryRead(d, out var mi)) { _r.Add(FindingKind.Structure, where, "malformed METADATA_ITEM"); return; }
                _metaItems[k.ObjectId] = ((int)k.Offset, mi);
                break;
            case KeyTypes.ExtentItem:
                if (!ExtentItem.TryRead(d, out var ei)) { _r.Add(FindingKind.Structure, where, "malformed EXTENT_ITEM"); return; }
                _dataExtents[k.ObjectId] = (k.Offset, ei);
                break;
            case KeyTypes.ExtentDataRef:
                if (!ExtentDataRef.TryRead(d, out var dr)) { _r.Add(FindingKind.Structure, where, "malformed EXTENT_DATA_REF"); return; }
                if (!_dataRefs.TryGetValue(k.ObjectId, out var m)) _dataRefs[k.ObjectId] = m = new();
                var key = (dr.Root, dr.Inode, dr.Offset);
                if (m.ContainsKey(key)) _r.Add(FindingKind.Structure, where, $"duplicate data ref ({dr.Root},{dr.Inode},{dr.Offset})");
                m[key] = dr.Count;
                if (dr.Count == 0) _r.Add(FindingKind.Structure, where, "data ref with count 0");
                break;
            case KeyTypes.SharedRootRef:
                if (!U64Item.TryRead(d, out var since)) { _r.Add(FindingKind.Structure, where, "malformed SHARED_ROOT_REF"); return; }
                _sharedRootRefs.Add((k.ObjectId, k.Offset, since));
                break;
            case KeyTypes.OriginDrop:
                if (!U64Item.TryRead(d, out var until)) { _r.Add(FindingKind.Structure, where, "malformed ORIGIN_DROP"); return; }
                _originDrops.Add((k.ObjectId, k.Offset, until));
                break;
            case KeyTypes.ReferrerEntry:
                if (k.Offset != 0 || !ReferrerEntryItem.TryRead(d, out ulong owner, out ulong gen, out ulong cursor, out int count, out int nsides))
                { _r.Add(FindingKind.Structure, where, "malformed REFERRER_ENTRY"); return; }
                _referrerEntries.Add((k.ObjectId, owner, gen, cursor, ReferrerEntryItem.Ids(d, count), ReferrerEntryItem.Sides(d, count, nsides)));
                break;
            default:
                _r.Add(FindingKind.Structure, where, "unexpected item type in the extent tree");
                break;
        }
    }

    private void VisitCsum(Key k, ReadOnlySpan<byte> d)
    {
        if (k.ObjectId != TreeIds.CsumObjectId || k.Type != KeyTypes.ExtentCsum || d.Length % 4 != 0)
        {
            _r.Add(FindingKind.Structure, $"checksum tree item {k}", "unexpected item");
            return;
        }
        _csums[k.Offset] = d.Length;
    }

    /// <summary>A POSIX ACL attribute (SPEC.md §5.3): valid, a default ACL only on a directory,
    /// none on a symbolic link, and an access ACL agreeing with the inode's permission bits
    /// (the engine writes both in one transaction; the INODE_ITEM, type 1, was visited before
    /// the XATTR_ITEM, type 24).</summary>
    private void CheckAcl(ulong ino, bool isDefault, ReadOnlySpan<byte> value, string where)
    {
        if (PosixAcl.TryParse(value, out var acl) != Errno.OK) { _r.Add(FindingKind.Structure, where, "malformed POSIX ACL"); return; }
        if (acl == null || !_inodes.TryGetValue(ino, out var inode)) return;
        if (Inodes.Mode.IsLnk(inode.Mode)) _r.Add(FindingKind.Structure, where, "a symbolic link with a POSIX ACL");
        else if (isDefault && !Inodes.Mode.IsDir(inode.Mode)) _r.Add(FindingKind.Structure, where, "a default ACL on a file that is no directory");
        else if (!isDefault)
        {
            acl.EquivalentMode(inode.Mode, out uint implied);
            if ((implied & 0x1FF) != (inode.Mode & 0x1FF))
                _r.Add(FindingKind.Structure, where, $"permission bits {Convert.ToString(inode.Mode & 0x1FF, 8)} disagree with the access ACL's {Convert.ToString(implied & 0x1FF, 8)}");
        }
    }

    private void VisitFs(ulong root, Key k, ReadOnlySpan<byte> d)
    {
        string where = $"{InodeWhere(k.ObjectId)} item {KeyTypes.Name(k.Type)} {k.Offset}";
        if (k.ObjectId == TreeIds.OwnerRefObjectId)
        {
            VisitOwnerRef(root, k, d);
            return;
        }
        if (k.ObjectId == TreeIds.OrphanObjectId)
        {
            if (k.Type == KeyTypes.OrphanItem) _orphans.Add(k.Offset);
            else _r.Add(FindingKind.Structure, where, "unexpected item under the orphan objectid");
            return;
        }
        _objectIds.Add(k.ObjectId);
        switch (k.Type)
        {
            case KeyTypes.InodeItem:
                if (d.Length != InodeItem.Size) { _r.Add(FindingKind.Structure, where, "malformed INODE_ITEM"); return; }
                _inodes[k.ObjectId] = InodeItem.Read(d);
                _r.Inodes++;
                break;
            case KeyTypes.InodeRef:
                {
                    var names = NamesOf(k.ObjectId);
                    while (d.Length > 0)
                    {
                        if (!InodeRef.TryRead(d, out var r, out int size)) { _r.Add(FindingKind.Structure, where, "malformed INODE_REF"); return; }
                        if (!names.Add((k.Offset, r.Index, Latin1(r.Name)))) _r.Add(FindingKind.Structure, where, $"name '{Show(Latin1(r.Name))}' recorded twice");
                        d = d[size..];
                    }
                    break;
                }
            case KeyTypes.InodeExtref:
                {
                    // Names that did not fit their INODE_REF (SPEC.md §5.2): filed under the hash of
                    // their parent and name, and only for an image marked EXTENDED_IREF.
                    if ((_sb.Incompat & Features.IncompatExtendedIref) == 0) _r.Add(FindingKind.Structure, where, "INODE_EXTREF in an image without the EXTENDED_IREF feature");
                    // A directory's one name always fits its INODE_REF, where ".." is looked up.
                    if (_inodes.TryGetValue(k.ObjectId, out var owner) && Inodes.Mode.IsDir(owner.Mode)) _r.Add(FindingKind.Structure, where, "a directory's name in an INODE_EXTREF");
                    var names = NamesOf(k.ObjectId);
                    while (d.Length > 0)
                    {
                        if (!InodeExtref.TryRead(d, out var r, out int size)) { _r.Add(FindingKind.Structure, where, "malformed INODE_EXTREF"); return; }
                        if (InodeExtref.Hash(r.Parent, r.Name) != k.Offset) _r.Add(FindingKind.Structure, where, $"name '{Show(Latin1(r.Name))}' filed under the wrong hash");
                        if (!names.Add((r.Parent, r.Index, Latin1(r.Name)))) _r.Add(FindingKind.Structure, where, $"name '{Show(Latin1(r.Name))}' recorded twice");
                        d = d[size..];
                    }
                    break;
                }
            case KeyTypes.DirItem:
                while (d.Length > 0)
                {
                    if (!DirEntry.TryRead(d, out var e, out int size)) { _r.Add(FindingKind.Structure, where, "malformed DIR_ITEM"); return; }
                    if (NameHash.Of(e.Name) != k.Offset) _r.Add(FindingKind.Structure, where, $"entry '{Show(Latin1(e.Name))}' filed under the wrong hash");
                    _dirItems[(k.ObjectId, Latin1(e.Name))] = (e.Location.ObjectId, e.FileType, e.Location.Type == KeyTypes.RootItem);
                    d = d[size..];
                }
                break;
            case KeyTypes.DirIndex:
                {
                    if (!DirEntry.TryRead(d, out var e, out int size) || size != d.Length) { _r.Add(FindingKind.Structure, where, "malformed DIR_INDEX"); return; }
                    _dirIndex[(k.ObjectId, k.Offset)] = (Latin1(e.Name), e.Location.ObjectId, e.FileType, e.Location.Type == KeyTypes.RootItem);
                    break;
                }
            case KeyTypes.XattrItem:
                while (d.Length > 0)
                {
                    if (!DirEntry.TryRead(d, out var e, out int size)) { _r.Add(FindingKind.Structure, where, "malformed XATTR_ITEM"); return; }
                    if (NameHash.Of(e.Name) != k.Offset) _r.Add(FindingKind.Structure, where, "xattr filed under the wrong hash");
                    if (e.Name.SequenceEqual(PosixAcl.AccessName) || e.Name.SequenceEqual(PosixAcl.DefaultName)) CheckAcl(k.ObjectId, e.Name.SequenceEqual(PosixAcl.DefaultName), e.Data, where);
                    d = d[size..];
                }
                break;
            case KeyTypes.ExtentData:
                {
                    if (!FileExtentItem.TryRead(d, out var fe)) { _r.Add(FindingKind.Structure, where, "malformed EXTENT_DATA"); return; }
                    var list = _fileExtents.TryGetValue(k.ObjectId, out var l) ? l : _fileExtents[k.ObjectId] = new();
                    list.Add((k.Offset, fe));
                    if (fe.Type != FileExtentType.Inline && fe.DiskBytenr != 0) CountFileExtent(root, fe);
                    if (fe.Type != FileExtentType.Inline && fe.DiskBytenr != 0 && _walker.FirstVisit)
                    {
                        // A leaf shared by snapshots holds one reference, filed under its owner.
                        ulong owner = _walker.LeafOwner;
                        var rk = (owner, k.ObjectId, k.Offset - fe.Offset);
                        var ek = (fe.DiskBytenr, owner, k.ObjectId, k.Offset - fe.Offset);
                        _expectedRefs[ek] = _expectedRefs.GetValueOrDefault(ek) + 1;
                        if (_expectedExtentLen.TryGetValue(fe.DiskBytenr, out var len) && len != fe.DiskNumBytes)
                            _r.Add(FindingKind.Structure, where, $"extent {fe.DiskBytenr} seen with lengths {len} and {fe.DiskNumBytes}");
                        _expectedExtentLen[fe.DiskBytenr] = fe.DiskNumBytes;
                        if (fe.Offset + fe.NumBytes > fe.DiskNumBytes) _r.Add(FindingKind.Structure, where, "file extent reaches past its disk extent");
                        if (fe.NumBytes == 0 || fe.NumBytes % _sb.BlockSize != 0 || k.Offset % _sb.BlockSize != 0)
                            _r.Add(FindingKind.Structure, where, "file extent not block-aligned");
                        _refsByExtent.TryAdd(fe.DiskBytenr, new());
                        _refsByExtent[fe.DiskBytenr].Add(rk);
                    }
                    break;
                }
            default:
                _r.Add(FindingKind.Structure, where, "unexpected item type in a file tree");
                break;
        }
    }

    private readonly Dictionary<ulong, HashSet<(ulong, ulong, ulong)>> _refsByExtent = new();
    private readonly Dictionary<ulong, QgroupInfoItem> _qgroupInfo = new();
    /// <summary>SUBVOL_QGROUP_INFO items of the root tree, by subvolume (quota version 3).</summary>
    private readonly Dictionary<ulong, QgroupInfoItem> _level0Usage = new();
    private readonly HashSet<(ulong, ulong)> _qgroupRelations = new();
    private bool _quotaOn;
    private ulong _quotaVersion, _quotaIdsUpTo, _quotaEpoch;

    private void VisitQuota(Key k, ReadOnlySpan<byte> d)
    {
        string where = $"quota tree item {k}";
        switch (k.Type)
        {
            case KeyTypes.QgroupStatus:
                if (!QgroupStatusItem.TryRead(d, out var st)) _r.Add(FindingKind.Structure, where, "malformed QGROUP_STATUS");
                else { _quotaOn = (st.Flags & QgroupStatusItem.FlagOn) != 0; _quotaVersion = st.Version; _quotaIdsUpTo = st.SubvolumeIdsUpTo; _quotaEpoch = st.MembershipEpoch; }
                break;
            case KeyTypes.QgroupInfo:
                if (!QgroupInfoItem.TryRead(d, out var info)) _r.Add(FindingKind.Structure, where, "malformed QGROUP_INFO");
                else _qgroupInfo[k.Offset] = info;
                break;
            case KeyTypes.QgroupLimit:
                if (!QgroupLimitItem.TryRead(d, out _)) _r.Add(FindingKind.Structure, where, "malformed QGROUP_LIMIT");
                break;
            case KeyTypes.QgroupRelation:
                if (d.Length != 0) _r.Add(FindingKind.Structure, where, "QGROUP_RELATION with a payload");
                _qgroupRelations.Add((k.ObjectId, k.Offset));
                break;
            default:
                _r.Add(FindingKind.Structure, where, "unexpected item type in the quota tree");
                break;
        }
    }
}

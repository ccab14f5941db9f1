using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>
/// Snapshots (docs/SNAPSHOTS.md §2): a new subvolume whose tree is the source's tree, shared
/// block by block through tree-block reference counts until either side changes it.
/// </summary>
public sealed partial class Filesystem
{
    private FsMutex? _subvolumeOpsField;
    /// <summary>Serialises creating, snapshotting and deleting subvolumes (btrfs's subvol_sem):
    /// a snapshot reads the source's ROOT_REFs to leave nested subvolumes out, which must not
    /// change between its directory entries and its ROOT_REFs. Taken before any inode lock.</summary>
    private FsMutex SubvolumeOps => LazyLocks.Mutex(ref _subvolumeOpsField, Fs.Sched, "subvolume-ops");

    public Errno CreateSnapshot(ulong source, ulong dir, string name, bool readOnly, out InodeAttr attr) =>
        CreateSnapshot(source, dir, Utf8(name), readOnly, out attr);

    /// <summary>
    /// Snapshots the subvolume whose root is <paramref name="source"/> as
    /// <paramref name="name"/> in directory <paramref name="dirIno"/>, read-only or writable.
    /// The source's dirty data is written and its ordered extents finished first, so the
    /// snapshot holds everything written before the call; then, in one transaction, the new
    /// tree shares the source's root node (O(1), whatever the size of the subvolume). As on
    /// btrfs, subvolumes nested inside the source are not part of the snapshot; unlike btrfs,
    /// which leaves an empty directory in their place, the snapshot has no entry for them.
    /// EINVAL if <paramref name="source"/> is not a subvolume's root. With quotas on, the
    /// snapshot's group starts with the source's referenced and both exclusive at 0, and it
    /// joins the groups its source is a member of (docs/SNAPSHOTS.md §3).
    /// </summary>
    public Errno CreateSnapshot(ulong source, ulong dirIno, ReadOnlySpan<byte> name, bool readOnly, out InodeAttr attr)
    {
        attr = default;
        var (srcId, srcIno) = NodeIds.Decode(source);
        if (srcIno != RootIno) return Errno.EINVAL;
        var e = CheckNewName(name);
        if (e != Errno.OK) return e;
        using var ops = SubvolumeOps.Lock();
        if (!IsLiveSubvolume(srcId)) return Errno.ENOENT;
        var src = SubvolumeOf(srcId)!;
        src.ForceCow = true;
        try { return SnapshotFlushed(src, dirIno, name, readOnly, out attr); }
        finally { src.ForceCow = false; }
    }

    private Errno SnapshotFlushed(Subvolume src, ulong dirIno, ReadOnlySpan<byte> name, bool readOnly, out InodeAttr attr)
    {
        attr = default;
        ulong srcId = src.Id;
        var e = Guard(NodeIds.Encode(srcId, RootIno), () => { FlushSubvolume(src); return Errno.OK; });
        if (e != Errno.OK) return e;
        List<(ulong DirId, ulong Index, byte[] Name)> nested = [];
        return AddSubvolume(dirIno, name.ToArray(), () => 12 + 3 * (nested = NestedSubvolumeLinks(srcId)).Count, h =>
        {
            ulong id = Fs.NextSubvolumeId();
            var now = Timespec.Now();
            var srcItem = Fs.RootItemOf(srcId) ?? throw new CorruptionException($"subvolume {srcId} has no ROOT_ITEM");
            var item = new RootItem
            {
                Refs = 1, Otransid = h.Transid, Ctransid = h.Transid, Otime = now, Ctime = now, Uuid = Guid.NewGuid(),
                ParentUuid = srcItem.Uuid, Flags = readOnly ? RootItem.FlagReadOnly : 0,
            };
            BTree snap;
            using (src.Tree.Lock.Write()) snap = Fs.CreateSnapshotTree(h, id, src.Tree, item);
            using (snap.Lock.Write())
                foreach (var (dirId, index, linkName) in nested) UnlinkNestedSubvolume(h, snap, dirId, index, linkName);
            return id;
        }, out attr);
    }

    /// <summary>Writes back a subvolume's dirty data and waits for its ordered extents, each
    /// file under its lock (which waits for a write in progress).</summary>
    private void FlushSubvolume(Subvolume sv)
    {
        foreach (var inode in sv.LoadedInodeList())
        {
            if (inode.Mapping is not { } m) continue;
            using var lk = inode.Lock.Write();
            Data.Writeback(m, 0, ulong.MaxValue, wait: true);
            Data.WaitOrdered(m, 0, ulong.MaxValue);
        }
    }

    /// <summary>(directory, index, name) of every subvolume linked inside subvolume
    /// <paramref name="id"/>, from its ROOT_REFs.</summary>
    private List<(ulong DirId, ulong Index, byte[] Name)> NestedSubvolumeLinks(ulong id)
    {
        var list = new List<(ulong, ulong, byte[])>();
        using var lk = Fs.RootTree.Lock.Read();
        var path = new TreePath();
        if (!Fs.RootTree.SeekGE(new Key(id, KeyTypes.RootRef, 0), path)) return list;
        do
        {
            var k = path.Key;
            if (k.ObjectId != id || k.Type != KeyTypes.RootRef) break;
            if (!RootRef.TryRead(path.Data, out var r)) throw new CorruptionException($"malformed ROOT_REF {k}");
            list.Add((r.DirId, r.Sequence, r.Name.ToArray()));
        } while (Fs.RootTree.Next(path));
        return list;
    }

    /// <summary>Removes, in a fresh snapshot's tree, the entry its source has for a nested
    /// subvolume (the snapshot holds no ROOT_REF for it), with the directory's size and link
    /// count. Caller holds the snapshot tree's write lock.</summary>
    private static void UnlinkNestedSubvolume(Tx.TransHandle h, BTree snap, ulong dirId, ulong index, byte[] name)
    {
        DirItems.RemoveSubvolumeEntry(h, snap, dirId, name, index);
        var d = snap.Get(DirItems.InodeKey(dirId)) ?? throw new CorruptionException($"snapshot {snap.Id}: directory {dirId} has no INODE_ITEM", inode: dirId);
        var it = InodeItem.Read(d);
        it.Nlink--;
        it.FileSize -= Math.Min(it.FileSize, (ulong)name.Length * 2);
        DirItems.PutInode(h, snap, dirId, it);
    }
}

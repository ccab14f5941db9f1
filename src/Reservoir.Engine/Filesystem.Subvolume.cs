using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>A subvolume as `subvolume list` shows it.</summary>
public readonly record struct SubvolumeInfo(ulong Id, ulong ParentId, ulong TopLevelDir, string Path, ulong Generation, ulong Otransid,
    Timespec Otime, Guid Uuid, Guid ParentUuid, bool ReadOnly);

/// <summary>
/// Subvolumes (docs/SNAPSHOTS.md §1, SPEC.md §5.7): independent file trees linked into a
/// directory of their parent subvolume. Created with their root directory, listed from the
/// root tree's ROOT_ITEMs and ROOT_BACKREFs, deleted by unlinking them and then dropping every
/// item of their tree in bounded transactions (an orphan item in the root tree makes the next
/// mount finish a drop a crash interrupted).
/// </summary>
public sealed partial class Filesystem
{
    /// <summary>Tree blocks dropped per transaction when a deleted subvolume's tree is emptied.</summary>
    private const int DropBatch = 32;

    public Errno CreateSubvolume(ulong dir, string name, uint uid, uint gid, out InodeAttr attr) =>
        CreateSubvolume(dir, Utf8(name), uid, gid, out attr);

    /// <summary>Creates an empty subvolume named <paramref name="name"/> in directory
    /// <paramref name="dirIno"/>; its root directory (mode 0755) belongs to uid:gid.</summary>
    public Errno CreateSubvolume(ulong dirIno, ReadOnlySpan<byte> name, uint uid, uint gid, out InodeAttr attr)
    {
        attr = default;
        var e = CheckNewName(name);
        if (e != Errno.OK) return e;
        using var ops = SubvolumeOps.Lock();
        return AddSubvolume(dirIno, name.ToArray(), () => 12, h =>
        {
            ulong id = Fs.NextSubvolumeId();
            var now = Timespec.Now();
            var tree = Fs.CreateFsTree(h, id, new RootItem { Refs = 1, Otransid = h.Transid, Ctransid = h.Transid, Otime = now, Ctime = now, Uuid = Guid.NewGuid() });
            var root = new InodeItem
            {
                Generation = h.Transid, Transid = h.Transid, Nlink = 2, Mode = Inodes.Mode.IFDIR | 0x1ED /* 0755 */,
                Uid = uid, Gid = gid, Atime = now, Ctime = now, Mtime = now, Otime = now,
            };
            using (tree.Lock.Write())
            {
                DirItems.PutInode(h, tree, RootIno, root);
                DirItems.AddInodeRef(h, tree, RootIno, RootIno, 0, ".."u8);
            }
            if (Fs.Quota.Enabled) Fs.Quota.GetOrCreate(Quota.Qgroups.ForSubvolume(id));
            return id;
        }, out attr);
    }

    /// <summary>
    /// A new subvolume named <paramref name="name"/> in <paramref name="dirIno"/> (a created
    /// one or a snapshot): under the directory's lock, the name is checked, a handle for
    /// <paramref name="items"/> items started (asked under the lock: a snapshot sizes it by
    /// its source's nested subvolumes), <paramref name="make"/> makes the tree and returns its
    /// id, and the subvolume is linked, all in one transaction. Caller holds SubvolumeOps.
    /// </summary>
    private Errno AddSubvolume(ulong dirIno, byte[] name, Func<int> items, Func<Tx.TransHandle, ulong> make, out InodeAttr attr)
    {
        attr = default;
        var e = GetWritable(dirIno, out var dir);
        if (e != Errno.OK) return e;
        ulong created = 0;
        try
        {
            e = Guard(dirIno, () =>
            {
                using var lk = dir.Lock.Write();
                var ce = CanAddEntryLocked(dir, name, isDir: true); // its root is a subdirectory
                if (ce != Errno.OK) return ce;
                var se = Fs.TryStart(items(), out var h);
                if (se != Errno.OK) return se;
                using (h)
                {
                    created = make(h);
                    // After making it: a snapshot of the directory's own subvolume does not
                    // contain itself.
                    LinkSubvolumeLocked(h, dir, name, created);
                }
                return Errno.OK;
            });
        }
        finally { Put(dir); }
        if (e != Errno.OK) return e;
        return GetAttr(NodeIds.Encode(created, RootIno), out attr);
    }

    /// <summary>Links subvolume <paramref name="id"/> as <paramref name="name"/> in
    /// <paramref name="dir"/>: the directory entry (location: its ROOT_ITEM), the directory's
    /// size and link count (the subvolume root's ".." is this directory), and the root tree's
    /// ROOT_REF and ROOT_BACKREF. Caller holds the directory's lock and a handle.</summary>
    private void LinkSubvolumeLocked(Tx.TransHandle h, Inode dir, byte[] name, ulong id)
    {
        var t = dir.Subvol.Tree;
        ulong index;
        using (t.Lock.Write())
        {
            if (dir.NextDirIndex == 0) dir.NextDirIndex = DirItems.FindNextIndex(t, dir.Ino);
            index = dir.NextDirIndex++;
            DirItems.AddSubvolumeEntry(h, t, dir.Ino, name, id, index);
            dir.Item.FileSize += (ulong)name.Length * 2;
            dir.Item.Nlink++;
            Touch(ref dir.Item, h.Transid);
            DirItems.PutInode(h, t, dir);
        }
        var link = new RootRef(dir.Ino, index, name).ToArray();
        using (Fs.RootTree.Lock.Write())
        {
            Fs.RootTree.Put(h, new Key(dir.Subvol.Id, KeyTypes.RootRef, id), link);
            Fs.RootTree.Put(h, new Key(id, KeyTypes.RootBackref, dir.Subvol.Id), link);
        }
    }

    /// <summary>The node id of the directory holding a subvolume's root (its ".."), from the
    /// subvolume's ROOT_BACKREF. The top-level subvolume's root is its own parent.</summary>
    private ulong ParentOfSubvolumeRoot(Subvolume sv)
    {
        if (sv == Top) return RootIno;
        var (parent, link) = BackrefOf(sv.Id) ?? throw new CorruptionException($"subvolume {sv.Id} has no ROOT_BACKREF");
        return NodeIds.Encode(parent, link.DirId);
    }

    /// <summary>The top level, or a subvolume that exists and is linked (not deleted).</summary>
    private bool IsLiveSubvolume(ulong id) => id == TreeIds.FsTree || (Fs.FsTree(id) != null && BackrefOf(id) != null);

    /// <summary>(parent tree, dirid, index, name) of a subvolume's ROOT_BACKREF, or null.</summary>
    private (ulong Parent, (ulong DirId, ulong Index, byte[] Name) Link)? BackrefOf(ulong id)
    {
        using var lk = Fs.RootTree.Lock.Read();
        var path = new TreePath();
        if (!Fs.RootTree.SeekGE(new Key(id, KeyTypes.RootBackref, 0), path)) return null;
        var k = path.Key;
        if (k.ObjectId != id || k.Type != KeyTypes.RootBackref) return null;
        if (!RootRef.TryRead(path.Data, out var r)) throw new CorruptionException($"malformed ROOT_BACKREF of subvolume {id}");
        return (k.Offset, (r.DirId, r.Sequence, r.Name.ToArray()));
    }

    /// <summary>Every live subvolume, with its path from the top-level subvolume's root.</summary>
    public Errno ListSubvolumes(out List<SubvolumeInfo> list)
    {
        var result = new List<SubvolumeInfo>();
        var e = Guard(0, () =>
        {
            // Every subvolume tree is loaded at mount and registered when created (FsInfo).
            var ids = Fs.AllFsTrees().Select(t => t.Id).Where(id => id >= TreeIds.FirstSubvolume).Order().ToList();
            foreach (var id in ids)
            {
                if (BackrefOf(id) is not { } b) continue; // deleted, its items still being dropped
                var ri = Fs.RootItemOf(id);
                if (ri is not { } r) continue;
                result.Add(new SubvolumeInfo(id, b.Parent, b.Link.DirId, PathOfSubvolume(id), r.Generation, r.Otransid, r.Otime, r.Uuid, r.ParentUuid,
                    (r.Flags & RootItem.FlagReadOnly) != 0));
            }
            return Errno.OK;
        });
        list = result;
        return e;
    }

    /// <summary>The path of a subvolume from the top-level root ("a/b/sub").</summary>
    private string PathOfSubvolume(ulong id)
    {
        var parts = new List<string>();
        for (int depth = 0; id != TreeIds.FsTree; depth++)
        {
            if (depth > 100_000) throw new CorruptionException($"subvolume {id}: parent chain does not reach the top level (loop)");
            var (parent, link) = BackrefOf(id) ?? throw new CorruptionException($"subvolume {id} has no ROOT_BACKREF");
            parts.Add(System.Text.Encoding.UTF8.GetString(link.Name));
            var ptree = Fs.FsTree(parent) ?? throw new CorruptionException($"subvolume {id} names missing parent {parent}");
            ulong dirIno = link.DirId;
            using (ptree.Lock.Read())
            {
                for (int d = 0; dirIno != RootIno; d++)
                {
                    if (d > 100_000) throw new CorruptionException($"tree {parent}: directory parent chain does not reach the root (loop)", inode: dirIno);
                    ulong up = DirItems.ParentOf(ptree, dirIno);
                    parts.Add(NameInParent(ptree, dirIno, up));
                    dirIno = up;
                }
            }
            id = parent;
        }
        parts.Reverse();
        return string.Join('/', parts);
    }

    /// <summary>The name of directory <paramref name="ino"/> in its parent (from its INODE_REF).</summary>
    private static string NameInParent(BTree t, ulong ino, ulong parent)
    {
        var d = t.Get(new Key(ino, KeyTypes.InodeRef, parent)) ?? throw new CorruptionException($"directory {ino} has no INODE_REF in {parent}", inode: ino);
        if (!InodeRef.TryRead(d, out var r, out _)) throw new CorruptionException("malformed INODE_REF", inode: ino);
        return System.Text.Encoding.UTF8.GetString(r.Name);
    }

    public Errno DeleteSubvolume(ulong dir, string name) => DeleteSubvolume(dir, Utf8(name));

    public Errno DeleteSubvolume(ulong dirIno, ReadOnlySpan<byte> name) => DeleteSubvolume(dirIno, name, requireEmpty: false);

    /// <summary>
    /// Deletes the subvolume named <paramref name="name"/> in <paramref name="dirIno"/>, with
    /// everything in it: EINVAL if the name is not a subvolume, ENOTEMPTY if other subvolumes
    /// are linked inside it, EBUSY while one of its files is open or it is the default
    /// subvolume. The name goes now (one transaction, with an orphan item for the subvolume);
    /// the cleaner then empties its tree in bounded transactions, each dropped data reference
    /// freeing its extent when it was the last, and removes its root, its ROOT_ITEM and its
    /// quota group. <see cref="SyncSubvolumeDeletions"/> waits for that.
    /// </summary>
    /// <param name="requireEmpty">rmdir's rule: ENOTEMPTY unless the subvolume's root
    /// directory is empty.</param>
    private Errno DeleteSubvolume(ulong dirIno, ReadOnlySpan<byte> name, bool requireEmpty)
    {
        var e = CheckName(name);
        if (e != Errno.OK) return e;
        using var ops = SubvolumeOps.Lock();
        e = GetWritable(dirIno, out var dir);
        if (e != Errno.OK) return e;
        var nameCopy = name.ToArray();
        Subvolume? victim = null;
        try
        {
            e = Guard(dirIno, () =>
            {
                using var lk = dir.Lock.Write();
                if (!dir.IsDir) return Errno.ENOTDIR;
                var t = dir.Subvol.Tree;
                Key loc;
                using (t.Lock.Read())
                    if (!DirItems.Find(t, dir.Ino, KeyTypes.DirItem, nameCopy, out loc, out _, out _)) return Errno.ENOENT;
                if (loc.Type != KeyTypes.RootItem) return Errno.EINVAL; // not a subvolume
                ulong id = loc.ObjectId;
                if (id == Fs.Super.DefaultSubvolume) return Errno.EBUSY;
                using (Fs.RootTree.Lock.Read())
                {
                    var path = new TreePath();
                    if (Fs.RootTree.SeekGE(new Key(id, KeyTypes.RootRef, 0), path) && path.Key.ObjectId == id && path.Key.Type == KeyTypes.RootRef)
                        return Errno.ENOTEMPTY; // subvolumes inside it: delete those first, as btrfs asks
                }
                var sv = SubvolumeOf(id) ?? throw new CorruptionException($"directory {dir.Ino} names missing subvolume {id}", inode: dir.Ino);
                if (requireEmpty)
                {
                    if (sv.Acquire(RootIno, out var root) != Errno.OK) throw new CorruptionException($"subvolume {id} has no root directory");
                    try
                    {
                        using var rl = root.Lock.Read();
                        if (!IsEmptyDir(root)) return Errno.ENOTEMPTY;
                    }
                    finally { sv.Release(root); }
                }
                var busy = QuiesceSubvolume(sv);
                if (busy != Errno.OK) return busy;
                var (_, link) = BackrefOf(id) ?? throw new CorruptionException($"subvolume {id} has no ROOT_BACKREF");
                var se = Fs.TryStart(12, out var h, useGlobalReserve: true);
                if (se != Errno.OK) return se;
                using (h)
                {
                    using (t.Lock.Write())
                    {
                        DirItems.RemoveSubvolumeEntry(h, t, dir.Ino, nameCopy, link.Index);
                        dir.Item.FileSize -= Math.Min(dir.Item.FileSize, (ulong)nameCopy.Length * 2);
                        dir.Item.Nlink--;
                        Touch(ref dir.Item, h.Transid);
                        DirItems.PutInode(h, t, dir);
                    }
                    using (Fs.RootTree.Lock.Write())
                    {
                        Fs.RootTree.Delete(h, new Key(dir.Subvol.Id, KeyTypes.RootRef, id));
                        Fs.RootTree.Delete(h, new Key(id, KeyTypes.RootBackref, dir.Subvol.Id));
                        Fs.RootTree.Put(h, DirItems.OrphanKey(id), ReadOnlySpan<byte>.Empty);
                    }
                }
                using (_subvolsLock.Lock()) _subvols.Remove(id);
                sv.Dead = true;
                victim = sv;
                return Errno.OK;
            });
        }
        finally { Put(dir); }
        if (e != Errno.OK) return e;
        QueueDrop(victim!.Tree);
        return Errno.OK;
    }

    /// <summary>Before a subvolume goes: EBUSY if a file of it is open; otherwise every cached
    /// page is dropped with its reservation and every ordered extent finished, so nothing will
    /// write into the tree while it is emptied.</summary>
    private Errno QuiesceSubvolume(Subvolume sv)
    {
        var inodes = sv.LoadedInodeList();
        if (inodes.Any(i => sv.OpenCountOf(i) > 0)) return Errno.EBUSY;
        foreach (var inode in inodes)
        {
            if (inode.Mapping is not { } m) continue;
            using var lk = inode.Lock.Write();
            Data.WaitOrdered(m, 0, ulong.MaxValue);
            Data.Invalidate(m, 0, ulong.MaxValue);
            Data.CheckMappingQuiescent(m, "subvolume deletion");
        }
        Data.DropIdleMappings(sv);
        return Errno.OK;
    }

    /// <summary>
    /// Empties a deleted subvolume's tree in bounded transactions (<see cref="BTree.DropFromLeft"/>:
    /// blocks shared with snapshots lose one reference, blocks it alone owns go with the data
    /// references of their file extent items, which free an extent with its last one), commits
    /// so that the frees are accounted to its quota group, then removes the empty root, the
    /// ROOT_ITEM, the orphan item and the group. Run by the cleaner; returns false when
    /// <paramref name="stop"/> asked it to stop before the end (the orphan item stays).
    /// </summary>
    private bool DropSubvolumeTree(BTree t, Func<bool> stop)
    {
        // With quotas on, the subvolume first stops referencing its extents one EXTENT_OWNER_REF
        // at a time, including those in leaves shared with snapshots (which the drop below does
        // not enter): each is a transition the commit accounts, so whoever is left holding an
        // extent alone sees it in its exclusive (btrfs traces the shared subtrees instead).
        while (Fs.Quota.Enabled)
        {
            if (stop()) return false;
            var se = Fs.StartDeletion(DropBatch / 4, out var h);
            if (se != Errno.OK) throw new FsException(se, $"subvolume {t.Id}: cannot continue dropping its references");
            using (h)
            using (t.Lock.Write())
            {
                var batch = Tx.OwnerRefs.Scan(t).Take(DropBatch / 2).ToList();
                if (batch.Count == 0) break;
                foreach (var (bytenr, count, len) in batch) Tx.OwnerRefs.Change(h, t, bytenr, len, -(long)count);
            }
        }
        while (true)
        {
            if (stop()) return false;
            var se = Fs.StartDeletion(DropBatch / 4, out var h);
            if (se != Errno.OK) throw new FsException(se, $"subvolume {t.Id}: cannot continue dropping its tree");
            bool empty;
            using (h)
            using (t.Lock.Write())
            {
                try { empty = t.DropFromLeft(h, DropBatch); }
                catch (Exception ex) when (ex is not Common.Concurrency.SchedulerAbortedException)
                {
                    // Half a batch is in the running transaction: it must not commit.
                    Fs.MarkFailed($"subvolume {t.Id}: dropping its tree failed part way: {ex.Message}");
                    throw;
                }
            }
            if (empty) break;
        }
        Fs.ForceCommit = true;
        Fs.Commit(); // accounts the frees to the subvolume's group before the group goes
        var e2 = Fs.StartDeletion(4, out var h2);
        if (e2 != Errno.OK) throw new FsException(e2, $"subvolume {t.Id}: cannot remove its root");
        using (h2)
        {
            Fs.RemoveFsTree(h2, t);
            using (Fs.RootTree.Lock.Write()) Fs.RootTree.Delete(h2, DirItems.OrphanKey(t.Id));
            // Inside the handle: leaving its groups changes their member sets in place, which a
            // commit's accounting reads without the qgroup lock while no handle is open.
            if (!Fs.Quota.RemoveForSubvolume(t.Id)) Fs.Warn($"subvolume {t.Id}: its quota group still shows usage after its tree was dropped");
        }
        Fs.ForceCommit = true;
        Fs.Commit();
        return true;
    }

    /// <summary>At mount: finishes dropping subvolumes whose deletion a crash interrupted.</summary>
    private void CleanupDeletedSubvolumes()
    {
        var ids = DirItems.Orphans(Fs.RootTree);
        foreach (var id in ids)
        {
            var t = Fs.FsTree(id);
            if (t == null)
            {
                using var h = Fs.Start(1, useGlobalReserve: true);
                using (Fs.RootTree.Lock.Write()) Fs.RootTree.Delete(h, DirItems.OrphanKey(id));
                continue;
            }
            QueueDrop(t);
        }
        if (ids.Count > 0) Fs.Warn($"resuming the deletion of {ids.Count} subvolume(s) an earlier mount left half deleted");
    }
}

public sealed partial class Filesystem
{
    /// <summary>The subvolume mounted when no other is asked for (btrfs's default subvolume).</summary>
    public ulong DefaultSubvolume => Fs.Super.DefaultSubvolume;

    /// <summary>Makes <paramref name="id"/> (5 for the top level) the default subvolume; ENOENT
    /// if no live subvolume has that id. Durable at the next commit.</summary>
    public Errno SetDefaultSubvolume(ulong id) => Guard(0, () =>
    {
        if (Fs.ReadOnly) return Errno.EROFS;
        if (!IsLiveSubvolume(id)) return Errno.ENOENT;
        Fs.SetDefaultSubvolumeId(id);
        Fs.Commit();
        return Errno.OK;
    });

    /// <summary>
    /// The node id of the directory a mount shows as its root: the root of subvolume
    /// <paramref name="subvolId"/>, or of the subvolume at <paramref name="subvolPath"/> (from the
    /// top-level root; it must name a subvolume, as btrfs's subvol= must), or of the default
    /// subvolume when neither is given.
    /// </summary>
    public Errno ResolveMountRoot(string? subvolPath, ulong? subvolId, out ulong rootNode)
    {
        rootNode = RootIno;
        ulong found = RootIno;
        var e = Guard(0, () =>
        {
            if (subvolPath != null)
            {
                ulong node = RootIno;
                foreach (var part in subvolPath.Split('/', StringSplitOptions.RemoveEmptyEntries))
                {
                    var le = Lookup(node, part, out var a);
                    if (le != Errno.OK) return le;
                    if (!a.IsDir) return Errno.ENOTDIR;
                    node = a.Ino;
                }
                if (NodeIds.Decode(node).Ino != RootIno) return Errno.EINVAL; // a directory, not a subvolume
                if (subvolId is { } want && NodeIds.Decode(node).TreeId != want) return Errno.EINVAL;
                found = node;
                return Errno.OK;
            }
            ulong id = subvolId ?? Fs.Super.DefaultSubvolume;
            if (!IsLiveSubvolume(id)) return Errno.ENOENT;
            found = NodeIds.Encode(id, RootIno);
            return Errno.OK;
        });
        rootNode = found;
        return e;
    }

    /// <summary>The subvolume whose root directory is <paramref name="node"/>, as `subvolume
    /// show` prints it; EINVAL if the node is not a subvolume's root.</summary>
    public Errno ShowSubvolume(ulong node, out SubvolumeInfo info)
    {
        info = default;
        var (tree, ino) = NodeIds.Decode(node);
        if (ino != RootIno) return Errno.EINVAL;
        SubvolumeInfo result = default;
        var e = Guard(node, () =>
        {
            var ri = Fs.RootItemOf(tree);
            if (ri is not { } r) return Errno.ENOENT;
            ulong parent = 0, dirid = 0;
            string path = "";
            if (tree != TreeIds.FsTree)
            {
                if (BackrefOf(tree) is not { } b) return Errno.ENOENT;
                (parent, dirid, path) = (b.Parent, b.Link.DirId, PathOfSubvolume(tree));
            }
            result = new SubvolumeInfo(tree, parent, dirid, path, r.Generation, r.Otransid, r.Otime, r.Uuid, r.ParentUuid, (r.Flags & RootItem.FlagReadOnly) != 0);
            return Errno.OK;
        });
        info = result;
        return e;
    }

    /// <summary>Whether the subvolume whose root is <paramref name="node"/> is read-only.</summary>
    public Errno GetSubvolumeReadOnly(ulong node, out bool readOnly)
    {
        readOnly = false;
        var (tree, ino) = NodeIds.Decode(node);
        if (ino != RootIno) return Errno.EINVAL;
        var sv = SubvolumeOf(tree);
        if (sv == null) return Errno.ENOENT;
        readOnly = sv.ReadOnly;
        return Errno.OK;
    }

    /// <summary>
    /// Makes the subvolume whose root is <paramref name="node"/> read-only or writable again
    /// (btrfs property ro). Going read-only: new changes answer EROFS at once; changes under
    /// way finish (each holds its inode's lock, which is taken here in turn) and the
    /// subvolume's dirty data is written and its ordered extents finished before the flag is
    /// committed, so the tree no longer changes once the call returns.
    /// </summary>
    public Errno SetSubvolumeReadOnly(ulong node, bool readOnly)
    {
        var (tree, ino) = NodeIds.Decode(node);
        if (ino != RootIno) return Errno.EINVAL;
        return Guard(node, () =>
        {
            if (Fs.ReadOnly) return Errno.EROFS;
            if (!IsLiveSubvolume(tree)) return Errno.ENOENT;
            var sv = SubvolumeOf(tree)!;
            bool was = sv.ReadOnly;
            sv.ReadOnly = readOnly;
            if (readOnly) FlushSubvolume(sv);
            var se = Fs.TryStart(1, out var h);
            if (se != Errno.OK) { sv.ReadOnly = was; return se; }
            using (h)
            using (Fs.RootTree.Lock.Write())
            {
                var key = new Key(tree, KeyTypes.RootItem, 0);
                var d = Fs.RootTree.Get(key) ?? throw new CorruptionException($"subvolume {tree} has no ROOT_ITEM");
                var ri = RootItem.Read(d);
                ri.Flags = readOnly ? ri.Flags | RootItem.FlagReadOnly : ri.Flags & ~RootItem.FlagReadOnly;
                Span<byte> buf = stackalloc byte[RootItem.Size];
                ri.Write(buf);
                Fs.RootTree.Put(h, key, buf);
            }
            return Errno.OK;
        });
    }
}

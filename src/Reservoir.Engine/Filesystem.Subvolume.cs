using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>A subvolume as `subvolume list` shows it.</summary>
public readonly record struct SubvolumeInfo(ulong Id, ulong ParentId, ulong TopLevelDir, string Path, ulong Generation, ulong Otransid,
    Timespec Otime, Guid Uuid, Guid ParentUuid, bool ReadOnly, Guid ReceivedUuid = default, ulong Stransid = 0);

/// <summary>
/// Subvolumes (docs/SNAPSHOTS.md §1, SPEC.md §5.7): independent file trees linked into a
/// directory of their parent subvolume. Created with their root directory, listed from the
/// root tree's ROOT_ITEMs and ROOT_BACKREFs, deleted by unlinking them and then dropping every
/// item of their tree in bounded transactions (an orphan item in the root tree makes the next
/// mount finish a drop a crash interrupted).
/// </summary>
public sealed partial class Filesystem
{
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
    /// <paramref name="dir"/>: the directory entry (<see cref="AddSubvolumeEntryLocked"/>) and
    /// the root tree's ROOT_REF and ROOT_BACKREF. Caller holds the directory's lock and a handle.</summary>
    private void LinkSubvolumeLocked(Tx.TransHandle h, Inode dir, byte[] name, ulong id)
    {
        ulong index = AddSubvolumeEntryLocked(h, dir, name, id);
        using (Fs.RootTree.Lock.Write()) PutRootRefsLocked(h, dir.Subvol.Id, id, dir.Ino, index, name);
    }

    /// <summary>Subvolume <paramref name="id"/>'s ROOT_REF under <paramref name="parent"/> and its
    /// ROOT_BACKREF, both naming its entry (directory, DIR_INDEX, name): written together by every
    /// link and move. Caller holds the root tree's write lock.</summary>
    private void PutRootRefsLocked(Tx.TransHandle h, ulong parent, ulong id, ulong dirIno, ulong index, byte[] name)
    {
        var link = new RootRef(dirIno, index, name).ToArray();
        Fs.RootTree.Put(h, new Key(parent, KeyTypes.RootRef, id), link);
        Fs.RootTree.Put(h, new Key(id, KeyTypes.RootBackref, parent), link);
    }

    /// <summary>The reverse of <see cref="PutRootRefsLocked"/>. Caller holds the root tree's write lock.</summary>
    private void DeleteRootRefsLocked(Tx.TransHandle h, ulong parent, ulong id)
    {
        Fs.RootTree.Delete(h, new Key(parent, KeyTypes.RootRef, id));
        Fs.RootTree.Delete(h, new Key(id, KeyTypes.RootBackref, parent));
    }

    /// <summary>Subvolume <paramref name="id"/>'s directory entry <paramref name="name"/> in
    /// <paramref name="dir"/> (location: its ROOT_ITEM), with the directory's size and link
    /// count (the subvolume root's ".." is this directory); returns its DIR_INDEX. The caller
    /// writes the ROOT_REF and ROOT_BACKREF that name it. Caller holds the directory's lock and
    /// a handle.</summary>
    private ulong AddSubvolumeEntryLocked(Tx.TransHandle h, Inode dir, byte[] name, ulong id)
    {
        var t = dir.Subvol.Tree;
        using (t.Lock.Write())
        {
            if (dir.NextDirIndex == 0) dir.NextDirIndex = DirItems.FindNextIndex(t, dir.Ino);
            ulong index = dir.NextDirIndex++;
            DirItems.AddSubvolumeEntry(h, t, dir.Ino, name, id, index);
            dir.Item.FileSize += (ulong)name.Length * 2;
            dir.Item.Nlink++;
            Touch(ref dir.Item, h.Transid);
            DirItems.PutInode(h, t, dir);
            return index;
        }
    }

    /// <summary>The reverse of <see cref="AddSubvolumeEntryLocked"/>: the entry (DIR_INDEX
    /// <paramref name="index"/>) goes, with the directory's size and link count. Caller holds the
    /// directory's lock and a handle, and deletes the ROOT_REF and ROOT_BACKREF.</summary>
    private void RemoveSubvolumeEntryLocked(Tx.TransHandle h, Inode dir, byte[] name, ulong index)
    {
        var t = dir.Subvol.Tree;
        using (t.Lock.Write())
        {
            DirItems.RemoveSubvolumeEntry(h, t, dir.Ino, name, index);
            dir.Item.FileSize -= Math.Min(dir.Item.FileSize, (ulong)name.Length * 2);
            dir.Item.Nlink--;
            Touch(ref dir.Item, h.Transid);
            DirItems.PutInode(h, t, dir);
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
                // Deleted (its items still being dropped), or meanwhile: not listed.
                if (!TryLinkAndPath(id, out var parent, out var dirId, out var path)) continue;
                var ri = Fs.RootItemOf(id);
                if (ri is not { } r) continue;
                result.Add(new SubvolumeInfo(id, parent, dirId, path, r.Generation, r.Otransid, r.Otime, r.Uuid, r.ParentUuid,
                    (r.Flags & RootItem.FlagReadOnly) != 0, r.ReceivedUuid, r.Stransid));
            }
            return Errno.OK;
        });
        list = result;
        return e;
    }

    /// <summary>Deleted subvolumes whose trees are not dropped yet (btrfs's `subvolume list
    /// -d`): their orphan items in the root tree, each with its ROOT_ITEM's generation; in id
    /// order. Those waiting for files of them to be closed are among them.</summary>
    public Errno ListDeletedSubvolumes(out List<(ulong Id, ulong Generation)> list)
    {
        var result = new List<(ulong, ulong)>();
        var e = Guard(0, () =>
        {
            foreach (var id in DirItems.Orphans(Fs.RootTree).Order())
                if (Fs.RootItemOf(id) is { } r) result.Add((id, r.Generation));
            return Errno.OK;
        });
        list = result;
        return e;
    }

    /// <summary>
    /// A subvolume's link (parent subvolume, directory) and path, read while other threads may
    /// move, rename or delete it, the directories above it or the subvolumes it sits in: each
    /// step reads one tree under its lock, so a move between steps can leave the walk at a
    /// directory that is no longer there. The walk is then taken again (a link that changed
    /// during the walk likewise, up to eight times: a subvolume moved that often while listed is
    /// listed where it went last); false when the subvolume is gone. Eight failed walks in a row
    /// are no race: the trees are damaged, and the walk's own error says where.
    /// </summary>
    private bool TryLinkAndPath(ulong id, out ulong parent, out ulong dirId, out string path)
    {
        for (int attempt = 1; ; attempt++)
        {
            (parent, dirId, path) = (0, 0, "");
            if (BackrefOf(id) is not { } b) return false;
            try { path = PathOfSubvolume(id); }
            catch (CorruptionException) when (attempt < 8) { continue; }
            if (BackrefOf(id) is not { } after) return false;
            bool moved = after.Parent != b.Parent || after.Link.DirId != b.Link.DirId || after.Link.Index != b.Link.Index;
            if (moved && attempt < 8) continue;
            (parent, dirId) = (after.Parent, after.Link.DirId);
            return true;
        }
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
}


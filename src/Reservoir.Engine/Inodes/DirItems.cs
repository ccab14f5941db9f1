using Reservoir.Common;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// The items that make up names (SPEC.md §5.2–5.3). A name in a directory is three items kept
/// in step: a DIR_ITEM entry keyed by the name's hash (lookup), a DIR_INDEX keyed by a
/// per-directory sequence number (readdir order, stable cookies), and an INODE_REF record on
/// the child (its names, for link counts and fsck). Callers hold the fs tree's write lock for
/// changes and its read lock for lookups.
/// </summary>
internal static class DirItems
{
    public static Key InodeKey(ulong ino) => new(ino, KeyTypes.InodeItem, 0);

    public static void PutInode(ITreeContext h, BTree t, ulong ino, in InodeItem item)
    {
        Span<byte> b = stackalloc byte[InodeItem.Size];
        item.Write(b);
        t.Put(h, InodeKey(ino), b);
    }

    /// <summary>Writes an in-memory inode's item. For files with cached data the size written
    /// is the size whose data reached disk, so a crash never exposes a size beyond it.</summary>
    public static void PutInode(ITreeContext h, BTree t, Inode inode)
    {
        var item = inode.Item;
        item.FileSize = inode.PersistedSize;
        PutInode(h, t, inode.Ino, item);
    }

    /// <summary>Finds <paramref name="name"/> in a DIR_ITEM or XATTR_ITEM chain.</summary>
    public static bool Find(BTree t, ulong objectid, byte type, ReadOnlySpan<byte> name, out Key location, out byte fileType, out byte[]? data)
    {
        location = default; fileType = 0; data = null;
        var path = new TreePath();
        if (!t.Search(null, new Key(objectid, type, NameHash.Of(name)), path)) return false;
        var item = path.Data;
        while (item.Length > 0)
        {
            if (!DirEntry.TryRead(item, out var e, out int size)) throw new CorruptionException($"malformed {KeyTypes.Name(type)} of inode {objectid}", inode: objectid);
            if (e.Name.SequenceEqual(name))
            {
                location = e.Location;
                fileType = e.FileType;
                data = e.Data.ToArray();
                return true;
            }
            item = item[size..];
        }
        return false;
    }

    /// <summary>Appends an entry to the hash-keyed item, creating it if needed. Returns false
    /// if the name is already there.</summary>
    /// <summary>The inode's names or xattrs change in this transaction: the fsync log does not
    /// carry those, so its fsync commits (SPEC.md §9). Offline contexts (mkfs, fsck) have no
    /// log.</summary>
    public static void BlockLog(ITreeContext h, BTree t, ulong ino)
    {
        if (h is TransHandle th) th.Transaction.BlockLog(t.Id, ino);
    }

    public static bool AddHashed(ITreeContext h, BTree t, ulong objectid, byte type, ReadOnlySpan<byte> name, Key location, byte fileType, ReadOnlySpan<byte> data)
    {
        if (type == KeyTypes.XattrItem) BlockLog(h, t, objectid);
        var key = new Key(objectid, type, NameHash.Of(name));
        int esize = DirEntry.SizeOf(name.Length, data.Length);
        var entry = new DirEntry(location, h.Transid, fileType, name, data);
        if (t.TryInsert(h, key, esize, out var d))
        {
            entry.Write(d);
            return true;
        }
        if (Find(t, objectid, type, name, out _, out _, out _)) return false;
        var old = t.Get(key)!;
        if (old.Length + esize > t.MaxItemData) throw new FsException(Errno.ENOSPC, $"hash collision chain of inode {objectid} is full");
        var nd = t.Resize(h, key, old.Length + esize);
        entry.Write(nd[old.Length..]);
        return true;
    }

    /// <summary>Removes one entry from a hash-keyed item. Returns false if absent.</summary>
    public static bool RemoveHashed(ITreeContext h, BTree t, ulong objectid, byte type, ReadOnlySpan<byte> name)
    {
        if (type == KeyTypes.XattrItem) BlockLog(h, t, objectid);
        var key = new Key(objectid, type, NameHash.Of(name));
        var old = t.Get(key);
        if (old == null) return false;
        int pos = 0;
        while (pos < old.Length)
        {
            if (!DirEntry.TryRead(old.AsSpan(pos), out var e, out int size)) throw new CorruptionException($"malformed {KeyTypes.Name(type)} of inode {objectid}", inode: objectid);
            if (e.Name.SequenceEqual(name))
            {
                if (size == old.Length) { t.Delete(h, key); return true; }
                var rest = new byte[old.Length - size];
                old.AsSpan(0, pos).CopyTo(rest);
                old.AsSpan(pos + size).CopyTo(rest.AsSpan(pos));
                t.Put(h, key, rest);
                return true;
            }
            pos += size;
        }
        return false;
    }

    public static void AddDirEntry(ITreeContext h, BTree t, ulong dir, ReadOnlySpan<byte> name, ulong child, byte fileType, ulong index)
    {
        var loc = InodeKey(child);
        if (!AddHashed(h, t, dir, KeyTypes.DirItem, name, loc, fileType, default))
            ThrowHelper.Invariant($"directory {dir} already has the name being added");
        var d = t.Insert(h, new Key(dir, KeyTypes.DirIndex, index), DirEntry.SizeOf(name.Length, 0));
        new DirEntry(loc, h.Transid, fileType, name, default).Write(d);
        AddInodeRef(h, t, child, dir, index, name);
    }

    public static void RemoveDirEntry(ITreeContext h, BTree t, ulong dir, ReadOnlySpan<byte> name, ulong child)
    {
        if (!RemoveHashed(h, t, dir, KeyTypes.DirItem, name))
            throw new CorruptionException($"directory {dir} lost an entry while locked", inode: dir);
        ulong index = RemoveInodeRef(h, t, child, dir, name);
        if (!t.Delete(h, new Key(dir, KeyTypes.DirIndex, index)))
            throw new CorruptionException($"directory {dir} has no DIR_INDEX {index} for an existing name", inode: dir);
    }

    /// <summary>A directory entry naming another subvolume (SPEC.md §5.7): its location is the
    /// subvolume's ROOT_ITEM key, and there is no INODE_REF (the subvolume's ROOT_BACKREF in
    /// the root tree records the name instead).</summary>
    public static void AddSubvolumeEntry(ITreeContext h, BTree t, ulong dir, ReadOnlySpan<byte> name, ulong subvolume, ulong index)
    {
        var loc = new Key(subvolume, KeyTypes.RootItem, 0);
        if (!AddHashed(h, t, dir, KeyTypes.DirItem, name, loc, FileTypes.Dir, default))
            ThrowHelper.Invariant($"directory {dir} already has the name being added");
        var d = t.Insert(h, new Key(dir, KeyTypes.DirIndex, index), DirEntry.SizeOf(name.Length, 0));
        new DirEntry(loc, h.Transid, FileTypes.Dir, name, default).Write(d);
    }

    public static void RemoveSubvolumeEntry(ITreeContext h, BTree t, ulong dir, ReadOnlySpan<byte> name, ulong index)
    {
        if (!RemoveHashed(h, t, dir, KeyTypes.DirItem, name))
            throw new CorruptionException($"directory {dir} lost a subvolume entry while locked", inode: dir);
        if (!t.Delete(h, new Key(dir, KeyTypes.DirIndex, index)))
            throw new CorruptionException($"directory {dir} has no DIR_INDEX {index} for a subvolume entry", inode: dir);
    }

    public static void AddInodeRef(ITreeContext h, BTree t, ulong ino, ulong parent, ulong index, ReadOnlySpan<byte> name)
    {
        BlockLog(h, t, ino);
        var key = new Key(ino, KeyTypes.InodeRef, parent);
        var r = new InodeRef(index, name);
        if (t.TryInsert(h, key, r.EncodedSize, out var d)) { r.Write(d); return; }
        int old = t.Get(key)!.Length;
        if (old + r.EncodedSize > t.MaxItemData) throw new FsException(Errno.EMLINK, $"inode {ino} has too many names in directory {parent}");
        var nd = t.Resize(h, key, old + r.EncodedSize);
        r.Write(nd[old..]);
    }

    /// <summary>Removes a name from the child's INODE_REF and returns its DIR_INDEX number.</summary>
    public static ulong RemoveInodeRef(ITreeContext h, BTree t, ulong ino, ulong parent, ReadOnlySpan<byte> name)
    {
        BlockLog(h, t, ino);
        var key = new Key(ino, KeyTypes.InodeRef, parent);
        var old = t.Get(key) ?? throw new CorruptionException($"inode {ino} has no INODE_REF for directory {parent}", inode: ino);
        int pos = 0;
        while (pos < old.Length)
        {
            if (!InodeRef.TryRead(old.AsSpan(pos), out var r, out int size)) throw new CorruptionException($"malformed INODE_REF of inode {ino}", inode: ino);
            if (r.Name.SequenceEqual(name))
            {
                ulong index = r.Index;
                if (size == old.Length) t.Delete(h, key);
                else
                {
                    var rest = new byte[old.Length - size];
                    old.AsSpan(0, pos).CopyTo(rest);
                    old.AsSpan(pos + size).CopyTo(rest.AsSpan(pos));
                    t.Put(h, key, rest);
                }
                return index;
            }
            pos += size;
        }
        throw new CorruptionException($"inode {ino} has no INODE_REF name for an entry of directory {parent}", inode: ino);
    }

    /// <summary>The directory's next DIR_INDEX: one past the largest present, at least 2
    /// (0 and 1 are the cookies of "." and "..").</summary>
    public static ulong FindNextIndex(BTree t, ulong dir)
    {
        var path = new TreePath();
        if (t.SeekLE(new Key(dir, KeyTypes.DirIndex, ulong.MaxValue), path))
        {
            var k = path.Key;
            if (k.ObjectId == dir && k.Type == KeyTypes.DirIndex) return Math.Max(2, k.Offset + 1);
        }
        return 2;
    }

    /// <summary>The parent directory of a directory, from its (single) INODE_REF.</summary>
    public static ulong ParentOf(BTree t, ulong dir)
    {
        var path = new TreePath();
        if (t.SeekGE(new Key(dir, KeyTypes.InodeRef, 0), path))
        {
            var k = path.Key;
            if (k.ObjectId == dir && k.Type == KeyTypes.InodeRef) return k.Offset;
        }
        throw new CorruptionException($"directory {dir} has no parent reference", inode: dir);
    }

    public static Key OrphanKey(ulong ino) => new(TreeIds.OrphanObjectId, KeyTypes.OrphanItem, ino);

    /// <summary>The offsets of a tree's ORPHAN_ITEMs (inodes in an fs tree, subvolume ids in
    /// the root tree). Takes the tree's lock for reading.</summary>
    public static List<ulong> Orphans(BTree t)
    {
        var ids = new List<ulong>();
        using var _ = t.Lock.Read();
        var path = new TreePath();
        if (t.SeekGE(OrphanKey(0), path))
            do
            {
                var k = path.Key;
                if (k.ObjectId != TreeIds.OrphanObjectId || k.Type != KeyTypes.OrphanItem) break;
                ids.Add(k.Offset);
            } while (t.Next(path));
        return ids;
    }
}

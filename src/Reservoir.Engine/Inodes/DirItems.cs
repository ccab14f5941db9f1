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
        using var lease = TreePath.Rent(out var path);
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

    /// <summary>The inode's names or xattrs change in this transaction: the fsync log does not
    /// carry those, so its fsync commits (SPEC.md §9). Offline contexts (mkfs, fsck) have no
    /// log.</summary>
    public static void BlockLog(ITreeContext h, BTree t, ulong ino)
    {
        if (h is TransHandle th) th.Transaction.BlockLog(t.Id, ino);
    }

    /// <summary>Appends an entry to the hash-keyed item, creating it if needed. Returns false
    /// if the name is already there. Callers check <see cref="HashedRoom"/> first: an item
    /// that would outgrow a leaf throws (EOVERFLOW for a directory, as btrfs answers;
    /// ENOSPC for an attribute).</summary>
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
        if (old.Length + esize > t.MaxItemData)
            throw new FsException(type == KeyTypes.DirItem ? Errno.EOVERFLOW : Errno.ENOSPC, $"hash collision chain of inode {objectid} is full") { Inode = objectid };
        var nd = t.Resize(h, key, old.Length + esize);
        entry.Write(nd[old.Length..]);
        return true;
    }

    /// <summary>
    /// Whether the hash-keyed item of <paramref name="name"/> can take its entry with a value
    /// of <paramref name="dataLength"/> bytes in place of any entry of that name it has. All
    /// names whose hashes collide share one item, which must fit a leaf: names made to collide
    /// (CRC32C is easy to steer) fill it after about 400, and the operation adding one more is
    /// refused before it changes anything. Caller holds the tree's lock.
    /// </summary>
    public static bool HashedRoom(BTree t, ulong objectid, byte type, ReadOnlySpan<byte> name, int dataLength)
    {
        int size = DirEntry.SizeOf(name.Length, dataLength);
        using var lease = TreePath.Rent(out var path);
        if (!t.Search(null, new Key(objectid, type, NameHash.Of(name)), path)) return size <= t.MaxItemData;
        var item = path.Data;
        int used = item.Length;
        while (item.Length > 0)
        {
            if (!DirEntry.TryRead(item, out var e, out int esize)) throw new CorruptionException($"malformed {KeyTypes.Name(type)} of inode {objectid}", inode: objectid);
            if (e.Name.SequenceEqual(name)) { used -= esize; break; }
            item = item[esize..];
        }
        return used + size <= t.MaxItemData;
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
                Cut(h, t, key, old, pos, size);
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

    /// <summary>
    /// Adds a name to the child's back-references: the INODE_REF of <paramref name="parent"/>
    /// while it has room, else an INODE_EXTREF (SPEC.md §5.2), which marks the image with the
    /// EXTENDED_IREF feature. Callers check <see cref="InodeRefRoom"/> first, under the child's
    /// lock and the directory's, which keep both items as they were checked.
    /// </summary>
    public static void AddInodeRef(ITreeContext h, BTree t, ulong ino, ulong parent, ulong index, ReadOnlySpan<byte> name)
    {
        BlockLog(h, t, ino);
        var key = new Key(ino, KeyTypes.InodeRef, parent);
        var r = new InodeRef(index, name);
        if (TryAppend(h, t, key, r.EncodedSize, out var d)) { r.Write(d); return; }
        var x = new InodeExtref(parent, index, name);
        if (!TryAppend(h, t, new Key(ino, KeyTypes.InodeExtref, InodeExtref.Hash(parent, name)), x.EncodedSize, out d))
            throw new FsException(Errno.EMLINK, $"inode {ino} has too many names in directory {parent}") { Inode = ino };
        if (h is TransHandle th) th.UsesFeature(Features.IncompatExtendedIref);
        x.Write(d);
    }

    /// <summary>Makes room for <paramref name="size"/> more bytes at the end of the item (a new
    /// item if there is none), or returns false if the item would outgrow a leaf.</summary>
    private static bool TryAppend(ITreeContext h, BTree t, Key key, int size, out Span<byte> added)
    {
        if (t.TryInsert(h, key, size, out added)) return true;
        int old = t.ItemSize(key);
        if (old + size > t.MaxItemData) { added = default; return false; }
        added = t.Resize(h, key, old + size)[old..];
        return true;
    }

    /// <summary>Whether <see cref="AddInodeRef"/> can add the name: its INODE_REF, or else its
    /// INODE_EXTREF, has room. Only names whose hashes collide on purpose fill the latter.
    /// Caller holds the tree's lock.</summary>
    public static bool InodeRefRoom(BTree t, ulong ino, ulong parent, ReadOnlySpan<byte> name) =>
        t.ItemSize(new Key(ino, KeyTypes.InodeRef, parent)) + InodeRef.HeaderSize + name.Length <= t.MaxItemData
        || t.ItemSize(new Key(ino, KeyTypes.InodeExtref, InodeExtref.Hash(parent, name))) + InodeExtref.HeaderSize + name.Length <= t.MaxItemData;

    /// <summary>Removes a name from the child's INODE_REF (or INODE_EXTREF) and returns its
    /// DIR_INDEX number.</summary>
    public static ulong RemoveInodeRef(ITreeContext h, BTree t, ulong ino, ulong parent, ReadOnlySpan<byte> name)
    {
        BlockLog(h, t, ino);
        var key = new Key(ino, KeyTypes.InodeRef, parent);
        var refs = t.Get(key);
        if (refs != null)
            for (int pos = 0; pos < refs.Length;)
            {
                if (!InodeRef.TryRead(refs.AsSpan(pos), out var r, out int size)) throw new CorruptionException($"malformed INODE_REF of inode {ino}", inode: ino);
                if (r.Name.SequenceEqual(name))
                {
                    ulong index = r.Index;
                    Cut(h, t, key, refs, pos, size);
                    return index;
                }
                pos += size;
            }
        var xkey = new Key(ino, KeyTypes.InodeExtref, InodeExtref.Hash(parent, name));
        var xrefs = t.Get(xkey) ?? throw new CorruptionException($"inode {ino} has no INODE_REF name for an entry of directory {parent}", inode: ino);
        for (int pos = 0; pos < xrefs.Length;)
        {
            if (!InodeExtref.TryRead(xrefs.AsSpan(pos), out var r, out int size)) throw new CorruptionException($"malformed INODE_EXTREF of inode {ino}", inode: ino);
            if (r.Parent == parent && r.Name.SequenceEqual(name))
            {
                ulong index = r.Index;
                Cut(h, t, xkey, xrefs, pos, size);
                return index;
            }
            pos += size;
        }
        throw new CorruptionException($"inode {ino} has no INODE_REF name for an entry of directory {parent}", inode: ino);
    }

    /// <summary>Removes bytes [pos, pos + size) of an item whose whole value is
    /// <paramref name="old"/>, deleting the item when nothing is left.</summary>
    private static void Cut(ITreeContext h, BTree t, Key key, byte[] old, int pos, int size)
    {
        if (size == old.Length) { t.Delete(h, key); return; }
        var rest = new byte[old.Length - size];
        old.AsSpan(0, pos).CopyTo(rest);
        old.AsSpan(pos + size).CopyTo(rest.AsSpan(pos));
        t.Put(h, key, rest);
    }

    /// <summary>The directory's next DIR_INDEX: one past the largest present, at least 2
    /// (0 and 1 are the cookies of "." and "..").</summary>
    public static ulong FindNextIndex(BTree t, ulong dir)
    {
        using var lease = TreePath.Rent(out var path);
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
        using var lease = TreePath.Rent(out var path);
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

using Reservoir.Common;
using Reservoir.Common.Concurrency;
using Reservoir.Engine.Tree;
using Reservoir.Engine.Tx;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Inodes;

/// <summary>
/// One file tree (an fs tree: the top-level subvolume today, snapshots later) and its in-memory
/// inodes. Inode objects are shared by reference count so that everyone who works on an inode
/// uses the same lock.
/// </summary>
internal sealed class Subvolume
{
    private readonly FsMutex _table; // guards _inodes, _nextIno and every Inode's Refs/OpenCount
    private readonly Dictionary<ulong, Inode> _inodes = new();
    private ulong _nextIno;
    public FsInfo Fs { get; }
    public BTree Tree { get; }
    public ulong Id => Tree.Id;
    public int CacheLimit { get; set; } = 100_000;
    /// <summary>Deleted: its name is gone and its tree is to be dropped; no inode of it can be
    /// acquired or opened any more, except through files open when it died. Set under the
    /// table lock (<see cref="MarkDead"/>), where Acquire reads it and opens are counted.</summary>
    public volatile bool Dead;
    /// <summary>Read-only (ROOT_ITEM flag): every change to its inodes answers EROFS.</summary>
    public volatile bool ReadOnly;
    /// <summary>A snapshot of it is being taken: writes reserve copy-on-write even where they
    /// would go in place (btrfs's snapshot_force_cow), so that nothing reserved to go in place
    /// between the snapshot's flush and its creation lands in an extent the snapshot shares.</summary>
    public volatile bool ForceCow;

    public Subvolume(FsInfo fs, BTree tree)
    {
        Fs = fs;
        Tree = tree;
        _table = fs.Sched.CreateMutex($"inode-table-{tree.Id}");
    }

    /// <summary>Takes a reference on an inode, loading it from the tree. ENOENT if it does
    /// not exist (or was deleted), and in a dead subvolume for any inode but one that is open
    /// (its open file's reads, writes, fstat and close: the close of a file open at the
    /// deletion must get here, or the tree would wait for it for ever). The load happens under
    /// the table lock: loading outside it could install a stale item if the cached copy were
    /// evicted and changed meanwhile. (Lock order allows it: nobody takes the table lock while
    /// holding a tree lock.)</summary>
    public Errno Acquire(ulong ino, out Inode inode)
    {
        using var _ = _table.Lock();
        if (_inodes.TryGetValue(ino, out inode!) && (!Dead || inode.OpenCount > 0))
        {
            inode.Refs++;
            return Errno.OK;
        }
        if (Dead) { inode = null!; return Errno.ENOENT; }
        byte[]? data;
        using (Tree.Lock.Read()) data = Tree.Get(new Key(ino, KeyTypes.InodeItem, 0));
        if (data == null) { inode = null!; return Errno.ENOENT; }
        if (data.Length != InodeItem.Size) throw new CorruptionException($"INODE_ITEM of {data.Length} bytes", inode: ino);
        inode = new Inode(this, ino, InodeItem.Read(data), Fs.Sched) { Refs = 1 };
        _inodes[ino] = inode;
        if (_inodes.Count > CacheLimit) EvictUnsynchronized();
        return Errno.OK;
    }

    /// <summary>Registers a just-created inode with one reference held by the caller.</summary>
    public Inode Adopt(ulong ino, InodeItem item)
    {
        var inode = new Inode(this, ino, item, Fs.Sched) { Refs = 1 };
        using var _ = _table.Lock();
        _inodes[ino] = inode;
        return inode;
    }

    public void Release(Inode inode)
    {
        using var _ = _table.Lock();
        if (--inode.Refs < 0) ThrowHelper.Invariant($"inode {inode.Ino} released too often");
        if (inode.Deleted && inode.Refs == 0) _inodes.Remove(inode.Ino);
        if (Dead && inode.Refs == 0) _table.PulseAll(); // the cleaner may wait for the last
    }

    /// <summary>Subvolume deletion's first step: marks it dead, so that no inode of it is
    /// acquired or opened from now on, except the files open now (btrfs's rule: they stay usable
    /// until closed, and the tree goes after the last close). Under the table lock, where opens
    /// are counted: an open that comes later fails. Undone by <see cref="Revive"/> when the
    /// deletion fails after it.</summary>
    public void MarkDead()
    {
        using var _ = _table.Lock();
        Dead = true;
    }

    public void Revive()
    {
        using var _ = _table.Lock();
        Dead = false;
    }

    /// <summary>Waits until no operation and no open file holds an inode of this dead
    /// subvolume: one that acquired it before <see cref="MarkDead"/> may still be writing items
    /// into the tree, and an open file may write until its last close; the tree must not be
    /// dropped under them (btrfs likewise drops a deleted root only once its last inode is
    /// evicted).</summary>
    /// <returns>false if <paramref name="stop"/> (an unmount) said to stop first.</returns>
    public bool WaitUntilUnreferenced(Func<bool> stop)
    {
        using var _ = _table.Lock();
        while (_inodes.Values.Any(i => i.Refs > 0))
        {
            if (stop()) return false;
            _table.Wait(100);
        }
        return true;
    }

    /// <summary>Counts an open; false once the subvolume is dead (an open that comes after the
    /// deletion must not keep its tree).</summary>
    public bool TryOpen(Inode inode)
    {
        using var _ = _table.Lock();
        if (Dead) return false;
        ++inode.OpenCount;
        return true;
    }

    /// <summary>Returns the number of opens left.</summary>
    public int Close(Inode inode)
    {
        using var _ = _table.Lock();
        if (inode.OpenCount == 0) ThrowHelper.Invariant($"inode {inode.Ino} closed more than opened");
        return --inode.OpenCount;
    }

    /// <summary>Whether any file of this subvolume is open (a dead one's tree waits for the
    /// last close).</summary>
    public bool HasOpenFiles
    {
        get
        {
            using var _ = _table.Lock();
            return _inodes.Values.Any(i => i.OpenCount > 0);
        }
    }

    public int OpenCountOf(Inode inode)
    {
        using var _ = _table.Lock();
        return inode.OpenCount;
    }

    private void EvictUnsynchronized()
    {
        // An inode with a mapping stays: its pages, ledger and ordered extents refer to this very
        // object, and a second object for the same inode would have a second lock.
        foreach (var k in _inodes.Where(kv => kv.Value.Refs == 0 && kv.Value.OpenCount == 0 && kv.Value.Mapping == null).Select(kv => kv.Key).Take(_inodes.Count / 4).ToList())
            _inodes.Remove(k);
    }

    /// <summary>Next free inode number; found from the tree's last inode on first use.</summary>
    public ulong AllocIno()
    {
        using (_table.Lock())
            if (_nextIno != 0) return _nextIno++;
        ulong next = FormatConstants.FirstFreeObjectId;
        using (Tree.Lock.Read())
        {
            var path = new TreePath();
            // Orphan items use objectid -5, above every inode; search below them.
            if (Tree.SeekLE(new Key(TreeIds.OrphanObjectId - 1, 0, 0), path))
                next = Math.Max(next, path.Key.ObjectId + 1);
        }
        using (_table.Lock())
        {
            if (_nextIno == 0) _nextIno = next;
            return _nextIno++;
        }
    }

    public int LoadedInodes { get { using var _ = _table.Lock(); return _inodes.Count; } }

    /// <summary>The inodes in memory now (a copy).</summary>
    public List<Inode> LoadedInodeList() { using var _ = _table.Lock(); return _inodes.Values.ToList(); }

    /// <summary>
    /// Forgets idle inodes that carry an idle mapping: no reference, not open, and
    /// <paramref name="dropMapping"/> agrees (it checks, under the mapping's state lock, that the
    /// mapping owns nothing, and unregisters it). Done under the table lock so that no one can
    /// take a reference in between and keep using the forgotten object.
    /// </summary>
    public int DropIdleMappings(Func<Mapping, bool> dropMapping)
    {
        using var _ = _table.Lock();
        var idle = _inodes.Values.Where(i => i.Refs == 0 && i.OpenCount == 0 && i.Mapping != null).ToList();
        int n = 0;
        foreach (var inode in idle)
        {
            if (!dropMapping(inode.Mapping!)) continue;
            _inodes.Remove(inode.Ino);
            n++;
        }
        return n;
    }
}

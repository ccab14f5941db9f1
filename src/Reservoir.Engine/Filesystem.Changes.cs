using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>What changed between two read-only subvolumes, and where an inode is: what an
/// incremental send needs to cost the change rather than the size of the subvolume.</summary>
public readonly record struct InodeChanges(IReadOnlyList<ulong> Inodes, long NodesRead);

public sealed partial class Filesystem
{
    /// <summary>
    /// The inode numbers any of whose items (the inode itself, its names, its directory
    /// entries, extents or xattrs) differ between the read-only subvolumes
    /// <paramref name="olderTree"/> and <paramref name="newerTree"/>, in ascending order: every
    /// inode an incremental send between them has to look at, and usually few more (an atime
    /// moved). The two trees are compared node by node and whatever they share is stepped over
    /// unread (<see cref="TreeCompare"/>), so for a snapshot and a later one of the same
    /// subvolume the work follows what changed between them, not how much they hold. Both must
    /// be read-only (EINVAL otherwise): a tree that may change under the walk has no one
    /// answer.
    /// </summary>
    public Errno ChangedInodes(ulong olderTree, ulong newerTree, out InodeChanges changes)
    {
        changes = new([], 0);
        var older = SubvolumeOf(olderTree);
        var newer = SubvolumeOf(newerTree);
        if (older == null || newer == null || older.Dead || newer.Dead) return Errno.ENOENT;
        if (!older.ReadOnly || !newer.ReadOnly) return Errno.EINVAL;
        if (olderTree == newerTree) return Errno.OK;
        InodeChanges result = changes;
        var e = Guard(NodeIds.Encode(newerTree, RootIno), () =>
        {
            var found = new List<ulong>();
            // Both trees are read at once, their read locks taken in tree id order so that two
            // comparisons never wait for each other crosswise; nothing else waits for an fs
            // tree's lock while holding another's, and read-only trees have no writers but a
            // snapshot being taken of them.
            var (first, second) = olderTree < newerTree ? (older.Tree, newer.Tree) : (newer.Tree, older.Tree);
            using var l1 = first.Lock.Read();
            using var l2 = second.Lock.Read();
            long nodes = TreeCompare.Run(older.Tree, newer.Tree, (k, _) =>
            {
                // Keys come in order, so an inode's keys come together. Objectids past the inode
                // range (the orphan list's) name no inode of the subvolume.
                if (k.ObjectId > NodeIds.MaxIno || k.ObjectId < RootIno) return;
                if (found.Count == 0 || found[^1] != k.ObjectId) found.Add(k.ObjectId);
            });
            result = new InodeChanges(found, nodes);
            return Errno.OK;
        });
        changes = result;
        return e;
    }

    /// <summary>
    /// Every name of the inode <paramref name="node"/> as (directory node id, name), from its
    /// INODE_REF and INODE_EXTREF items (btrfs's INO_LOOKUP and INO_PATHS read the same): none
    /// for an inode that has no name (unlinked while open) and for a subvolume's root (whose
    /// name lives in its parent subvolume). ENOENT if the inode does not exist.
    /// </summary>
    public Errno InodeNames(ulong node, out List<(ulong Dir, string Name)> names)
    {
        names = new();
        var (treeId, ino) = NodeIds.Decode(node);
        var sv = SubvolumeOf(treeId);
        if (sv == null || sv.Dead) return Errno.ENOENT;
        var result = names;
        return Guard(node, () =>
        {
            var t = sv.Tree;
            using var lk = t.Lock.Read();
            if (t.ItemSize(DirItems.InodeKey(ino)) == 0) return Errno.ENOENT;
            if (ino == RootIno) return Errno.OK;
            foreach (var (dir, name) in NamesOf(t, ino, firstOnly: false)) result.Add((NodeIds.Encode(treeId, dir), name));
            return Errno.OK;
        });
    }

    /// <summary>The names of inode <paramref name="ino"/> of tree <paramref name="t"/> as
    /// (directory inode number, name), from its INODE_REF items, then its INODE_EXTREFs (by
    /// directory inode number within each); only the first with <paramref name="firstOnly"/>.
    /// Caller holds the tree's read lock.</summary>
    private static List<(ulong Dir, string Name)> NamesOf(BTree t, ulong ino, bool firstOnly)
    {
        var names = new List<(ulong, string)>();
        var path = new TreePath();
        for (bool ok = t.SeekGE(new Key(ino, KeyTypes.InodeRef, 0), path); ok; ok = t.Next(path))
        {
            var k = path.Key;
            if (k.ObjectId != ino || k.Type > KeyTypes.InodeExtref) break;
            var data = path.Data;
            while (data.Length > 0)
            {
                ulong dir;
                ReadOnlySpan<byte> name;
                int size;
                if (k.Type == KeyTypes.InodeRef)
                {
                    if (!InodeRef.TryRead(data, out var r, out size)) throw new CorruptionException($"malformed INODE_REF in directory {k.Offset}", inode: ino);
                    dir = k.Offset;
                    name = r.Name;
                }
                else
                {
                    if (!InodeExtref.TryRead(data, out var r, out size)) throw new CorruptionException("malformed INODE_EXTREF", inode: ino);
                    dir = r.Parent;
                    name = r.Name;
                }
                names.Add((dir, Encoding.UTF8.GetString(name)));
                if (firstOnly) return names;
                data = data[size..];
            }
        }
        return names;
    }

    /// <summary>
    /// The inode numbers the back-references (EXTENT_DATA_REF) of the data extent at
    /// <paramref name="bytenr"/> name, each once, in ascending order: the files that hold it,
    /// by the numbers they have in every subvolume that shares them (a leaf a snapshot shares
    /// records its owner's references, and snapshots keep inode numbers), those committed and
    /// those the running transaction adds. Empty when nothing is there.
    /// </summary>
    public Errno ExtentReferrers(ulong bytenr, out List<ulong> inodes)
    {
        var found = new SortedSet<ulong>();
        inodes = new();
        var e = Guard(RootIno, () =>
        {
            var t = Fs.ExtentTree;
            using var lk = t.Lock.Read();
            var path = new TreePath();
            for (bool ok = t.SeekGE(new Key(bytenr, KeyTypes.ExtentDataRef, 0), path); ok; ok = t.Next(path))
            {
                var k = path.Key;
                if (k.ObjectId != bytenr || k.Type != KeyTypes.ExtentDataRef) break;
                if (!ExtentDataRef.TryRead(path.Data, out var r)) throw new CorruptionException($"malformed EXTENT_DATA_REF of data extent {bytenr}", bytenr);
                found.Add(r.Inode);
            }
            Fs.Running.Refs.AddedReferrers(bytenr, found);
            return Errno.OK;
        });
        inodes.AddRange(found);
        return e;
    }
}

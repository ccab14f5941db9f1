using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

/// <summary>What a subvolume is asked and set after it exists: the default subvolume, the root a
/// mount serves (`subvol=`, `subvolid=`), `subvolume show`, and the read-only property.</summary>
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
            if (tree != TreeIds.FsTree && !TryLinkAndPath(tree, out parent, out dirid, out path)) return Errno.ENOENT;
            result = new SubvolumeInfo(tree, parent, dirid, path, r.Generation, r.Otransid, r.Otime, r.Uuid, r.ParentUuid, (r.Flags & RootItem.FlagReadOnly) != 0,
                r.ReceivedUuid, r.Stransid);
            return Errno.OK;
        });
        info = result;
        return e;
    }

    /// <summary>
    /// Records that the subvolume whose root is <paramref name="node"/> is the receive of the
    /// sent subvolume <paramref name="receivedUuid"/> at its transaction <paramref name="stransid"/>
    /// (btrfs's SET_RECEIVED_SUBVOL): later incremental streams against that sent subvolume find
    /// it by these. Only while the subvolume is writable (EROFS otherwise, as on btrfs): a
    /// receive sets them, then makes the subvolume read-only.
    /// </summary>
    public Errno SetReceivedSubvolume(ulong node, Guid receivedUuid, ulong stransid)
    {
        var (tree, ino) = NodeIds.Decode(node);
        if (ino != RootIno) return Errno.EINVAL;
        if (tree == TreeIds.FsTree) return Errno.EINVAL;
        return Guard(node, () =>
        {
            if (Fs.ReadOnly) return Errno.EROFS;
            if (!IsLiveSubvolume(tree)) return Errno.ENOENT;
            if (SubvolumeOf(tree)!.ReadOnly) return Errno.EROFS;
            var se = Fs.TryStart(1, out var h);
            if (se != Errno.OK) return se;
            using (h)
            using (Fs.RootTree.Lock.Write())
            {
                var key = new Key(tree, KeyTypes.RootItem, 0);
                var d = Fs.RootTree.Get(key) ?? throw new CorruptionException($"subvolume {tree} has no ROOT_ITEM");
                var ri = RootItem.Read(d);
                ri.ReceivedUuid = receivedUuid;
                ri.Stransid = stransid;
                ri.Rtransid = h.Transid;
                Span<byte> buf = stackalloc byte[RootItem.Size];
                ri.Write(buf);
                Fs.RootTree.Put(h, key, buf);
            }
            return Errno.OK;
        });
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
                // A received subvolume made writable may change, and would then no longer be
                // the snapshot an incremental stream's changes apply to: it stops being one
                // (as btrfs does since 5.14), so a later receive cannot take it for its parent.
                if (!readOnly && was && ri.ReceivedUuid != Guid.Empty)
                {
                    ri.ReceivedUuid = Guid.Empty;
                    ri.Stransid = ri.Rtransid = 0;
                }
                Span<byte> buf = stackalloc byte[RootItem.Size];
                ri.Write(buf);
                Fs.RootTree.Put(h, key, buf);
            }
            return Errno.OK;
        });
    }
}

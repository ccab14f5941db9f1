using Reservoir.Common.Concurrency;
using Reservoir.Format.Items;

namespace Reservoir.Engine.Inodes;

/// <summary>What is known of an inode's security.capability attribute.</summary>
internal enum CapabilityXattr : byte { Unknown, Absent, Present }

/// <summary>
/// An inode in memory. <see cref="Lock"/> is the inode's i_rwsem: held exclusively by anything
/// that changes the inode (its item, its data, its directory entries if it is a directory) and
/// shared by readers. <see cref="Item"/> is the authoritative copy while the inode is in memory;
/// every change is written to the tree in the same transaction handle.
/// </summary>
internal sealed class Inode
{
    /// <summary>The inode number inside its subvolume's tree (the objectid of its items).</summary>
    public ulong Ino { get; }
    /// <summary>The subvolume (file tree) the inode lives in.</summary>
    public Subvolume Subvol { get; }
    /// <summary>The number the filesystem API and the mount know it by: unique across
    /// subvolumes (<see cref="NodeIds"/>).</summary>
    public ulong NodeId => NodeIds.Encode(Subvol.Id, Ino);
    public FsRwLock Lock { get; }
    /// <summary>Guarded by <see cref="Lock"/> (write to change, read to look).</summary>
    public InodeItem Item;
    /// <summary>Next DIR_INDEX for a directory, 0 until looked up. Guarded by Lock.</summary>
    public ulong NextDirIndex;
    /// <summary>Guarded by the subvolume's inode table lock.</summary>
    public int Refs;
    /// <summary>Open file handles; an unlinked inode lives until the last one closes.
    /// Guarded by the subvolume's inode table lock.</summary>
    public int OpenCount;
    /// <summary>Unlinked with nlink 0 and an orphan item written. Guarded by Lock.</summary>
    public bool Orphaned;
    /// <summary>Its items have been removed from the tree. Guarded by Lock.</summary>
    public bool Deleted;
    /// <summary>Whether the inode has a security.capability attribute: unknown until first
    /// asked, then kept up to date by setxattr and removexattr, so that a write, which must
    /// drop the attribute (<c>Filesystem.DropPrivileges</c>), looks in the tree once per inode
    /// and not once per write. Written under Lock held exclusively; read without it as a hint
    /// (a stale "no" is impossible: only setxattr, under the write lock, makes it "yes").</summary>
    public volatile CapabilityXattr Capability;
    /// <summary>The access ACL (system.posix_acl_access), null for none, once
    /// <see cref="AccessAclKnown"/>: read from the tree on the first permission check that needs
    /// it, then kept by every change of the attribute (setxattr, removexattr, chmod), so a
    /// check costs no lookup. Guarded by Lock (written under it held exclusively; the pair is
    /// published as one object, <see cref="KnownAcl"/>, so a reader without the lock sees
    /// both or neither).</summary>
    public volatile KnownAcl? AccessAcl;
    /// <summary>A directory's default ACL (system.posix_acl_default), kept as
    /// <see cref="AccessAcl"/> is: every create in the directory asks it.</summary>
    public volatile KnownAcl? DefaultAcl;
    /// <summary>The page cache and data-path state of a regular file, created on first use.
    /// Set once, under the data engine's registry lock (DataEngine.MappingOf), and read
    /// without a lock after that; a mapping with state keeps the inode in the table (see
    /// Subvolume).</summary>
    public Mapping? Mapping;
    /// <summary>The size the inode item on disk records (for regular files with a mapping,
    /// the size up to which data reached its extents; see Mapping.DiskSize).</summary>
    public ulong PersistedSize => Mapping?.DiskSize ?? Item.FileSize;

    public Inode(Subvolume subvol, ulong ino, InodeItem item, IScheduler sched)
    {
        Subvol = subvol;
        Ino = ino;
        Item = item;
        Lock = sched.CreateRwLock($"inode-{NodeIds.Encode(subvol.Id, ino)}");
    }

    public bool IsDir => Mode.IsDir(Item.Mode);
    public bool IsReg => Mode.IsReg(Item.Mode);
    public bool IsLnk => Mode.IsLnk(Item.Mode);
}

/// <summary>
/// Node ids: the numbers the filesystem API (and through it the FUSE mount, as node ids and
/// st_ino) uses for inodes of every subvolume. Inode numbers repeat across subvolumes (each
/// tree starts at 256); a node id joins the tree id and the inode number so that the pair
/// (st_dev, st_ino) stays unique on one mount, which is what find, tar, du and rsync rely on
/// to recognise hard links and loops. (btrfs gives every subvolume its own st_dev instead;
/// FUSE cannot: every inode of a FUSE mount reports the mount's device.) The top-level
/// subvolume's inodes keep their own numbers, so images without other subvolumes and their
/// mounts see exactly the numbers in the tree.
/// </summary>
public static class NodeIds
{
    /// <summary>Bits of a node id that hold the inode number (the rest hold the tree id).</summary>
    public const int InoBits = 40;
    public const ulong MaxIno = (1UL << InoBits) - 1;

    public static ulong Encode(ulong treeId, ulong ino) =>
        treeId == Format.TreeIds.FsTree ? ino : (treeId << InoBits) | ino;

    public static (ulong TreeId, ulong Ino) Decode(ulong nodeId) =>
        nodeId >> InoBits == 0 ? (Format.TreeIds.FsTree, nodeId) : (nodeId >> InoBits, nodeId & MaxIno);
}

/// <summary>st_mode helpers (S_IFMT bits).</summary>
public static class Mode
{
    public const uint IFMT = 0xF000, IFSOCK = 0xC000, IFLNK = 0xA000, IFREG = 0x8000, IFBLK = 0x6000,
        IFDIR = 0x4000, IFCHR = 0x2000, IFIFO = 0x1000;
    public const uint ISUID = 0x800, ISGID = 0x400, ISVTX = 0x200, PermMask = 0xFFF;
    public static bool IsDir(uint m) => (m & IFMT) == IFDIR;
    public static bool IsReg(uint m) => (m & IFMT) == IFREG;
    public static bool IsLnk(uint m) => (m & IFMT) == IFLNK;
    public static bool ValidType(uint m) => (m & IFMT) is IFSOCK or IFLNK or IFREG or IFBLK or IFDIR or IFCHR or IFIFO;
}

/// <summary>An inode's access ACL as known in memory (<see cref="Inode.AccessAcl"/>): null
/// <see cref="Acl"/> means the inode has none.</summary>
internal sealed record KnownAcl(PosixAcl? Acl)
{
    /// <summary>"Has none", shared (most inodes: nothing to allocate per create).</summary>
    public static readonly KnownAcl None = new((PosixAcl?)null);

    public static KnownAcl Of(PosixAcl? acl) => acl == null ? None : new KnownAcl(acl);
}

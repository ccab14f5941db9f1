using System.Text;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Engine.Tree;
using Reservoir.Format;
using Reservoir.Format.Items;

namespace Reservoir.Engine;

public sealed partial class Filesystem
{
    /// <summary>
    /// Lists a directory from <paramref name="cookie"/> (0 for the start). Entries come in
    /// DIR_INDEX order; each carries the cookie that resumes after it. Indexes are never reused,
    /// so a cookie stays valid however the directory changes: entries added later appear after
    /// it, removed ones simply vanish. <paramref name="emit"/> returns false to stop (buffer full).
    /// </summary>
    public Errno ReadDir(ulong ino, ulong cookie, Func<DirEntryInfo, bool> emit)
    {
        var e = Get(ino, out var dir);
        if (e != Errno.OK) return e;
        try
        {
            var r = Guard(ino, () =>
            {
                using var lk = dir.Lock.Read();
                if (!dir.IsDir) return Errno.ENOTDIR;
                if (dir.Deleted) return Errno.ENOENT;
                var t = dir.Subvol.Tree;
                ulong dino = dir.Ino; // the directory's number in its tree (ino is its node id)
                if (cookie == 0 && !emit(new DirEntryInfo(".", "."u8.ToArray(), ino, FileTypes.Dir, 1))) return Errno.OK;
                if (cookie <= 1)
                {
                    ulong parent;
                    if (dino == RootIno) parent = ParentOfSubvolumeRoot(dir.Subvol);
                    else using (t.Lock.Read()) parent = NodeIds.Encode(dir.Subvol.Id, DirItems.ParentOf(t, dino));
                    if (!emit(new DirEntryInfo("..", ".."u8.ToArray(), parent, FileTypes.Dir, 2))) return Errno.OK;
                }
                ulong from = Math.Max(cookie, 2);
                // Collect a batch under the tree lock, emit outside it: emit may be slow.
                while (true)
                {
                    var batch = new List<DirEntryInfo>();
                    using (t.Lock.Read())
                    {
                        var path = new TreePath();
                        if (t.SeekGE(new Key(dino, KeyTypes.DirIndex, from), path))
                        {
                            do
                            {
                                var k = path.Key;
                                if (k.ObjectId != dino || k.Type != KeyTypes.DirIndex) break;
                                if (!DirEntry.TryRead(path.Data, out var de, out _)) throw new CorruptionException($"malformed DIR_INDEX {k.Offset}", inode: ino);
                                var nb = de.Name.ToArray();
                                batch.Add(new DirEntryInfo(Encoding.UTF8.GetString(nb), nb, EntryNodeId(dir.Subvol, de.Location), de.FileType, k.Offset + 1));
                            } while (batch.Count < 256 && t.Next(path));
                        }
                    }
                    foreach (var d in batch)
                        if (!emit(d)) return Errno.OK;
                    if (batch.Count < 256) return Errno.OK;
                    from = batch[^1].Cookie;
                }
            });
            // A listing from its start reads the directory (getdents' touch_atime).
            if (r == Errno.OK && cookie == 0)
            {
                bool due;
                using (dir.Lock.Read()) due = AtimeDue(dir);
                if (due) TouchAtime(dir, ino);
            }
            return r;
        }
        finally { Put(dir); }
    }

    /// <summary>All entries of a directory except "." and "..".</summary>
    public Errno ListDir(ulong ino, out List<DirEntryInfo> entries)
    {
        var list = new List<DirEntryInfo>();
        var e = ReadDir(ino, 2, d => { list.Add(d); return true; });
        entries = list;
        return e;
    }
}

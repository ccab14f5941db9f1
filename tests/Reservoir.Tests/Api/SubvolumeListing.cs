using System.Text;
using Reservoir.Api;
using Reservoir.Engine.Inodes;
using Reservoir.Format;

namespace Reservoir.Tests.Api;

/// <summary>A subvolume's inodes as send and receive must keep them, for comparing two trees.</summary>
internal static class SubvolumeListing
{
    public sealed record Seen(string Path, uint Mode, uint Uid, uint Gid, ulong Size, ulong Rdev, Timespec Mtime, Timespec Atime, string Link, string Xattrs, ulong Ino);

    /// <summary>Every inode under <paramref name="root"/>, attributes read before any data is.</summary>
    public static List<Seen> Walk(ReservoirFileSystem fs, string root)
    {
        var list = new List<Seen>();
        void Go(string rel)
        {
            string p = rel.Length == 0 ? root : root + "/" + rel;
            var a = fs.GetInfo(p).Attr;
            TestFs.Ok(fs.Engine.ListXattrNames(a.Ino, out var names));
            string xs = string.Join(",", names.Select(n => { fs.Engine.GetXattr(a.Ino, n, out var v); return Encoding.UTF8.GetString(n) + "=" + Convert.ToHexString(v); }).Order(StringComparer.Ordinal));
            list.Add(new Seen(rel, a.Mode, a.Uid, a.Gid, a.IsDir ? 0 : a.Size, a.Rdev, a.Mtime, a.Atime, a.IsLnk ? fs.ReadLink(p) : "", xs, NodeIds.Decode(a.Ino).Ino));
            if (a.IsDir)
                foreach (var e in fs.EnumerateEntries(p).Where(e => e.SubvolumeId == NodeIds.Decode(a.Ino).TreeId).Select(e => e.Name).Order(StringComparer.Ordinal))
                    Go(rel.Length == 0 ? e : rel + "/" + e);
        }
        Go("");
        return list;
    }
}

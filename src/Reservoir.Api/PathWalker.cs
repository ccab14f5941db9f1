using System.Text;
using Reservoir.Common;
using Reservoir.Engine;

namespace Reservoir;

/// <summary>
/// Resolves slash-separated paths to inodes the way the kernel's path walk does: "." and ".."
/// handled, symbolic links followed in the middle of a path and, when asked, at its end; more
/// than 40 links give ELOOP. An absolute path starts at the filesystem's root, a relative one
/// at <paramref name="start"/> (the root unless given: a receive into a directory the daemon
/// names by node id works below it).
/// </summary>
internal sealed class PathWalker(Filesystem fs, ulong start = Filesystem.RootIno)
{
    private const int MaxSymlinks = 40;

    /// <summary>Resolves the directory that holds the last component and the component itself.
    /// The last component is not looked up. "/" yields the root with an empty name.</summary>
    public Errno Parent(string path, out ulong dir, out byte[] name)
    {
        int links = 0;
        return ParentInternal(start, path, ref links, out dir, out name);
    }

    private Errno ParentInternal(ulong start, string path, ref int links, out ulong dir, out byte[] name)
    {
        dir = start;
        name = [];
        if (path.StartsWith('/')) dir = Filesystem.RootIno;
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) return Errno.OK;
        for (int i = 0; i < parts.Length - 1; i++)
        {
            var e = Step(dir, parts[i], ref links, out dir);
            if (e != Errno.OK) return e;
        }
        name = Encoding.UTF8.GetBytes(parts[^1]);
        if (name.Length > 255) return Errno.ENAMETOOLONG;
        return Errno.OK;
    }

    /// <summary>One component: look it up in <paramref name="dir"/>, following a symlink to
    /// a directory.</summary>
    private Errno Step(ulong dir, string part, ref int links, out ulong next)
    {
        next = 0;
        var e = fs.Lookup(dir, part, out var a);
        if (e != Errno.OK) return e;
        if (a.IsLnk)
        {
            e = FollowLink(dir, a.Ino, ref links, out a);
            if (e != Errno.OK) return e;
        }
        if (!a.IsDir) return Errno.ENOTDIR;
        next = a.Ino;
        return Errno.OK;
    }

    private Errno FollowLink(ulong dir, ulong link, ref int links, out InodeAttr target)
    {
        target = default;
        if (++links > MaxSymlinks) return Errno.ELOOP;
        var e = fs.Readlink(link, out string t);
        if (e != Errno.OK) return e;
        e = ParentInternal(dir, t, ref links, out ulong pdir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return fs.GetAttr(pdir, out target);
        var ns = Encoding.UTF8.GetString(name);
        if (ns == ".") return fs.GetAttr(pdir, out target);
        e = fs.Lookup(pdir, name, out target);
        if (e != Errno.OK) return e;
        return target.IsLnk ? FollowLink(pdir, target.Ino, ref links, out target) : Errno.OK;
    }

    /// <summary>Resolves a whole path to its inode, following a final symlink if asked.</summary>
    public Errno Resolve(string path, bool followFinal, out InodeAttr attr)
    {
        attr = default;
        int links = 0;
        var e = ParentInternal(start, path, ref links, out ulong dir, out var name);
        if (e != Errno.OK) return e;
        if (name.Length == 0) return fs.GetAttr(dir, out attr);
        e = fs.Lookup(dir, name, out attr);
        if (e != Errno.OK) return e;
        if (followFinal && attr.IsLnk) return FollowLink(dir, attr.Ino, ref links, out attr);
        if (path.EndsWith('/') && !attr.IsDir && !attr.IsLnk) return Errno.ENOTDIR;
        return Errno.OK;
    }
}

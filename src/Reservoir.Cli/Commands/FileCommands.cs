using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;

namespace Reservoir.Cli.Commands;

/// <summary>
/// Offline access to an unmounted image: ls, cat, cp (paths inside the image are written with a
/// leading ':', e.g. `reservoir cp disk.img ./notes.txt :/docs/notes.txt`; both inside it, a
/// reflink), mkdir, rm.
/// </summary>
internal static class FileCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Ls(ctx), Cat(ctx), Cp(ctx), Mkdir(ctx), Rm(ctx)];

    /// <summary>An unmounted image for one command: read-only unless it writes, no periodic
    /// commits (the command commits when it closes the image). What it makes (directories,
    /// files, subvolumes) belongs to the user running it, as on a mounted filesystem, and as
    /// mkfs gives that user the root directory: an ordinary user's own image stays theirs to
    /// write to (and to mount a subvolume's own mount on, which fusermount3 allows only on a
    /// directory the user may write).</summary>
    internal static ReservoirFileSystem Open(string image, bool write)
    {
        var fs = ReservoirFileSystem.Open(image, new MountOptions { ReadOnly = !write, CommitIntervalMs = 0 });
        fs.Posix.Uid = Geteuid();
        fs.Posix.Gid = Getegid();
        return fs;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint Geteuid();

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getegid")]
    private static extern uint Getegid();

    private static Command Ls(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var path = new Argument<string>("path") { DefaultValueFactory = _ => "/", Arity = ArgumentArity.ZeroOrOne };
        var longFmt = new Option<bool>("-l") { Description = "Long listing: mode, links, owner, size, time" };
        var format = CommonOptions.Format();
        var c = new Command("ls", "List a directory inside an image") { image, path, longFmt, format };
        c.SetAction(pr =>
        {
            bool json = CommonOptions.IsJson(pr, format);
            using var fs = Open(pr.GetValue(image)!, false);
            string p = pr.GetValue(path)!;
            var info = fs.GetInfo(p, followLinks: true);
            var entries = info.IsDirectory ? fs.EnumerateEntries(p).OrderBy(e => e.Name, StringComparer.Ordinal).ToList() : [info];
            if (json)
            {
                ctx.Json(entries.Select(e => new
                {
                    name = e.Name, path = e.Path, ino = e.Attr.Ino, type = TypeName(e.Attr.Mode), mode = Convert.ToString(e.Attr.Mode & 0xFFF, 8),
                    nlink = e.Attr.Nlink, uid = e.Attr.Uid, gid = e.Attr.Gid, size = e.Attr.Size, mtime = e.LastWriteTimeUtc,
                    target = e.IsSymlink ? fs.ReadLink(e.Path) : null,
                }));
                return 0;
            }
            foreach (var e in entries)
            {
                if (!pr.GetValue(longFmt)) { ctx.Out.WriteLine(e.Name); continue; }
                string link = e.IsSymlink ? " -> " + fs.ReadLink(e.Path) : "";
                ctx.Out.WriteLine($"{ModeString(e.Attr.Mode)} {e.Attr.Nlink,3} {e.Attr.Uid,5} {e.Attr.Gid,5} {e.Attr.Size,12} {e.LastWriteTimeUtc:yyyy-MM-dd HH:mm} {e.Name}{link}");
            }
            return 0;
        });
        return c;
    }

    private static Command Cat(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var path = new Argument<string>("path");
        var c = new Command("cat", "Write a file from inside an image to stdout") { image, path };
        c.SetAction(pr =>
        {
            using var fs = Open(pr.GetValue(image)!, false);
            using var s = fs.OpenFile(pr.GetValue(path)!, FileMode.Open, FileAccess.Read);
            using var stdout = ReferenceEquals(ctx.Out, Console.Out) ? Console.OpenStandardOutput() : null;
            if (stdout != null) s.CopyTo(stdout, 1 << 20);
            else { using var r = new StreamReader(s); ctx.Out.Write(r.ReadToEnd()); }
            return 0;
        });
        return c;
    }

    private static Command Cp(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var src = new Argument<string>("source") { Description = "Host path, or :/path inside the image" };
        var dst = new Argument<string>("dest") { Description = "Host path, or :/path inside the image" };
        var recursive = new Option<bool>("-r", "-R", "--recursive") { Description = "Copy directories recursively" };
        var reflink = new Option<string>("--reflink")
        {
            Description = "Within the image (both paths :/…): always or auto (the default) share the source's data extents, a copy on write on either side's next change (cp --reflink, which a FUSE mount cannot pass to the filesystem); never copies the bytes",
            DefaultValueFactory = _ => "auto",
        };
        reflink.AcceptOnlyFromAmong("always", "auto", "never");
        var preserve = new Option<bool>("-p", "--preserve") { Description = "Keep each file's mode (set-user-ID and the like too), owner and times, as cp -p (without it a copy takes the source's mode less the umask, as cp does)" };
        var archive = new Option<bool>("-a", "--archive") { Description = "-r and -p, and each file's extended attributes and POSIX ACLs, as cp -a" };
        var c = new Command("cp", "Copy files into, out of or within an image (image paths start with ':')") { image, src, dst, recursive, reflink, preserve, archive };
        c.SetAction(pr =>
        {
            string s = pr.GetValue(src)!, d = pr.GetValue(dst)!;
            bool sIn = s.StartsWith(':'), dIn = d.StartsWith(':');
            if (!sIn && !dIn) throw new ArgumentException("source or dest must be an image path (written :/path)");
            using var fs = Open(pr.GetValue(image)!, write: dIn);
            long copied = 0;
            bool a = pr.GetValue(archive), rec = pr.GetValue(recursive) || a;
            var keep = new CopyAttributes(ctx, a || pr.GetValue(preserve), a, HostFiles.Umask());
            if (sIn && dIn) CopyWithin(ctx, fs, s[1..], d[1..], rec, pr.GetValue(reflink) != "never", keep, ref copied);
            else if (dIn) CopyIn(ctx, fs, s, d[1..], rec, keep, ref copied);
            else CopyOut(ctx, fs, s[1..], d, rec, keep, ref copied);
            ctx.ProgressDone();
            if (dIn) fs.Sync();
            return 0;
        });
        return c;
    }

    /// <summary>
    /// A copy inside the image, as cp makes one on btrfs: each regular file a reflink of its
    /// source (<paramref name="share"/>: every data extent shared, the quota group of the
    /// destination's subvolume charged for what it starts referencing, EDQUOT before any change
    /// past its limit; else the bytes copied), directories with -r, symbolic links as links.
    /// </summary>
    private static void CopyWithin(CliContext ctx, ReservoirFileSystem fs, string from, string to, bool recursive, bool share, CopyAttributes keep, ref long copied)
    {
        var info = fs.GetInfo(from);
        if (fs.DirectoryExists(to)) to = to.TrimEnd('/') + "/" + info.Name;
        if (info.IsDirectory)
        {
            if (!recursive) throw new IOException($"':{from}' is a directory (use -r)");
            string f = from.TrimEnd('/') + "/", t = to.TrimEnd('/') + "/";
            if (t.StartsWith(f, StringComparison.Ordinal)) throw new IOException($"cannot copy ':{from}' into itself, ':{to}'");
            fs.CreateDirectory(to);
            foreach (var e in fs.EnumerateEntries(from).ToList())
                CopyWithin(ctx, fs, e.Path, to + "/" + e.Name, true, share, keep, ref copied);
            keep.ToImage(fs, to, info.Attr, keep.Xattrs ? ImageXattrs(fs, from) : []);
            return;
        }
        if (info.IsSymlink) { fs.CreateSymbolicLink(to, fs.ReadLink(from)); return; }
        if (IsSpecial(info.Attr.Mode))
        {
            Check(fs.Posix.Mknod(to, info.Attr.Mode, info.Attr.Rdev), to);
            keep.ToImage(fs, to, info.Attr, keep.Xattrs ? ImageXattrs(fs, from) : []);
            return;
        }
        // Before anything opens dest for writing: the same file (the same path, or another
        // link to it) would be emptied first.
        if (fs.Exists(to) && fs.GetInfo(to, followLinks: true).Attr.Ino == info.Attr.Ino)
            throw new IOException($"':{from}' and ':{to}' are the same file");
        if (share && info.Attr.IsReg)
        {
            fs.CloneFile(from, to);
            copied += (long)info.Attr.Size;
            ctx.Progress($"{to}: {Units.Human((ulong)copied)} shared");
        }
        else
        {
            using var input = fs.OpenFile(from, FileMode.Open, FileAccess.Read);
            using var output = fs.OpenFile(to, FileMode.Create, FileAccess.Write);
            Pump(ctx, input, output, to, ref copied);
        }
        keep.ToImage(fs, to, info.Attr, keep.Xattrs ? ImageXattrs(fs, from) : []);
    }

    private static void CopyIn(CliContext ctx, ReservoirFileSystem fs, string host, string inner, bool recursive, CopyAttributes keep, ref long copied)
    {
        if (fs.DirectoryExists(inner)) inner = inner.TrimEnd('/') + "/" + Path.GetFileName(host.TrimEnd('/'));
        var fi = new FileInfo(host);
        if (fi.LinkTarget != null) { fs.CreateSymbolicLink(inner, fi.LinkTarget); return; }
        var st = HostFiles.Lstat(host);
        var attr = new InodeAttr(0, st.Mode, 0, st.Uid, st.Gid, 0, 0, 0, 0, st.Atime, st.Mtime, default, default, 0, 0);
        if (Directory.Exists(host))
        {
            if (!recursive) throw new IOException($"'{host}' is a directory (use -r)");
            fs.CreateDirectory(inner);
            foreach (var e in new DirectoryInfo(host).EnumerateFileSystemInfos())
                CopyIn(ctx, fs, e.FullName, inner + "/" + e.Name, true, keep, ref copied);
        }
        else if (IsSpecial(st.Mode))
            Check(fs.Posix.Mknod(inner, st.Mode, HostFiles.LstatFull(host).Rdev), inner);
        else
        {
            using var input = File.OpenRead(host);
            using var output = fs.OpenFile(inner, FileMode.Create, FileAccess.Write);
            Pump(ctx, input, output, inner, ref copied);
        }
        keep.ToImage(fs, inner, attr, keep.Xattrs ? HostFiles.ListXattrs(host).Select(n => (n, HostFiles.GetXattr(host, n))).ToList() : []);
    }

    private static void CopyOut(CliContext ctx, ReservoirFileSystem fs, string inner, string host, bool recursive, CopyAttributes keep, ref long copied)
    {
        if (Directory.Exists(host)) host = Path.Combine(host, Path.GetFileName(inner.TrimEnd('/')));
        var info = fs.GetInfo(inner);
        if (info.IsSymlink) { File.CreateSymbolicLink(host, fs.ReadLink(inner)); return; }
        if (info.IsDirectory)
        {
            if (!recursive) throw new IOException($"':{inner}' is a directory (use -r)");
            Directory.CreateDirectory(host);
            foreach (var e in fs.EnumerateEntries(inner).ToList())
                CopyOut(ctx, fs, e.Path, Path.Combine(host, e.Name), true, keep, ref copied);
        }
        else if (IsSpecial(info.Attr.Mode)) HostFiles.Mknod(host, info.Attr.Mode, info.Attr.Rdev);
        else
        {
            using var input = fs.OpenFile(inner, FileMode.Open, FileAccess.Read);
            using var output = File.Create(host);
            Pump(ctx, input, output, inner, ref copied);
        }
        keep.ToHost(host, info.Attr, keep.Xattrs ? ImageXattrs(fs, inner) : []);
    }

    /// <summary>A FIFO, socket or device node: cp -R makes a new one rather than open it (opening
    /// a FIFO would wait for a writer, forever).</summary>
    private static bool IsSpecial(uint mode) => (mode & 0xF000) is 0x1000 or 0xC000 or 0x2000 or 0x6000;

    private static void Check(Errno e, string path)
    {
        if (e != Errno.OK) throw new FsException(e, $"cannot create ':{path}'");
    }

    /// <summary>A file's attributes in the image (cp -a).</summary>
    private static List<(byte[] Name, byte[] Value)> ImageXattrs(ReservoirFileSystem fs, string path)
    {
        var list = new List<(byte[], byte[])>();
        if (fs.Posix.ListXattrNames(path, out var names) != Errno.OK) return list;
        foreach (var n in names)
            if (fs.Posix.GetXattr(path, n, out var v) == Errno.OK) list.Add((n, v));
        return list;
    }

    private static void Pump(CliContext ctx, Stream from, Stream to, string name, ref long copied)
    {
        var buf = new byte[1 << 20];
        int n;
        while ((n = from.Read(buf, 0, buf.Length)) > 0)
        {
            try { to.Write(buf, 0, n); }
            catch (FsException ex) { throw new FsException(ex.Errno, $"writing '{name}' after {Units.Human((ulong)copied)}"); }
            copied += n;
            ctx.Progress($"{name}: {Units.Human((ulong)copied)} copied");
        }
    }

    private static Command Mkdir(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var path = new Argument<string>("path");
        var parents = new Option<bool>("-p", "--parents") { Description = "Create missing parents; no error if it exists" };
        var c = new Command("mkdir", "Create a directory inside an image") { image, path, parents };
        c.SetAction(pr =>
        {
            using var fs = Open(pr.GetValue(image)!, true);
            string p = pr.GetValue(path)!;
            if (pr.GetValue(parents)) fs.CreateDirectory(p);
            else
            {
                var e = fs.Posix.Mkdir(p);
                if (e != Errno.OK) { ctx.Err.WriteLine($"reservoir mkdir: {p}: {e.Describe()}"); return 1; }
            }
            return 0;
        });
        return c;
    }

    private static Command Rm(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var path = new Argument<string>("path");
        var recursive = new Option<bool>("-r", "-R", "--recursive") { Description = "Remove directories and their contents" };
        var noPreserveRoot = new Option<bool>("--no-preserve-root") { Description = "Let -r empty the whole image (its root: '/', '/.', …), which is refused otherwise, as rm(1) refuses '/'" };
        var c = new Command("rm", "Remove a file (or with -r a directory tree) inside an image") { image, path, recursive, noPreserveRoot };
        c.SetAction(pr =>
        {
            using var fs = Open(pr.GetValue(image)!, true);
            string p = pr.GetValue(path)!;
            var info = fs.GetInfo(p);
            if (info.IsDirectory && !pr.GetValue(recursive)) { ctx.Err.WriteLine($"reservoir rm: {p}: is a directory (use -r)"); return 1; }
            // However it is spelled: the root's inode.
            if (info.IsDirectory && info.Attr.Ino == fs.GetInfo("/").Attr.Ino)
            {
                if (!pr.GetValue(noPreserveRoot))
                {
                    ctx.Err.WriteLine($"reservoir rm: it is dangerous to operate recursively on '{p}', the image's root (use --no-preserve-root to empty the image)");
                    return 1;
                }
                // Everything in it; the root itself stays (it cannot go).
                foreach (var e in fs.EnumerateEntries("/").ToList()) fs.Delete(e.Path, recursive: true);
                return 0;
            }
            fs.Delete(p, recursive: true);
            return 0;
        });
        return c;
    }

    internal static string TypeName(uint mode) => (mode & 0xF000) switch
    {
        0x4000 => "dir", 0x8000 => "file", 0xA000 => "symlink", 0x1000 => "fifo", 0x2000 => "char", 0x6000 => "block", 0xC000 => "socket", _ => "unknown",
    };

    private static string ModeString(uint m)
    {
        char t = (m & 0xF000) switch { 0x4000 => 'd', 0xA000 => 'l', 0x1000 => 'p', 0x2000 => 'c', 0x6000 => 'b', 0xC000 => 's', _ => '-' };
        var s = new char[10];
        s[0] = t;
        string rwx = "rwxrwxrwx";
        for (int i = 0; i < 9; i++) s[i + 1] = (m & (1u << (8 - i))) != 0 ? rwx[i] : '-';
        // set-user-ID, set-group-ID and sticky take the execute column, as ls(1) shows them:
        // lower case over an execute bit, upper case without one.
        if ((m & 0x800) != 0) s[3] = s[3] == 'x' ? 's' : 'S';
        if ((m & 0x400) != 0) s[6] = s[6] == 'x' ? 's' : 'S';
        if ((m & 0x200) != 0) s[9] = s[9] == 'x' ? 't' : 'T';
        return new string(s);
    }
}

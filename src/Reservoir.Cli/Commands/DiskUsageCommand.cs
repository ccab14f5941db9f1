using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Tx;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir filesystem du [-s] TARGET [PATH…]`, as `btrfs filesystem du`: for each file its
/// Total (what its extents reference), Exclusive (what nothing else references: what deleting
/// it frees) and, for each directory and argument, Set shared (what the files below it share
/// with anything, each byte counted once), so reflinks and snapshots show what they share.
/// Through the mount (TARGET a file or directory on it; Reservoir's disk-usage ioctl, since
/// FIEMAP does not reach a FUSE filesystem) or on an unmounted image (TARGET the image, PATHs
/// inside it, / by default).
/// </summary>
internal static class DiskUsageCommand
{
    /// <summary>A tree's figures: its total and exclusive bytes, and the shared ranges below it
    /// (with shared inline bytes, which have no range).</summary>
    private sealed class Sum
    {
        public ulong Total, Exclusive, SharedInline;
        public readonly List<(ulong Start, ulong Len)> Shared = new();

        public static Sum Of(FileUsage u)
        {
            var s = new Sum { Total = u.Total, Exclusive = u.Exclusive, SharedInline = u.SharedInline };
            s.Shared.AddRange(u.Shared);
            return s;
        }

        public void Add(Sum s)
        {
            Total += s.Total;
            Exclusive += s.Exclusive;
            SharedInline += s.SharedInline;
            Shared.AddRange(s.Shared);
        }

        public ulong SetShared => Filesystem.UnionBytes(Shared) + SharedInline;
    }

    /// <summary>What a path is to the walk: anything but a directory or a regular file (a
    /// symlink, a FIFO, a device node) is left out, as btrfs filesystem du leaves it.</summary>
    private enum Kind { Other, Directory, File }

    /// <summary>What the walk needs of either side: a path's kind, a directory's names, a
    /// file's usage.</summary>
    private interface ISource
    {
        Kind KindOf(string path, out Errno e);
        IEnumerable<string> List(string dir);
        Errno Usage(string file, out FileUsage u);
    }

    private sealed class Online : ISource
    {
        public Kind KindOf(string path, out Errno e)
        {
            e = OnlineSubvolume.FileType(path, out uint fmt);
            return e != Errno.OK ? Kind.Other : fmt == 0x4000 ? Kind.Directory : fmt == 0x8000 ? Kind.File : Kind.Other;
        }

        public IEnumerable<string> List(string dir) =>
            new DirectoryInfo(dir).EnumerateFileSystemInfos().Select(i => i.Name).Order(StringComparer.Ordinal);

        public Errno Usage(string file, out FileUsage u) => OnlineSubvolume.DiskUsage(file, out u);
    }

    private sealed class Offline(ReservoirFileSystem rfs) : ISource
    {
        public Kind KindOf(string path, out Errno e)
        {
            e = rfs.Posix.Lstat(path, out var a);
            return e != Errno.OK ? Kind.Other : a.IsDir ? Kind.Directory : a.IsReg ? Kind.File : Kind.Other;
        }

        public IEnumerable<string> List(string dir)
        {
            if (rfs.Posix.Lstat(dir, out var a) != Errno.OK || rfs.Engine.ListDir(a.Ino, out var entries) != Errno.OK) return [];
            return entries.Select(x => x.Name).Where(n => n is not ("." or "..")).Order(StringComparer.Ordinal).ToList();
        }

        public Errno Usage(string file, out FileUsage u)
        {
            u = new(0, 0, [], 0);
            var e = rfs.Posix.Lstat(file, out var a);
            return e != Errno.OK ? e : rfs.Engine.DiskUsage(a.Ino, out u);
        }
    }

    public static Command Build(CliContext ctx)
    {
        var target = new Argument<string>("target") { Description = "A file or directory on a mounted Reservoir, or an unmounted image" };
        var paths = new Argument<string[]>("paths") { Description = "More files or directories on the mount; with an image, paths inside it (default /)", Arity = ArgumentArity.ZeroOrMore };
        var summarize = new Option<bool>("--summarize", "-s") { Description = "Only a total for each argument" };
        var format = CommonOptions.Format();
        var sizes = new SizeFormat.Options();
        var cmd = new Command("du", "Summarize disk usage of files and directories: total, exclusive and shared, as btrfs filesystem du") { target, paths, summarize, format };
        sizes.AddTo(cmd);
        cmd.SetAction(pr =>
        {
            string first = pr.GetValue(target)!;
            var rest = pr.GetValue(paths) ?? [];
            var fe = OnlineSubvolume.Fsid(first, out _);
            bool online = Directory.Exists(first) || fe == Errno.OK;
            if (online && fe != Errno.OK)
                return FilesystemCommands.Failed(ctx, "du", first, fe);
            ReservoirFileSystem? rfs = online ? null : ReservoirFileSystem.Open(first, new MountOptions { ReadOnly = true, CommitIntervalMs = 0 });
            try
            {
                ISource src = rfs == null ? new Online() : new Offline(rfs);
                var args = online ? new[] { first }.Concat(rest).ToList() : rest.Length > 0 ? rest.ToList() : ["/"];
                var sz = sizes.Read(pr);
                bool json = CommonOptions.IsJson(pr, format);
                var rows = new List<(ulong Total, ulong Exclusive, ulong? SetShared, string Path)>();
                int failures = 0;
                foreach (var a in args) Walk(src, a, top: true, pr.GetValue(summarize), rows, ctx, ref failures);
                if (json)
                    ctx.Json(rows.Select(r => new { total = r.Total, exclusive = r.Exclusive, set_shared = r.SetShared, filename = r.Path }));
                else
                {
                    ctx.Out.WriteLine($"{"Total",10}  {"Exclusive",10}  {"Set shared",10}  Filename");
                    foreach (var r in rows)
                        ctx.Out.WriteLine($"{sz.Format(r.Total),10}  {sz.Format(r.Exclusive),10}  {(r.SetShared is { } s ? sz.Format(s) : "-"),10}  {r.Path}");
                }
                return failures == 0 ? 0 : 1;
            }
            finally { rfs?.Dispose(); }
        });
        return cmd;
    }

    /// <summary>Post-order walk: a directory's files (and, unless summarizing, each of their
    /// lines) before its own line. Returns null when the path could not be read.</summary>
    private static Sum? Walk(ISource src, string path, bool top, bool summarize, List<(ulong, ulong, ulong?, string)> rows, CliContext ctx, ref int failures)
    {
        var kind = src.KindOf(path, out var e);
        if (e != Errno.OK)
        {
            ctx.Err.WriteLine($"reservoir filesystem du: {path}: {e.Describe()}");
            failures++;
            return null;
        }
        if (kind == Kind.File)
        {
            e = src.Usage(path, out var u);
            if (e != Errno.OK)
            {
                FilesystemCommands.Failed(ctx, "du", path, e);
                failures++;
                return null;
            }
            var file = Sum.Of(u);
            if (top || !summarize) rows.Add((u.Total, u.Exclusive, top ? file.SetShared : null, path));
            return file;
        }
        var sum = new Sum();
        if (kind != Kind.Directory) return sum;
        foreach (var name in src.List(path))
        {
            string child = path.EndsWith('/') ? path + name : path + "/" + name;
            if (Walk(src, child, top: false, summarize, rows, ctx, ref failures) is { } s) sum.Add(s);
        }
        if (top || !summarize) rows.Add((sum.Total, sum.Exclusive, sum.SetShared, path));
        return sum;
    }
}

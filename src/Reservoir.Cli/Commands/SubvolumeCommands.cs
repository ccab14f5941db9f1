using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>`reservoir subvolume create|snapshot|delete|list …` on an unmounted image, with
/// output shaped like btrfs-progs' (`ID 256 gen 9 top level 5 path sv`). Paths are inside the
/// image, from the top-level subvolume's root.</summary>
internal static class SubvolumeCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [Subvolume(ctx)];

    private static Command Subvolume(CliContext ctx)
    {
        var cmd = new Command("subvolume", "Create, delete and list subvolumes (independent file trees)");

        var targets = new Argument<string[]>("target") { Description = "IMAGE PATH… (paths inside an unmounted image) or PATH… on a mounted Reservoir", Arity = ArgumentArity.OneOrMore };
        var createInherit = QgroupInherit.Option();
        var createFormat = CommonOptions.Format();
        var create = new Command("create", "Create empty subvolumes") { targets, createInherit, createFormat };
        create.SetAction(pr =>
        {
            var t = pr.GetValue(targets)!;
            var inherit = QgroupInherit.Parse(ctx, "create", pr.GetValue(createInherit));
            if (inherit == null || !CheckOnline(ctx, "create", inherit, t[0])) return 1;
            return Each(ctx, "create", t,
                p => JoinOnline(ctx, "create", inherit, p, OnlineSubvolume.Create(p)),
                (fs, p) =>
                {
                    if (inherit.CheckOffline(fs) is { } why) throw new IOException(why);
                    fs.CreateSubvolume(p);
                    inherit.JoinOffline(fs, p);
                }, "Create subvolume", CommonOptions.IsJson(pr, createFormat) ? [] : null);
        });

        var snapArgs = new Argument<string[]>("source-dest") { Description = "SOURCE DEST on a mounted Reservoir, or IMAGE SOURCE DEST (paths inside an unmounted image)", Arity = new ArgumentArity(2, 3) };
        var readOnly = new Option<bool>("-r") { Description = "Make the snapshot read-only" };
        var snapInherit = QgroupInherit.Option();
        var snapFormat = CommonOptions.Format();
        var snapshot = new Command("snapshot", "Snapshot a subvolume: a new subvolume sharing everything with it until either changes") { snapArgs, readOnly, snapInherit, snapFormat };
        snapshot.SetAction(pr =>
        {
            var a = pr.GetValue(snapArgs)!;
            bool ro = pr.GetValue(readOnly);
            ulong? madeId = null;
            var inherit = QgroupInherit.Parse(ctx, "snapshot", pr.GetValue(snapInherit));
            if (inherit == null) return 1;
            // As btrfs-progs: a DEST that is a directory gets the snapshot inside it, under the
            // source's name ("snaps/" then means "snaps//home", as btrfs prints it).
            string Into(string dest, bool isDir) => isDir ? dest + "/" + Path.GetFileName(a[^2].TrimEnd('/')) : dest;
            if (a.Length == 2)
            {
                a[1] = Into(a[1], Directory.Exists(a[1]));
                if (!CheckOnline(ctx, "snapshot", inherit, a[1])) return 1;
                var e = OnlineSubvolume.Snapshot(a[0], a[1], ro);
                if (e != Errno.OK)
                {
                    ctx.Err.WriteLine(e == Errno.ENOTTY
                        ? $"reservoir subvolume snapshot: {a[1]}: not on a mounted Reservoir (give IMAGE SOURCE DEST for an unmounted image)"
                        : $"reservoir subvolume snapshot: {a[0]} -> {a[1]}: {(e == Errno.EINVAL ? "source is not a subvolume" : e.Describe())}");
                    return 1;
                }
                if (JoinOnline(ctx, "snapshot", inherit, a[1], Errno.OK) != Errno.OK) return 1;
                madeId = OnlineSubvolume.SubvolumeIdOf(a[1]);
            }
            else
            {
                if (!File.Exists(a[0])) { ctx.Err.WriteLine($"reservoir subvolume snapshot: {a[0]}: no such image"); return 1; }
                using var fs = FileCommands.Open(a[0], write: true);
                try
                {
                    a[2] = Into(a[2], fs.DirectoryExists(a[2]));
                    if (inherit.CheckOffline(fs) is { } why) throw new IOException(why);
                    fs.CreateSnapshot(a[1], a[2], ro);
                    inherit.JoinOffline(fs, a[2]);
                    madeId = NodeIds.Decode(fs.GetInfo(a[2], followLinks: false).Attr.Ino).TreeId;
                }
                catch (IOException ex) { ctx.Err.WriteLine($"reservoir subvolume snapshot: {a[1]} -> {a[2]}: {ex.Message}"); return 1; }
            }
            string src = a[^2], dst = a[^1];
            if (CommonOptions.IsJson(pr, snapFormat)) { ctx.Json(new { source = src, path = dst, id = madeId, read_only = ro }); return 0; }
            ctx.Out.WriteLine(ro ? $"Create a readonly snapshot of '{src}' in '{dst}'" : $"Create a snapshot of '{src}' in '{dst}'");
            return 0;
        });

        var targets2 = new Argument<string[]>("target") { Description = "PATH… on a mounted Reservoir (root's, or the image owner's on their own mount), or IMAGE PATH… (inside an unmounted image); with -i, the mount or the image", Arity = ArgumentArity.OneOrMore };
        var commitAfter = new Option<bool>("-c", "--commit-after") { Description = "Wait for a transaction commit at the end, so the deletions survive a crash (as btrfs's)" };
        var commitEach = new Option<bool>("-C", "--commit-each") { Description = "Wait for a transaction commit after each deletion" };
        var byId = new Option<ulong?>("-i", "--subvolid") { Description = "Delete the subvolume with this id, wherever it is linked" };
        var deleteFormat = CommonOptions.Format();
        var delete = new Command("delete", "Delete subvolumes with everything in them: the names go at once, the space comes back in the background (subvolume sync waits for it; on an image, before the command returns)") { targets2, commitAfter, commitEach, byId, deleteFormat };
        delete.Aliases.Add("del");
        delete.SetAction(pr => Delete(ctx, pr.GetValue(targets2)!, pr.GetValue(commitAfter), pr.GetValue(commitEach), pr.GetValue(byId), CommonOptions.IsJson(pr, deleteFormat)));

        var list = SubvolumeListCommand.Build(ctx);

        var defArgs = new Argument<string[]>("target")
        {
            Description = "ID PATH (5 = the top level; PATH a directory on a mounted Reservoir, or an unmounted image), SUBVOL (a subvolume on a mounted Reservoir) or IMAGE PATH (a subvolume inside an unmounted image); on a mount root only, taking effect at the next mount",
            Arity = new ArgumentArity(1, 2),
        };
        var setDefault = new Command("set-default", "Make a subvolume the one mounted by default (as btrfs subvolume set-default: by id, or by its path)") { defArgs };
        setDefault.SetAction(pr => SetDefault(ctx, pr.GetValue(defArgs)!));

        var image5 = new Argument<string>("image") { Description = "An unmounted image, or a directory on a mounted Reservoir" };
        var format5 = CommonOptions.Format();
        var getDefault = new Command("get-default", "Show the default subvolume") { image5, format5 };
        getDefault.SetAction(pr =>
        {
            string at = pr.GetValue(image5)!;
            ulong id;
            (ulong Generation, ulong Parent, string Path)? info = null;
            if (Directory.Exists(at))
            {
                var le = OnlineSubvolume.List(at, out var online, out id);
                if (le != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume get-default: {at}: {(le == Errno.ENOTTY ? "not on a mounted Reservoir" : le.Describe())}"); return 1; }
                foreach (var s in online) if (s.Id == id) info = (s.Generation, s.Parent, s.Path);
            }
            else
            {
                using var fs = FileCommands.Open(at, write: false);
                id = fs.Engine.DefaultSubvolume;
                foreach (var s in fs.ListSubvolumes()) if (s.Id == id) info = (s.Generation, s.ParentId, s.Path);
            }
            if (CommonOptions.IsJson(pr, format5)) { ctx.Json(new { id, path = id == 5 ? "" : info?.Path ?? "" }); return 0; }
            ctx.Out.WriteLine(id != 5 && info is { } i ? $"ID {id} gen {i.Generation} top level {i.Parent} path {i.Path}" : "ID 5 (FS_TREE)");
            return 0;
        });

        var show = SubvolumeShowCommand.Build(ctx);

        var image7 = new Argument<string>("image") { Description = "An unmounted image, or a directory on a mounted Reservoir (root's, or the image owner's on their own mount)" };
        var syncIds = new Argument<ulong[]>("subvolid") { Description = "Wait for these deleted subvolumes only (default: every deletion)", Arity = ArgumentArity.ZeroOrMore };
        var sleep = new Option<double>("-s") { Description = "Seconds between checks while a deleted subvolume waits for files of it to be closed (1)", DefaultValueFactory = _ => 1 };
        var sync = new Command("sync", "Wait until deleted subvolumes are dropped and their space is free (finishes deletions an earlier mount left)") { image7, syncIds, sleep };
        sync.SetAction(pr =>
        {
            string at = pr.GetValue(image7)!;
            var ids = pr.GetValue(syncIds) ?? [];
            // As btrfs-progs: without ids, the deletions under way now (not those made meanwhile),
            // each said gone once its space is free.
            void Waiting(int n) { if (n > 0) ctx.Out.WriteLine($"Waiting for {n} subvolume{(n == 1 ? "" : "s")}"); }
            void Gone(ulong id, int i, int n) => ctx.Out.WriteLine($"Subvolume id {id} is gone ({i}/{n})");
            if (!Directory.Exists(at))
            {
                using var fs = FileCommands.Open(at, write: true);
                var le = fs.Engine.ListDeletedSubvolumes(out var pending);
                if (le != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume sync: {le.Describe()}"); return 1; }
                var offline = ids.Length > 0 ? ids : pending.Select(p => p.Id).ToArray();
                Waiting(offline.Length);
                fs.SyncSubvolumeDeletions(); // on an image nothing holds a deleted subvolume
                for (int i = 0; i < offline.Length; i++) Gone(offline[i], i + 1, offline.Length);
                return 0;
            }
            double pause = pr.GetValue(sleep);
            if (pause < 0 || double.IsNaN(pause)) { ctx.Err.WriteLine("reservoir subvolume sync: -s wants a number of seconds, 0 or more"); return 2; }
            // A subvolume deleted with files of it open keeps its tree until they are closed, as
            // on btrfs, and sync waits for that too; each ask waits up to a second in the daemon
            // (no request thread of the mount is held for ever), and Ctrl-C ends the wait.
            var wait = ids;
            if (wait.Length == 0)
            {
                var le = OnlineSubvolume.List(at, out var pending, out _, deleted: true);
                if (le != Errno.OK) return Report(ctx, "sync", at, OnlineSubvolume.QuotaOp.SyncDeletions, 0, le);
                wait = pending.Select(p => p.Id).ToArray();
            }
            Waiting(wait.Length);
            bool said = false;
            for (int i = 0; i < wait.Length; i++)
            {
                while (true)
                {
                    var e = OnlineSubvolume.QuotaCtl(at, OnlineSubvolume.QuotaOp.SyncDeletions, wait[i]);
                    if (e != Errno.EBUSY)
                    {
                        if (e != Errno.OK) return Report(ctx, "sync", at, OnlineSubvolume.QuotaOp.SyncDeletions, 0, e);
                        break;
                    }
                    if (!said) ctx.Err.WriteLine("reservoir subvolume sync: waiting for files of deleted subvolumes to be closed");
                    said = true;
                    Thread.Sleep(TimeSpan.FromSeconds(pause));
                }
                Gone(wait[i], i + 1, wait.Length);
            }
            if (ids.Length > 0) return 0;
            // And whatever drop is between its last batch and its commit (no longer listed, its
            // space not yet counted free); EBUSY here is a subvolume deleted meanwhile, held
            // open, which btrfs's sync does not wait for either.
            var last = OnlineSubvolume.QuotaCtl(at, OnlineSubvolume.QuotaOp.SyncDeletions, 0);
            return last is Errno.OK or Errno.EBUSY ? 0 : Report(ctx, "sync", at, OnlineSubvolume.QuotaOp.SyncDeletions, 0, last);
        });

        cmd.Subcommands.Add(create);
        cmd.Subcommands.Add(snapshot);
        cmd.Subcommands.Add(sync);
        cmd.Subcommands.Add(delete);
        cmd.Subcommands.Add(list);
        cmd.Subcommands.Add(show);
        cmd.Subcommands.Add(setDefault);
        cmd.Subcommands.Add(getDefault);
        cmd.Subcommands.Add(SubvolumeFindNew.Build(ctx));
        return cmd;
    }

    /// <summary>`subvolume set-default` in btrfs-progs' two forms: ID PATH, or the subvolume's
    /// own path (SUBVOL on a mount; IMAGE PATH offline).</summary>
    private static int SetDefault(CliContext ctx, string[] a)
    {
        const string Verb = "set-default";
        if (a.Length == 2 && ulong.TryParse(a[0], out ulong id))
        {
            if (Directory.Exists(a[1])) return Online(ctx, Verb, a[1], OnlineSubvolume.QuotaOp.SetDefault, id);
            if (!File.Exists(a[1])) { ctx.Err.WriteLine($"reservoir subvolume set-default: {a[1]}: neither a directory on a mounted Reservoir nor an image"); return 1; }
            using var image = FileCommands.Open(a[1], write: true);
            var e = image.Engine.SetDefaultSubvolume(id);
            if (e != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume set-default: {id}: {(e == Errno.ENOENT ? $"no subvolume {id}" : e.Describe())}"); return 1; }
            return 0;
        }
        if (a.Length == 1)
        {
            if (!Directory.Exists(a[0])) { ctx.Err.WriteLine($"reservoir subvolume set-default: {a[0]}: no such directory (give ID PATH, SUBVOL on a mount, or IMAGE PATH)"); return 1; }
            if (OnlineSubvolume.SubvolumeIdOf(a[0]) is not { } sid)
            {
                ctx.Err.WriteLine($"reservoir subvolume set-default: {a[0]}: not a subvolume");
                return 1;
            }
            return Online(ctx, Verb, a[0], OnlineSubvolume.QuotaOp.SetDefault, sid);
        }
        if (!File.Exists(a[0])) { ctx.Err.WriteLine($"reservoir subvolume set-default: {a[0]}: not a subvolume id, and no such image"); return 1; }
        using var fs = FileCommands.Open(a[0], write: true);
        try
        {
            var se = fs.Engine.ShowSubvolume(fs.GetInfo(a[1], followLinks: true).Attr.Ino, out var s);
            if (se == Errno.OK) se = fs.Engine.SetDefaultSubvolume(s.Id);
            if (se != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume set-default: {a[1]}: {(se == Errno.EINVAL ? "not a subvolume" : se.Describe())}"); return 1; }
        }
        catch (IOException ex) { ctx.Err.WriteLine($"reservoir subvolume set-default: {a[1]}: {ex.Message}"); return 1; }
        return 0;
    }

    /// <summary>A subvolume change through the mount's administration ioctl.</summary>
    private static int Online(CliContext ctx, string verb, string at, OnlineSubvolume.QuotaOp op, ulong a) =>
        Report(ctx, verb, at, op, a, OnlineSubvolume.QuotaCtl(at, op, a));

    private static int Report(CliContext ctx, string verb, string at, OnlineSubvolume.QuotaOp op, ulong a, Errno e)
    {
        if (e == Errno.OK) return 0;
        ctx.Err.WriteLine($"reservoir subvolume {verb}: {at}: " + e switch
        {
            Errno.ENOTTY => "not on a mounted Reservoir",
            Errno.EPERM => "only root may do this on a mounted filesystem",
            Errno.ENOENT when op == OnlineSubvolume.QuotaOp.SetDefault => $"no subvolume {a}",
            _ => e.Describe(),
        });
        return 1;
    }

    /// <summary>On a mount (<paramref name="target"/> is not an image), the -i groups are checked
    /// before anything is made; false after saying why not.</summary>
    private static bool CheckOnline(CliContext ctx, string verb, QgroupInherit inherit, string target)
    {
        if (!inherit.Any || File.Exists(target)) return true;
        string dir = Path.GetDirectoryName(Path.GetFullPath(target).TrimEnd('/')) ?? "/";
        if (inherit.CheckOnline(dir) is not { } why) return true;
        ctx.Err.WriteLine($"reservoir subvolume {verb}: {target}: {why}");
        return false;
    }

    /// <summary>After <paramref name="made"/> (the errno of making the subvolume at
    /// <paramref name="path"/> on a mount): its group joins the -i groups. A failure to join is
    /// said here, since the subvolume stays.</summary>
    private static Errno JoinOnline(CliContext ctx, string verb, QgroupInherit inherit, string path, Errno made)
    {
        if (made != Errno.OK) return made;
        var e = inherit.JoinOnline(path);
        if (e != Errno.OK) ctx.Err.WriteLine($"reservoir subvolume {verb}: {path}: made, but joining its qgroups failed: {e.Describe()}");
        return e;
    }

    /// <summary>
    /// Runs an action per path: offline when the first target is an image file (the rest are
    /// paths inside it), online otherwise (every target is a path on a mounted Reservoir, done
    /// through its ioctls). The first failure is reported with its path and ends the command
    /// with status 1, as btrfs-progs does.
    /// </summary>
    /// <summary>What an errno means for a subvolume command, in btrfs-progs' words where the
    /// engine's errno alone would puzzle (EINVAL from delete: the path is no subvolume); null
    /// for the others, which say themselves.</summary>
    private static string? Explain(string verb, Errno e) => (verb, e) switch
    {
        ("delete", Errno.EINVAL) => "not a subvolume",
        ("delete" or "delete-id", Errno.EBUSY) => "the default subvolume: set another default first (EBUSY)",
        ("delete" or "delete-id", Errno.ENOTEMPTY) => "it holds subvolumes: delete those first (ENOTEMPTY)",
        ("delete", Errno.EPERM) => "only root (or the image's owner, on their own mount; or, with -o user_subvol_rm_allowed, whoever rmdir(2) would let remove it) may delete subvolumes on a mounted filesystem",
        ("delete-id", Errno.EPERM) => "only root (or the image's owner, on their own mount) may delete subvolumes by id on a mounted filesystem",
        ("delete-id", Errno.ENOENT) => "no subvolume has that id",
        ("delete-id", Errno.EINVAL) => "the top-level subvolume (5) cannot be deleted",
        _ => null,
    };

    /// <summary>`subvolume delete [-c|-C] [-i ID] TARGET…`, printing as btrfs-progs does
    /// ("Delete subvolume (no-commit): '/mnt/sv'"). On an image the deletions are committed when
    /// the command ends, so it says "commit" there.</summary>
    /// <param name="json">Say what was deleted as one JSON array (path or subvolid, and whether
    /// a commit followed) instead of btrfs-progs' lines.</param>
    private static int Delete(CliContext ctx, string[] targets, bool commitAfter, bool commitEach, ulong? id, bool json = false)
    {
        var said = new List<object>();
        if (commitAfter && commitEach) { ctx.Err.WriteLine("reservoir subvolume delete: -c (--commit-after) and -C (--commit-each) cannot be used together"); return 2; }
        if (id != null && targets.Length != 1) { ctx.Err.WriteLine("reservoir subvolume delete: with -i give one target: the mount, or the image"); return 2; }
        // The delete ioctl goes to the directory holding the subvolume: for a mount's root that
        // is outside the mount, which answers ENOTTY though the path itself is Reservoir's.
        string Fail(string p, Errno e) => $"reservoir subvolume delete: {p}: " + (e == Errno.ENOTTY
            ? (OnlineSubvolume.IsMountRoot(p) && OnlineSubvolume.GetReadOnly(p, out _) != Errno.ENOTTY
                ? "the root of its mount: delete it from a mount of the subvolume holding it, or by id (-i ID) on a mount of the image (the top level, 5, is never deleted)"
                : "not on a mounted Reservoir (give IMAGE PATH for an unmounted image)")
            : Explain(id != null ? "delete-id" : "delete", e) ?? e.Describe());
        if (!File.Exists(targets[0]))
        {
            for (int i = 0; i < targets.Length; i++)
            {
                string full = Path.GetFullPath(targets[i]).TrimEnd('/');
                var e = id is { } sid ? OnlineSubvolume.QuotaCtl(full, OnlineSubvolume.QuotaOp.DeleteById, sid) : OnlineSubvolume.Delete(full);
                if (e != Errno.OK) { ctx.Err.WriteLine(Fail(targets[i], e)); return 1; }
                bool commit = commitEach || (commitAfter && i == targets.Length - 1);
                if (commit)
                {
                    // On the directory it was in (or the mount, with -i): the subvolume is gone.
                    var ce = OnlineSubvolume.QuotaCtl(id != null ? full : Path.GetDirectoryName(full) ?? "/", OnlineSubvolume.QuotaOp.Commit);
                    if (ce != Errno.OK) { ctx.Err.WriteLine($"reservoir subvolume delete: unable to wait for commit after '{targets[i]}': {ce.Describe()}"); return 1; }
                }
                if (json) said.Add(new { path = id != null ? null : full, subvolid = id, commit });
                else ctx.Out.WriteLine($"Delete subvolume ({(commit ? "commit" : "no-commit")}): " + (id != null ? $"subvolid={id}" : $"'{full}'"));
            }
            if (json) ctx.Json(said);
            return 0;
        }
        if (id is not { } vid)
            return EachOnImage(ctx, "delete", targets, (fs, p) => fs.DeleteSubvolume(p), "Delete subvolume (commit):", json ? (_, p) => new { path = p, subvolid = (ulong?)null, commit = true } : null);
        using var fs = FileCommands.Open(targets[0], write: true);
        var de = fs.Engine.DeleteSubvolumeById(vid, out _, out _);
        if (de != Errno.OK) { ctx.Err.WriteLine(Fail(targets[0], de)); return 1; }
        if (json) ctx.Json(new[] { new { path = (string?)null, subvolid = (ulong?)vid, commit = true } });
        else ctx.Out.WriteLine($"Delete subvolume (commit): subvolid={vid}");
        fs.SyncSubvolumeDeletions(); // as EachOnImage does
        return 0;
    }

    /// <param name="json">With --format json: what was done, one object per target (the
    /// path and, for a subvolume made, its id), printed as one array at the end instead of
    /// btrfs-progs' lines.</param>
    private static int Each(CliContext ctx, string verb, string[] targets, Func<string, Errno> online, Action<ReservoirFileSystem, string> offline, string done, List<object>? json = null)
    {
        if (!File.Exists(targets[0]))
        {
            foreach (var p in targets)
            {
                var e = online(p);
                if (e != Errno.OK)
                {
                    ctx.Err.WriteLine(e == Errno.ENOTTY
                        ? $"reservoir subvolume {verb}: {p}: not on a mounted Reservoir (give IMAGE PATH for an unmounted image)"
                        : $"reservoir subvolume {verb}: {p}: {Explain(verb, e) ?? e.Describe()}");
                    return 1;
                }
                if (json != null) json.Add(new { path = p, id = OnlineSubvolume.SubvolumeIdOf(p) });
                else ctx.Out.WriteLine($"{done} '{p}'");
            }
            if (json != null) ctx.Json(json);
            return 0;
        }
        Func<ReservoirFileSystem, string, object>? describe = json == null ? null : (fs, p) => new { path = p, id = (ulong?)NodeIds.Decode(fs.GetInfo(p, followLinks: false).Attr.Ino).TreeId };
        return EachOnImage(ctx, verb, targets, offline, done, describe);
    }

    /// <summary><see cref="Each"/> on an unmounted image (<paramref name="targets"/>: the
    /// image, then paths inside it).</summary>
    /// <param name="describe">With --format json: the object said for a target once done.</param>
    private static int EachOnImage(CliContext ctx, string verb, string[] targets, Action<ReservoirFileSystem, string> offline, string done, Func<ReservoirFileSystem, string, object>? describe = null)
    {
        if (targets.Length < 2) { ctx.Err.WriteLine($"reservoir subvolume {verb}: {targets[0]} is an image: give the paths inside it"); return 1; }
        using var fs = FileCommands.Open(targets[0], write: true);
        var said = new List<object>();
        foreach (var p in targets[1..])
        {
            try { offline(fs, p); }
            catch (IOException ex)
            {
                ctx.Err.WriteLine($"reservoir subvolume {verb}: {p}: {(ex is FsException fe ? Explain(verb, fe.Errno) : null) ?? ex.Message}");
                return 1;
            }
            if (describe != null) said.Add(describe(fs, p));
            else ctx.Out.WriteLine($"{done} '{p}'");
        }
        if (describe != null) ctx.Json(said);
        // On an image the command is the only user: wait for the cleaner, or the unmount at
        // the end would leave the rest of a deletion to the next mount.
        fs.SyncSubvolumeDeletions();
        return 0;
    }
}

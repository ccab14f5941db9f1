using System.CommandLine;
using System.Text;
using Reservoir.Api;
using Reservoir.Api.Send;
using Reservoir.Cli.Send;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir send` and `reservoir receive`, as btrfs's: a read-only subvolume becomes a stream
/// in btrfs's send format (version 1), and a stream becomes a read-only subvolume. Streams pass
/// between Reservoir and btrfs both ways (`reservoir send … | btrfs receive DIR`, `btrfs send …
/// | reservoir receive DIR`). Online (a path on a mounted Reservoir) or offline (IMAGE PATH).
/// </summary>
internal static class SendReceiveCommands
{
    public static IEnumerable<Command> Build(CliContext ctx) => [SendCommandLine(ctx), ReceiveCommandLine(ctx)];

    /// <summary>A subvolume a send names: to send, as parent, or as clone source.</summary>
    private sealed record Named(string Path, string Name, SubvolumeInfo Info, Guid Identity, Func<ISendSource> Open);

    private static Command SendCommandLine(CliContext ctx)
    {
        var target = new Argument<string[]>("subvolume") { Description = "SUBVOL… on a mounted Reservoir, or IMAGE SUBVOL… (paths inside an unmounted image); read-only; several are sent one after another, each a clone source for the next", Arity = new ArgumentArity(1, 100_000) };
        var file = new Option<string?>("-f") { Description = "Write the stream to this file instead of standard output", HelpName = "FILE" };
        var quiet = new Option<bool>("-q", "--quiet") { Description = "Say nothing on standard error" };
        var parentOpt = new Option<string?>("-p") { Description = "Send only the changes since this read-only subvolume (an earlier snapshot the receiving side has received)", HelpName = "PARENT" };
        var cloneOpt = new Option<string[]>("-c") { Description = "A read-only subvolume the receiving side has too (repeatable): data it holds goes as clones of its files; without -p, the parent is chosen among them as btrfs does (the snapshot's source, else the sibling snapshot nearest in time)", HelpName = "CLONE_SRC" };
        var proto = new Option<int>("--proto") { Description = "Stream version: 1 (the default, as btrfs send's) or 2 (holes a changed file gained are punched instead of sent as zeros, 128 KiB a write; btrfs-progs 6.0 and later receive it); 0 means the newest", DefaultValueFactory = _ => 1, HelpName = "N" };
        var noData = new Option<bool>("--no-data") { Description = "Leave the data out: where it is, as UPDATE_EXTENT commands (to see what changed with `receive --dump`; received, files keep their sizes but no data, as with btrfs)" };
        var oneStream = new Option<bool>("-e") { Description = "Several subvolumes as one stream, its END after the last only (as btrfs send -e; `receive -e` stops there)" };
        var compressed = new Option<bool>("--compressed-data") { Description = "Send compressed extents as they are stored (as btrfs send's; implies --proto 2 unless given): Reservoir stores none compressed, so data goes as plain WRITEs, as btrfs sends uncompressed extents" };
        var verbose = new Option<bool>("-v", "--verbose") { Description = "Also say the stream's version and how each subvolume is read (by the daemon, through the mount, or from the image)" };
        var cmd = new Command("send", "Write read-only subvolumes as a send stream (btrfs's format) for `receive` here or `btrfs receive`") { target, file, quiet, parentOpt, cloneOpt, proto, noData, oneStream, compressed, verbose };
        cmd.SetAction(pr =>
        {
            var a = pr.GetValue(target)!;
            string? outFile = pr.GetValue(file);
            if (outFile == null && !Console.IsOutputRedirected)
            {
                ctx.Err.WriteLine("reservoir send: not writing a stream to a terminal: redirect standard output or give -f FILE");
                return 1;
            }
            bool offline = a.Length >= 2 && !Directory.Exists(a[0]);
            string[] subvolumes = offline ? a[1..] : a;
            string sv = subvolumes[0];
            string? parent = pr.GetValue(parentOpt);
            var cloneArgs = pr.GetValue(cloneOpt) ?? [];
            int version = pr.GetValue(proto) == 0 ? 2 : pr.GetValue(proto);
            // As btrfs's: --compressed-data asks for version 2 unless a version is given.
            if (pr.GetValue(compressed) && pr.GetResult(proto) is null or { Implicit: true }) version = 2;
            if (version is not (1 or 2)) { ctx.Err.WriteLine($"reservoir send: --proto {version}: versions 1 and 2 are written (0: the newest)"); return 2; }
            var options = new SendOptions(version, pr.GetValue(noData));
            bool made = false; // the stream file, once this command has opened (and emptied) it
            ReservoirFileSystem? image = null;
            var opened = new List<ISendSource>();
            try
            {
                if (offline)
                {
                    if (!File.Exists(a[0])) { ctx.Err.WriteLine($"reservoir send: {a[0]}: no such image"); return 1; }
                    image = FileCommands.Open(a[0], write: false);
                }
                Named Look(string path, string what)
                {
                    sv = what.Length == 0 ? path : sv;
                    if (image is { } fs)
                    {
                        var info = fs.SendableSubvolume(path, what);
                        return new Named(path, Path.GetFileName(info.Path), info, StreamIdentity.Of(info.Uuid, info.ReceivedUuid), () => Keep(new ImageSendSource(fs, path)));
                    }
                    var (name, info2) = OnlineSubvolumeToSend(path, what.TrimEnd());
                    return new Named(path, name, info2, StreamIdentity.Of(info2.Uuid, info2.ReceivedUuid), () => Keep(new HostSendSource(path)));
                }
                ISendSource Keep(ISendSource src) { opened.Add(src); return src; }
                // Everything is checked before the output file is made.
                var toSend = subvolumes.Select(p => Look(p, "")).ToList();
                var p = parent == null ? null : Look(parent, "the parent ");
                var clones = cloneArgs.Select(c => Look(c, "the clone source ")).ToList();
                Stream output = outFile == null ? new BufferedStream(Console.OpenStandardOutput(), 1 << 20)
                    : new FileStream(outFile, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 20);
                made = outFile != null;
                using (output)
                {
                    for (int i = 0; i < toSend.Count; i++)
                    {
                        var s = toSend[i];
                        sv = s.Path;
                        // -e: one stream, its header before the first subvolume, its END after the last.
                        var these = pr.GetValue(oneStream) ? options with { OmitStreamHeader = i > 0, OmitEnd = i < toSend.Count - 1 } : options;
                        // btrfs's rule: without -p but with clone sources, the parent is the
                        // snapshot's source among them, else its nearest sibling.
                        var pick = p ?? (cloneArgs.Length == 0 ? null
                            : ReservoirFileSystem.GoodParent(s.Info, clones.Select(c => c.Info)) is { } gp ? clones.First(c => c.Info.Id == gp.Id) : null);
                        var others = clones.Where(c => c != pick).ToList();
                        // Through a mount, the daemon writes the stream itself if it may (root,
                        // or the user it runs as) and serves every subvolume named; else the
                        // send walks the mount.
                        string how = image != null ? "read from the image" : "written by the daemon";
                        if (image != null || WalkOnly || !ServedByOneDaemon([s, .. pick == null ? [] : new[] { pick }, .. others])
                            || !DaemonStreamClient.TrySend(s.Path, pick?.Info.Id ?? 0, others.Select(c => c.Info.Id).ToList(), s.Name, these, output, out var sum))
                        {
                            if (image == null) how = "read through the mount";
                            var sources = others.Select(c => new SendSubvolume(c.Open(), c.Identity, c.Info.Generation)).ToList();
                            sum = pick == null
                                ? FullSend.Run(s.Open(), s.Name, s.Identity, s.Info.Generation, output, sources, these)
                                : IncrementalSend.Run(s.Open(), s.Name, s.Identity, s.Info.Generation, pick.Open(), pick.Identity, pick.Info.Generation, output, sources, these);
                        }
                        if (pr.GetValue(verbose) && !pr.GetValue(quiet))
                            ctx.Err.WriteLine($"Stream version {version}; {s.Path} {how}" + (pick != null ? $", against {pick.Path}" : "") + (others.Count > 0 ? $", clone sources {string.Join(", ", others.Select(c => c.Path))}" : ""));
                        if (!pr.GetValue(quiet))
                            ctx.Err.WriteLine($"At subvol {s.Path}: {sum.Inodes} inodes, {sum.DataBytes} bytes of data{(sum.CloneBytes > 0 ? $", {sum.CloneBytes} bytes cloned" : "")}{(sum.HoleBytes > 0 ? $", {sum.HoleBytes} bytes punched" : "")}, a stream of {sum.StreamBytes} bytes" +
                                (pick != null ? $"; {sum.InodesExamined} inodes of the two snapshots looked at" + (p == null ? $" (parent {pick.Path})" : "") : ""));
                        // What was sent, the receiving side has next: a clone source for the rest.
                        clones.Add(s);
                        foreach (var src in opened) (src as IDisposable)?.Dispose();
                        opened.Clear();
                    }
                }
                return 0;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FsException)
            {
                ctx.Err.WriteLine($"reservoir send: {sv}: {ex.Message}");
                // No partial stream left to be taken for a whole one; a file the command never
                // opened (it stopped at a check before) is not its to remove.
                if (made) File.Delete(outFile!);
                return 1;
            }
            finally
            {
                foreach (var src in opened) (src as IDisposable)?.Dispose();
                image?.Dispose();
            }
        });
        return cmd;
    }

    /// <summary>RESERVOIR_SEND_RECEIVE=walk: a send or receive through a mount reads or makes the
    /// files through the kernel even when the daemon would do it (as an ordinary user's does), to
    /// compare the two.</summary>
    private static bool WalkOnly => Environment.GetEnvironmentVariable("RESERVOIR_SEND_RECEIVE") == "walk";

    /// <summary>Whether one daemon serves every subvolume of a send through a mount (subvolume ids
    /// mean nothing to another daemon, or to another image's).</summary>
    private static bool ServedByOneDaemon(IEnumerable<Named> named)
    {
        (Guid, ulong)? first = null;
        foreach (var n in named)
        {
            if (OnlineSubvolume.ServedBy(n.Path, out var who) != Errno.OK) return false;
            if ((first ??= who) != who) return false;
        }
        return true;
    }

    /// <summary>The name the receiving side gives the subvolume: the last component of its path.</summary>
    private static string Name(string given, string listed)
    {
        string n = Path.GetFileName(listed.TrimEnd('/'));
        return n.Length > 0 ? n : Path.GetFileName(Path.GetFullPath(given).TrimEnd('/'));
    }

    private static (string Name, SubvolumeInfo Info) OnlineSubvolumeToSend(string path, string what = "")
    {
        string of = what.Length == 0 ? "" : $"{what}, {path}: ";
        if (!Directory.Exists(path)) throw new FsException(Errno.ENOENT, of + "no such directory");
        var id = OnlineSubvolume.SubvolumeIdOf(path);
        if (id == null) throw new FsException(Errno.EINVAL, of + "not the root of a subvolume on a mounted Reservoir (give IMAGE SUBVOL for an unmounted image)");
        if (id == Format.TreeIds.FsTree) throw new FsException(Errno.EINVAL, "the top-level subvolume cannot be sent (it is never read-only): snapshot it with -r and send the snapshot");
        var e = OnlineSubvolume.List(path, out var list);
        if (e != Errno.OK) throw new FsException(e, "cannot list the subvolumes");
        foreach (var s in list)
        {
            if (s.Id != id) continue;
            if (!s.ReadOnly) throw new FsException(Errno.EINVAL, of + "the subvolume is not read-only (send needs one that cannot change: `subvolume snapshot -r` makes one)");
            return (Name(path, s.Path), new SubvolumeInfo(s.Id, s.Parent, 0, s.Path, s.Generation, s.Otransid, default, s.Uuid, s.ParentUuid, s.ReadOnly, s.ReceivedUuid, s.Stransid));
        }
        throw new FsException(Errno.ENOENT, $"subvolume {id} is not listed");
    }

    private static Command ReceiveCommandLine(CliContext ctx)
    {
        var target = new Argument<string[]>("dir") { Description = "DIR on a mounted Reservoir, or IMAGE DIR (a directory inside an unmounted image); not needed with --dump", Arity = new ArgumentArity(0, 2) };
        var file = new Option<string?>("-f") { Description = "Read the stream from this file instead of standard input", HelpName = "FILE" };
        var dump = new Option<bool>("--dump") { Description = "Print the stream's commands instead of applying them (as btrfs receive --dump)" };
        var quiet = new Option<bool>("-q", "--quiet") { Description = "Do not say which subvolume is being received" };
        var stopAtEnd = new Option<bool>("-e") { Description = "Stop at the first END instead of reading to the end of the input (as btrfs receive -e, for a sender that keeps its end open)" };
        var verbose = new Option<bool>("-v", "--verbose") { Description = "Also say what each stream names: the subvolume's uuid and transaction, and an increment's parent (as btrfs receive -v)" };
        var chroot = new Option<bool>("-C", "--chroot") { Description = "Confine the receive to DIR (as btrfs receive -C, which chroots there): an increment's parent and clone sources are taken only from inside DIR (paths a stream names never leave the subvolume it makes, with or without this)" };
        var rootMount = new Option<string?>("-m") { Description = "The root of the mount DIR is on (as btrfs receive -m): parents and clone sources are looked for from there (found by itself otherwise)", HelpName = "ROOTMOUNT" };
        var maxErrors = new Option<int>("-E", "--max-errors") { Description = "Stop at the NERR-th command that fails (as btrfs receive -E; 0: never); the commands before it that failed are said and passed over, the subvolume is received without them, and the exit status is 1. The default, 1, stops at the first and removes the partial subvolume", HelpName = "NERR", DefaultValueFactory = _ => 1 };
        var cmd = new Command("receive", "Make read-only subvolumes from send streams (`reservoir send` or `btrfs send`)") { target, file, dump, quiet, stopAtEnd, verbose, chroot, rootMount, maxErrors };
        cmd.SetAction(pr =>
        {
            var a = pr.GetValue(target)!;
            string? inFile = pr.GetValue(file);
            bool isDump = pr.GetValue(dump);
            if (!isDump && a.Length == 0) { ctx.Err.WriteLine("reservoir receive: give the directory to receive into (DIR, or IMAGE DIR)"); return 1; }
            if (inFile == null && !Console.IsInputRedirected)
            {
                ctx.Err.WriteLine("reservoir receive: not reading a stream from a terminal: redirect standard input or give -f FILE");
                return 1;
            }
            string at = a.Length > 0 ? a[^1] : inFile ?? "-";
            int nerr = pr.GetValue(maxErrors);
            if (nerr < 0) { ctx.Err.WriteLine($"reservoir receive: -E {nerr}: the number of errors to stop at is 0 (never) or more"); return 1; }
            int passedOver = 0;
            void Error(string what)
            {
                passedOver++;
                ctx.Err.WriteLine($"ERROR: {what}");
            }
            try
            {
                using Stream input = inFile != null ? new FileStream(inFile, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20) : new BufferedStream(Console.OpenStandardInput(), 1 << 20);
                if (isDump) { SendDump.Print(input, ctx.Out); return 0; }
                Action<string>? trace = pr.GetValue(quiet) ? null : s => ctx.Err.WriteLine(s);
                bool detail = pr.GetValue(verbose) && trace != null;
                bool confine = pr.GetValue(chroot);
                string? root = pr.GetValue(rootMount);
                if (a.Length == 2 && (confine || root != null)) { ctx.Err.WriteLine("reservoir receive: -C and -m are for a receive through a mount (DIR), not into an image"); return 1; }
                if (a.Length == 2)
                {
                    if (!File.Exists(a[0])) { ctx.Err.WriteLine($"reservoir receive: {a[0]}: no such image"); return 1; }
                    using var fs = FileCommands.Open(a[0], write: true);
                    try
                    {
                        Receiver.Run(input, new ImageReceiveTarget(fs, a[1]), trace, pr.GetValue(stopAtEnd), detail, nerr, Error);
                    }
                    catch (Exception)
                    {
                        // A failed receive deleted what it had made: on an image the command is
                        // the only user, so its space comes back now, not at some later mount.
                        try { fs.SyncSubvolumeDeletions(); } catch (IOException) { /* the receive's error is the one to report */ }
                        throw;
                    }
                    fs.Sync();
                }
                // Through a mount, the daemon applies the streams itself if it may (root, or the
                // user it runs as); else the receive walks the mount.
                // -m is checked before anything is received. The daemon finds parents by their
                // uuids on the whole filesystem, so -C (only what is inside DIR) walks the mount;
                // so does -E (the daemon's receive stops at the first error).
                else
                {
                    string? checkedRoot = root == null ? null : HostReceiveTarget.MountRootFor(Path.GetFullPath(a[0]).TrimEnd('/'), root);
                    if (!WalkOnly && !confine && nerr == 1 && DaemonStreamClient.TryReceive(a[0], input, out var said, pr.GetValue(stopAtEnd), detail))
                        foreach (var line in said) trace?.Invoke(line);
                    else Receiver.Run(input, new HostReceiveTarget(a[0], checkedRoot, confine), trace, pr.GetValue(stopAtEnd), detail, nerr, Error);
                }
                if (passedOver > 0)
                {
                    ctx.Err.WriteLine($"reservoir receive: {at}: {passedOver} command(s) failed and were passed over (-E {nerr}); what they would have made is missing");
                    return 1;
                }
                return 0;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                ctx.Err.WriteLine($"reservoir receive: {at}: {ex.Message}");
                return 1;
            }
        });
        return cmd;
    }
}

/// <summary>`receive --dump`: one line per command, in btrfs receive --dump's layout (command,
/// path, then the attributes as name=value).</summary>
internal static class SendDump
{
    public static void Print(Stream input, TextWriter o)
    {
        var sb = new StringBuilder();
        while (true)
        {
            var r = SendStreamReader.TryOpen(input);
            if (r == null) return;
            string sub = "";
            while (r.Next())
            {
                sb.Clear();
                string cmd = r.Command switch
                {
                    SendCommand.SetXattr => "set_xattr", SendCommand.RemoveXattr => "remove_xattr", SendCommand.UpdateExtent => "update_extent",
                    SendCommand.EncodedWrite => "encoded_write", SendCommand.EnableVerity => "enable_verity",
                    _ => r.Command.ToString().ToLowerInvariant(),
                };
                if (r.Command == SendCommand.End) { o.WriteLine("end"); break; }
                string path = r.Has(SendAttr.Path) ? r.Path(SendAttr.Path) : "";
                if (r.Command is SendCommand.Subvol or SendCommand.Snapshot) sub = path;
                sb.Append(cmd.PadRight(16)).Append(("./" + (r.Command is SendCommand.Subvol or SendCommand.Snapshot ? path : sub + "/" + path)).PadRight(32));
                for (var t = SendAttr.Uuid; t <= SendAttr.Max; t++)
                {
                    if (t == SendAttr.Path || !r.Has(t)) continue;
                    sb.Append(' ').Append(t.ToString().ToLowerInvariant()).Append('=');
                    switch (t)
                    {
                        case SendAttr.Uuid or SendAttr.CloneUuid: sb.Append(UuidText.Of(r.Uuid(t))); break;
                        case SendAttr.Atime or SendAttr.Mtime or SendAttr.Ctime or SendAttr.Otime:
                            var ts = r.Time(t);
                            sb.Append(DateTimeOffset.FromUnixTimeSeconds(ts.Sec).ToString("yyyy-MM-ddTHH:mm:ss")).Append('.').Append(ts.Nsec.ToString("D9"));
                            break;
                        case SendAttr.Mode: sb.Append(Convert.ToString((long)r.U64(t), 8)); break;
                        case SendAttr.PathTo or SendAttr.PathLink or SendAttr.ClonePath or SendAttr.XattrName:
                            sb.Append(Encoding.UTF8.GetString(r.Bytes(t))); break;
                        case SendAttr.Data or SendAttr.XattrData or SendAttr.VeritySaltData or SendAttr.VeritySigData: sb.Append(r.Bytes(t).Length).Append(" bytes"); break;
                        default: sb.Append(r.Number(t)); break;
                    }
                }
                o.WriteLine(sb.ToString());
            }
        }
    }
}

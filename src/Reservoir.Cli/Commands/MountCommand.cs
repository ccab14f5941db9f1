using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Reservoir.Api.Send;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Session;

namespace Reservoir.Cli.Commands;

/// <summary>
/// `reservoir mount IMAGE DIR [-o opts] [-f] [-d]`, also reached as `reservoir IMAGE DIR -o opts`
/// (what mount.fuse3 runs for `mount -t fuse.reservoir IMAGE DIR`). Without -f it returns once
/// the mount is live and serves from a background process (.NET cannot fork, so it re-executes
/// itself with -f in a new session and waits for the mount to appear in /proc/self/mountinfo).
/// Unmounting (umount DIR) or SIGTERM flushes, commits and exits.
/// </summary>
internal static class MountCommand
{
    public static Command Build(CliContext ctx)
    {
        var image = new Argument<string>("image");
        var dir = new Argument<string>("mountpoint");
        var opts = new Option<string?>("-o") { Description = "Options: ro, allow_other, default_permissions, noatime, discard[=sync|async], fsname= (the source mount tables show; default: the image's path), commit=SECONDS, threads=N, attr_timeout=SECONDS, cache=SIZE (the daemon's page cache budget, 256M unless given, at least 1M), subvol=PATH, subvolid=ID, submounts (every subvolume a mount of its own, with its own st_dev; `reservoir umount` unmounts the tree, as umount does with install.sh's helper), dedicated=N (with submounts: how many get threads of their own, 16), nofuseblk (as root the mount is a fuseblk mount over a loop device, so that sync(1) reaches it), debug" };
        var fg = new Option<bool>("-f", "--foreground") { Description = "Stay in the foreground (for systemd)" };
        var debug = new Option<bool>("-d", "--debug") { Description = "Log every request (implies -f)" };
        var detached = new Option<bool>("--detached") { Description = "(internal) the background half of a mount", Hidden = true };
        var cmd = new Command("mount", "Mount an image through FUSE") { image, dir, opts, fg, debug, detached };
        cmd.SetAction(pr =>
        {
            if (pr.GetValue(detached)) Fuse.Session.FuseSession.DetachFromTerminal();
            return Run(ctx, pr.GetValue(image)!, pr.GetValue(dir)!, pr.GetValue(opts), pr.GetValue(fg) || pr.GetValue(debug) || pr.GetValue(detached), pr.GetValue(debug));
        });
        return cmd;
    }

    public static int Run(CliContext ctx, string image, string dir, string? opts, bool foreground, bool debug)
    {
        var o = new FuseMountOptions();
        var unknown = o.Parse(opts);
        if (unknown.Count > 0)
        {
            ctx.Err.WriteLine($"reservoir mount: unknown option(s): {string.Join(", ", unknown.Select(FuseMountOptions.Explain))}");
            return 2;
        }
        if (debug) o.Debug = true;
        if (!File.Exists(image)) { ctx.Err.WriteLine($"reservoir mount: image '{image}' does not exist"); return 1; }
        if (!Directory.Exists(dir)) { ctx.Err.WriteLine($"reservoir mount: mount point '{dir}' {(File.Exists(dir) ? "is not a directory" : "does not exist")}"); return 1; }
        // A sparse image larger than the room left on its host: said at mount, since df inside
        // shows the image's free space, and writes will answer ENOSPC before that is used up
        // (the filesystem counts only space the host has given: SpaceManager.HostRoom.cs).
        if (!o.ReadOnly && Device.HostSpace.Of(image) is { Short: true } host)
            ctx.Err.WriteLine($"reservoir mount: warning: '{image}' may still grow by {Units.Human(host.MayGrowBy)} on its host, which has " +
                $"{Units.Human(host.HostAvailable)} free: once the host is full, writes answer ENOSPC though df inside shows room. " +
                "`mkfs --preallocate`, or `fallocate -l SIZE IMAGE` on an existing image, gives it its space now");
        if (!foreground) return Daemonize(ctx, image, dir, opts, o.Submounts);
        return Serve(ctx, Path.GetFullPath(image), Path.GetFullPath(dir), o);
    }

    /// <summary>Sends and receives through the mount, written and applied by the daemon from the
    /// engine: the bridge knows the ioctls, the .NET API the stream.</summary>
    internal static DaemonStreamService StreamsFor(Filesystem fs) => new(
        (req, output) =>
        {
            var s = DaemonSend.Run(fs, req.Subvolume, req.Parent, req.CloneSources, req.Name, new SendOptions(req.Version, req.NoData) { OmitStreamHeader = req.OmitStreamHeader, OmitEnd = req.OmitEnd }, output);
            return new DaemonSendCounts(s.Commands, s.StreamBytes, s.Inodes, s.DataBytes, s.CloneBytes, s.InodesExamined, s.HoleBytes);
        },
        (destination, input, made, detail) => DaemonReceive.Run(fs, destination, input, made, detail));

    private static int Serve(CliContext ctx, string image, string dir, FuseMountOptions o)
    {
        // Lines worth keeping the daemon's log for (warnings, errors, leak reports): a clean
        // unmount of a mount that logged none removes its log, or every mount would leave one.
        int notable = 0;
        void Log(string m)
        {
            if (!IsRoutine(m)) Interlocked.Increment(ref notable);
            ctx.Err.WriteLine(m);
        }
        using var dev = FileBlockDevice.Open(image, readOnly: o.ReadOnly);
        using var fs = Filesystem.Mount(dev, o.EngineOptions(m => Log($"reservoir: {m}")), o.DataOptions());
        var streams = StreamsFor(fs);
        o.Streams = streams;
        FuseSession session;
        try { session = FuseSession.Mount(fs, image, dir, o, Log); }
        catch (FsException ex) { ctx.Err.WriteLine($"reservoir mount: {ex.Message}"); return 1; }
        // The last commit and closing the image, once: at FUSE_DESTROY (umount of a fuseblk
        // mount waits for it, so the image is committed and free when umount returns), or
        // after the session ended (a plain fuse mount gets no DESTROY; SIGTERM).
        int closed = 0;
        void Close()
        {
            if (Interlocked.Exchange(ref closed, 1) != 0) return;
            // No send or receive uses the engine once it is closed (their callers hold the
            // mount, so one still running here lost its caller and ends at its next wait).
            streams.StopAll(TimeSpan.FromSeconds(10));
            var sync = fs.Sync();
            if (sync != Errno.OK) Log($"reservoir: final sync failed: {sync.Describe()}");
            fs.Dispose(); // reports any reservation leak
            // Before the image is let go of: whoever waits for that (umount, reservoir umount)
            // finds the log gone or kept for good.
            if (Volatile.Read(ref notable) == 0 && Environment.GetEnvironmentVariable(LogVariable) is { Length: > 0 } log)
                try { File.Delete(log); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            dev.Dispose();
        }
        session.OnDestroy = Close;
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; session.Dispose(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; session.Dispose(); });
        session.WaitUntilUnmounted();
        session.Dispose();
        Close();
        return 0;
    }

    /// <summary>
    /// Starts the serving half in the background (.NET cannot fork): this program again, through
    /// /bin/sh so its output goes to a log file (mount(8) runs helpers with almost no
    /// environment, so nothing is looked up on PATH), with --detached so it starts its own
    /// session. Returns 0 once the mount shows in /proc/self/mountinfo, or the child's error.
    /// </summary>
    private static int Daemonize(CliContext ctx, string image, string dir, string? opts, bool submounts)
    {
        string self = Environment.ProcessPath ?? "/usr/local/bin/reservoir";
        var args = new List<string>();
        if (Path.GetFileNameWithoutExtension(self) is "dotnet") args.Add(Path.GetFullPath(Environment.GetCommandLineArgs()[0]));
        args.AddRange(["mount", Path.GetFullPath(image), Path.GetFullPath(dir), "--detached"]);
        if (!string.IsNullOrEmpty(opts)) { args.Add("-o"); args.Add(opts); }
        string logDir = Directory.Exists("/run") && Libc_IsRoot() ? "/run" : Path.GetTempPath();
        string log = Path.Combine(logDir, $"reservoir-{Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/'))}-{Environment.ProcessId}.log");
        var psi = new ProcessStartInfo("/bin/sh", ["-c", "exec \"$0\" \"$@\" </dev/null >>\"$RESERVOIR_LOG\" 2>&1", self, .. args]) { UseShellExecute = false };
        psi.Environment[LogVariable] = log;
        // Tiered compilation stays on (without the instrumented tier: TieredPGO is off in the
        // project): the daemon starts on its ahead-of-time code (install.sh publishes it
        // ReadyToRun) and recompiles its hot methods fully optimized in the background. Turning
        // tiering off once made sense for a daemon that was compiled just in time, but with
        // ReadyToRun code it kept that code, less optimized, for good: measured on fresh mounts
        // (fsbench's metadata job, 3 alternating rounds) creates at 9.0-9.8k against
        // 5.4-8.0k files/s, deletes at 17-26k against 12-13.5k, and the first 256 MiB written
        // at 461-540 against 478-491 MiB/s with the slowest write 23-29 ms against 42-54 ms.
        string target = Path.GetFullPath(dir).TrimEnd('/');
        // The mount on top there now, if any: the new one is another (a mount over a mount
        // point already mounted, Reservoir's or not, is stacked on top as the kernel allows).
        // Waiting only for "a Reservoir mount is there" returned at once over another image's
        // mount, before the new one was made, and the caller's next command went to the old.
        int? before = Fuse.Session.MountInfo.At(target)?.Id;
        var child = Process.Start(psi)!;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            // With submounts, also until the subvolumes' own mounts are made (Serve says so).
            if (Fuse.Session.MountInfo.At(target) is { IsReservoir: true } now && now.Id != before
                && (!submounts || (File.Exists(log) && File.ReadAllText(log).Contains(SubmountsReady)))) return 0;
            if (child.HasExited)
            {
                // The daemon's reason, shown here: its log has served.
                if (File.Exists(log))
                {
                    ctx.Err.Write(File.ReadAllText(log));
                    try { File.Delete(log); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                }
                return child.ExitCode == 0 ? 1 : child.ExitCode;
            }
            Thread.Sleep(20);
        }
        ctx.Err.WriteLine($"reservoir mount: the mount did not appear within 30 s (log: {log})");
        return 1;
    }

    /// <summary>What <see cref="FuseSession.Mount"/> logs once the existing subvolumes are mounted.</summary>
    private const string SubmountsReady = "subvolume(s) mounted below";

    /// <summary>The daemon's log file, named in its environment by the mount command that
    /// started it (the shell that starts it sends its output there).</summary>
    private const string LogVariable = "RESERVOIR_LOG";

    /// <summary>Lines every mount logs: what INIT negotiated, the subvolumes' mounts made.</summary>
    internal static bool IsRoutine(string line) => line.StartsWith("fuse: kernel ", StringComparison.Ordinal) || line.Contains(SubmountsReady);

    private static bool Libc_IsRoot() => Environment.UserName == "root";

}

using System.Diagnostics;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Tx;
using Reservoir.Fuse.Session;

namespace Reservoir.Tests.Mounted;

/// <summary>
/// A Reservoir image mounted through FUSE in this process (the request threads run here; the
/// programs under test run as child processes, so nothing in this process touches the mount).
/// Needs root and /dev/fuse, and says so plainly when they are missing.
/// </summary>
internal sealed class MountedImage : IDisposable
{
    public string Dir { get; }
    public string Image { get; }
    private readonly FileBlockDevice _dev;
    public Filesystem Fs { get; }
    private FuseSession? _session;
    /// <summary>The session serving the mount (null once unmounted).</summary>
    public FuseSession? Session => _session;
    public readonly List<string> Log = new();

    /// <summary>The sends and receives the daemon runs (started and running: which way one went).</summary>
    public Reservoir.Fuse.Bridge.DaemonStreamService Streams { get; }

    public static void RequireFuse()
    {
        if (!File.Exists("/dev/fuse")) throw new Xunit.Sdk.XunitException("this test needs /dev/fuse, which is missing on this machine (modprobe fuse, or give the container the device)");
        if (Environment.UserName != "root") throw new Xunit.Sdk.XunitException("this test mounts with mount(2) and needs root");
    }

    public MountedImage(ulong size = 512UL << 20, bool quota = false, bool allowOther = false, bool defaultPermissions = false, string? options = null, Action<Filesystem>? before = null, Action<FuseMountOptions>? tune = null)
    {
        RequireFuse();
        var root = Directory.CreateTempSubdirectory("reservoir-mnt-").FullName;
        Image = Path.Combine(root, "disk.img");
        Dir = Path.Combine(root, "mnt");
        Directory.CreateDirectory(Dir);
        _dev = FileBlockDevice.Create(Image, size);
        Filesystem.Format(_dev);
        var o = new FuseMountOptions { Threads = 4, AllowOther = allowOther, DefaultPermissions = defaultPermissions, CommitSeconds = 5 };
        Xunit.Assert.Empty(o.Parse(options));
        tune?.Invoke(o);
        Fs = Filesystem.Mount(_dev, o.EngineOptions());
        // As `reservoir mount` serves: root's sends and receives through the mount are written
        // and applied by the daemon.
        Streams = Reservoir.Cli.Commands.MountCommand.StreamsFor(Fs);
        o.Streams = Streams;
        if (quota) TestFs.Ok(Fs.EnableQuota());
        before?.Invoke(Fs);
        _session = FuseSession.Mount(Fs, Image, Dir, o, m => { lock (Log) Log.Add(m); });
    }

    /// <summary>Runs a bash script in the mount; returns exit code and output.</summary>
    public static (int Code, string Out) Sh(string script, string cwd, int timeoutSec = 300)
    {
        var psi = new ProcessStartInfo("bash", ["-c", script]) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSec * 1000))
        {
            p.Kill(true);
            throw new Xunit.Sdk.XunitException($"timed out after {timeoutSec} s: {script}");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>Runs a bash script outside any mount; its output, or a failure with it.</summary>
    public static string Run0(string script, int timeoutSec = 300)
    {
        var (code, output) = Sh(script, "/", timeoutSec);
        if (code != 0) throw new Xunit.Sdk.XunitException($"exit {code}: {script}\n{output}");
        return output;
    }

    public string Run(string script, int timeoutSec = 300)
    {
        var (code, output) = Sh(script, Dir, timeoutSec);
        if (code != 0) throw new Xunit.Sdk.XunitException($"exit {code}: {script}\n{output}\nserver log: {string.Join("\n", Log.TakeLast(20))}");
        return output;
    }

    /// <summary>Unmounts and closes; returns the device for checks.</summary>
    public void Unmount()
    {
        _session?.Dispose();
        _session = null;
        Streams.StopAll(TimeSpan.FromSeconds(10));
        Fs.Dispose();
        _dev.Dispose();
    }

    public void Dispose()
    {
        Unmount();
        try { Directory.Delete(Path.GetDirectoryName(Image)!, true); } catch (IOException) { }
    }
}

/// <summary>A kernel filesystem (btrfs, ext4…) made on a sparse file in <paramref name="work"/>
/// and loop-mounted at work/<paramref name="fsType"/>, unmounted at Dispose: a peer to compare
/// with or exchange data with. Needs root and the filesystem's mkfs.</summary>
internal sealed class KernelLoopMount : IDisposable
{
    public string Dir { get; }

    public KernelLoopMount(string work, string fsType, string size = "256M")
    {
        Dir = Path.Combine(work, fsType);
        Directory.CreateDirectory(Dir);
        string img = Path.Combine(work, fsType + ".img");
        var prep = MountedImage.Sh($"truncate -s {size} {img} && mkfs.{fsType} -q {(fsType == "btrfs" ? "-f" : "-F")} {img} && mount -o loop {img} {Dir}", "/");
        Xunit.Assert.True(prep.Code == 0, $"could not make the {fsType} loop mount (mkfs.{fsType} installed?): " + prep.Out);
    }

    public void Dispose() => MountedImage.Sh($"umount {Dir}", "/");
}

/// <summary>A host filesystem of little room for images: a tmpfs of <paramref name="size"/>
/// mounted at work/host, unmounted at Dispose once the last loop device over an image on it
/// is freed (a moment after the image's own unmount). Needs root.</summary>
internal sealed class TmpfsHost : IDisposable
{
    public string Dir { get; }

    public TmpfsHost(string work, string size = "48m")
    {
        Dir = Path.Combine(work, "host");
        Directory.CreateDirectory(Dir);
        var (code, why) = MountedImage.Sh($"mount -t tmpfs -o size={size} tmpfs {Dir}", "/");
        Xunit.Assert.True(code == 0, "could not mount the tmpfs host: " + why);
    }

    public void Dispose()
    {
        for (int i = 0; i < 50 && MountedImage.Sh($"mountpoint -q {Dir}", "/").Code == 0; i++)
        {
            MountedImage.Sh($"umount {Dir}", "/");
            Thread.Sleep(100);
        }
    }
}

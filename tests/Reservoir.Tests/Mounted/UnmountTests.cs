using Reservoir.Fuse.Session;
using Xunit;

namespace Reservoir.Tests.Mounted;

/// <summary>
/// Unmounting never hangs. A fuseblk mount's umount(2) waits in the kernel for the answer to
/// FUSE_DESTROY, after the FORGETs of every inode it still caches: if the session's threads
/// stopped before that request came, nothing would ever answer it, and the unmount (and every
/// later sync(2) on the machine, which waits for that superblock) would wait forever.
/// </summary>
public class UnmountTests
{
    /// <summary>Runs <paramref name="unmount"/>; if it has not returned within
    /// <paramref name="limit"/>, aborts every FUSE connection of this mount point's device
    /// (so the machine is not left with a hung superblock) and fails.</summary>
    private static void WithinOrAbort(TimeSpan limit, (uint Major, uint Minor)? device, Action unmount)
    {
        var t = Task.Run(unmount);
        if (t.Wait(limit)) return;
        if (device is var (major, minor))
            try { File.WriteAllText($"/sys/fs/fuse/connections/{(major << 20) | minor}/abort", "1"); } catch (IOException) { }
        t.Wait(TimeSpan.FromSeconds(30));
        Assert.Fail($"the unmount did not return within {limit.TotalSeconds} s (connection aborted to clean up)");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void FuseblkUnmountIsAnsweredAfterManyForgetsWhateverTheThreadCount(int threads)
    {
        using var m = new MountedImage(options: $"threads={threads}");
        // Many inodes in the kernel's cache: umount sends their FORGETs (each waking a
        // request thread) before FUSE_DESTROY.
        m.Run("mkdir d && for i in $(seq 1 300); do echo $i > d/f$i; done && ls -l d | wc -l && cat d/* > /dev/null");
        Assert.Contains(" fuseblk", MountedImage.Run0($"grep ' {m.Dir} ' /proc/mounts"));
        var dev = Libc.DeviceOf(m.Dir);
        WithinOrAbort(TimeSpan.FromSeconds(60), dev, m.Unmount);
        Assert.DoesNotContain(m.Dir, File.ReadAllText("/proc/mounts"));
    }

    private const string ReadEveryFileThrice = """
        n=0
        for r in 1 2 3; do
          for i in $(seq 1 20); do
            v=$(cat f$i) && [ "$v" = $i ] && n=$((n+1))
            stat f$i > /dev/null || exit 3
          done
        done
        echo read=$n
        """;

    /// <summary>An unmount while a program still works in the mount detaches it lazily: the
    /// program goes on being served (every request it makes is answered, not only the first
    /// few), and when it lets go the kernel's DESTROY is answered and the session ends.</summary>
    [Fact]
    public void LazilyDetachedMountServesItsLastUserToTheEndThenEnds()
    {
        using var m = new MountedImage(options: "threads=2");
        m.Run("mkdir d && for i in $(seq 1 20); do echo $i > d/f$i; done");
        var dev = Libc.DeviceOf(m.Dir);
        string output = Path.Combine(Path.GetDirectoryName(m.Image)!, "user.out");
        // A program with its working directory in the mount: umount(2) answers EBUSY, so
        // the session detaches it. The program waits until the mount is gone from the
        // mount table, then reads every file (each a few requests), then leaves.
        var user = new System.Diagnostics.Process
        {
            StartInfo = new("bash", ["-c", $"exec > {output} 2>&1; cd {m.Dir}/d && while grep -q ' {m.Dir} ' /proc/mounts; do sleep 0.05; done; " + ReadEveryFileThrice]),
        };
        user.Start();
        Thread.Sleep(300); // it is in the mount
        WithinOrAbort(TimeSpan.FromSeconds(60), dev, m.Unmount);
        Assert.True(user.WaitForExit(30_000), "the program in the detached mount did not finish");
        string said = File.ReadAllText(output);
        Assert.True(user.ExitCode == 0, $"exit {user.ExitCode}: {said}");
        Assert.Equal("read=60", said.Trim());
    }

    /// <summary>A program that stays in a detached mount past the grace is cut off: its
    /// connection is aborted (it gets ENOTCONN, as after a daemon's exit) and the unmount
    /// returns instead of waiting for it.</summary>
    [Fact]
    public void DetachedMountStillInUseAfterTheGraceIsAborted()
    {
        using var m = new MountedImage(options: "threads=2");
        m.Run("echo hi > f");
        var dev = Libc.DeviceOf(m.Dir);
        string output = Path.Combine(Path.GetDirectoryName(m.Image)!, "user.out");
        m.Session!.LastUserGrace = TimeSpan.FromSeconds(1);
        // The program says when it is in the mount (a marker outside it), so the unmount
        // finds it there: busy, detached lazily.
        string marker = output + ".in";
        using var user = System.Diagnostics.Process.Start("bash", ["-c", $"exec > {output} 2>&1; cd {m.Dir} && touch {marker} && sleep 4; cat f; echo rc=$?"]);
        var wait = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(marker) && wait.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(10);
        Assert.True(File.Exists(marker), "the program did not get into the mount");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        WithinOrAbort(TimeSpan.FromSeconds(30), dev, m.Unmount);
        var took = sw.Elapsed;
        Assert.True(user.WaitForExit(30_000));
        string said = File.ReadAllText(output), log;
        lock (m.Log) log = string.Join("\n", m.Log);
        string why = $"unmount took {took.TotalSeconds:0.0} s; the program said: {said}; the session said: {log}";
        Assert.True(took < TimeSpan.FromSeconds(4), "the unmount waited past the 1 s grace for the program; " + why);
        Assert.True(log.Contains("its connection is aborted"), why);
        Assert.True(said.Contains("Transport endpoint is not connected") && said.Contains("rc=1"), why);
    }

    /// <summary>fusectl's connection is found from the mount's device, for a fuseblk mount (its
    /// loop device) and a plain fuse mount (an anonymous device): aborting it ends the session's
    /// threads and answers the mount's users ENOTCONN.</summary>
    [Theory]
    [InlineData("threads=2")]
    [InlineData("threads=2,nofuseblk")]
    public void AbortingThroughFusectlEndsTheConnection(string options)
    {
        using var m = new MountedImage(options: options);
        m.Run("echo hi > f");
        var dev = Libc.DeviceOf(m.Dir)!.Value;
        Assert.Null(FuseControl.Abort(dev));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (m.Session!.Running && sw.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(10);
        Assert.False(m.Session.Running, "the session's threads did not end");
        var (code, said) = MountedImage.Sh($"cat {m.Dir}/f", "/");
        Assert.NotEqual(0, code);
        Assert.Contains("Transport endpoint is not connected", said);
        // The dead mount stays until unmounted (umount(8)'s helper would wait for this
        // process, the daemon, to let go of the image).
        Assert.Equal(0, Libc.Umount2(m.Dir, 0));
    }

    /// <summary>Should every request thread have ended while the connection lives (a failed
    /// read of /dev/fuse ends one), a fuseblk unmount would wait for an answer to FUSE_DESTROY
    /// that nobody gives: the unmount's watchdog sees no thread left and aborts the connection,
    /// so the unmount returns.</summary>
    [Fact]
    public void FuseblkUnmountWithNoThreadLeftIsAbortedNotLeftWaiting()
    {
        using var m = new MountedImage(options: "threads=1");
        m.Run("echo hi > f");
        var dev = Libc.DeviceOf(m.Dir);
        m.Session!.EndThreadsAfterTheirNextRequestForTest();
        // The thread answers this stat's first request and ends; the stat, left waiting for
        // its next, is killed.
        MountedImage.Sh($"timeout -s KILL 2 stat {m.Dir}/f", "/", timeoutSec: 20);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (m.Session.Running && sw.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(10);
        Assert.False(m.Session.Running, "the request thread did not end");
        WithinOrAbort(TimeSpan.FromSeconds(30), dev, m.Unmount);
        Assert.DoesNotContain($" {m.Dir} ", File.ReadAllText("/proc/mounts"));
        lock (m.Log) Assert.Contains(m.Log, l => l.Contains("no request thread was left to answer the unmount"));
    }

    /// <summary>A request the daemon takes long over is said in its log, once, naming the
    /// request and the node (here a create held 1.5 s inside the engine, past a 300 ms
    /// threshold); quick requests are not.</summary>
    [Fact]
    public void ARequestInFlightPastTheThresholdIsSaidOnce()
    {
        using var m = new MountedImage(tune: o => o.SlowRequestAfter = TimeSpan.FromMilliseconds(300));
        m.Run("echo quick > a && cat a > /dev/null");
        int calls = 0;
        m.Fs.InjectTransactionStartFaults(() =>
        {
            // The first start on a request thread (not the flusher's or the committer's).
            if (Thread.CurrentThread.Name?.StartsWith("fuse-", StringComparison.Ordinal) == true && Interlocked.Increment(ref calls) == 1) Thread.Sleep(1500);
            return Reservoir.Common.Errno.OK;
        });
        m.Run("touch slow");
        m.Fs.InjectTransactionStartFaults(null);
        List<string> said;
        lock (m.Log) said = m.Log.Where(l => l.Contains("in flight")).ToList();
        var line = Assert.Single(said);
        Assert.Contains("request Create", line);
        Assert.Contains("on node 1 ", line);
    }
}

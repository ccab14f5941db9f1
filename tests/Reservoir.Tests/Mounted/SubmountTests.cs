using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Xunit;

namespace Reservoir.Tests.Mounted;

/// <summary>
/// `-o submounts`: every subvolume a FUSE mount of its own, so that stat shows each its own
/// st_dev and inode numbers counted within it, as btrfs shows them (docs/SNAPSHOTS.md §1).
/// </summary>
public class SubmountTests
{
    private static string Cli => $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";

    private static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static int MountsBelow(string dir) =>
        Reservoir.Fuse.Session.MountInfo.Read().Count(m => m.MountPoint == dir || m.MountPoint.StartsWith(dir + "/", StringComparison.Ordinal));

    /// <summary>After the unmount: no mount left on or below the mount point, and fsck clean.</summary>
    private static void NoMountLeftAndTheImageClean(MountedImage m)
    {
        Assert.Equal(0, MountsBelow(m.Dir));
        using (var dev = FileBlockDevice.Open(m.Image, readOnly: true))
        {
            var report = Fsck.Run(dev);
            Assert.True(report.Clean, string.Join("\n", report.Errors.Take(20)));
        }
        m.Dispose();
    }

    /// <param name="options">dedicated=0: every subvolume served by the shared threads through
    /// epoll; the default: each by threads of its own.</param>
    [Theory]
    [InlineData("submounts")]
    [InlineData("submounts,dedicated=0")]
    [InlineData("submounts,dedicated=2")]
    public void EverySubvolumeShowsItsOwnDeviceAndInodeNumbers(string options)
    {
        var m = new MountedImage(options: options, before: fs =>
        {
            TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "a", 0, 0, out var a));
            TestFs.Ok(fs.CreateSubvolume(a.Ino, "b", 0, 0, out _));
            TestFs.Ok(fs.CreateSnapshot(a.Ino, Filesystem.RootIno, "snap", true, out _));
        });
        try
        {
            // The image's mount and one per subvolume below it, the nested one inside its
            // parent's: four devices, each subvolume's root inode 256 as on btrfs.
            Assert.Equal(4, MountsBelow(m.Dir));
            Assert.Equal(4, Lines(m.Run("stat -c %d . a a/b snap")).Distinct().Count());
            Assert.Equal(["256", "256", "256"], Lines(m.Run("stat -c %i a a/b snap")));
            m.Run("echo one > a/f && test $(stat -c %d a/f) = $(stat -c %d a) && test $(stat -c %d a/f) != $(stat -c %d .) && test $(stat -c %i a/f) = 257");
            // A subvolume is a filesystem of its own to find -xdev, and to link(2) as on btrfs.
            Assert.Equal("./a/f", m.Run("find . -name f").Trim());
            Assert.Equal("", m.Run("find . -xdev -name f").Trim());
            var ln = MountedImage.Sh("ln a/f g 2>&1", m.Dir);
            Assert.NotEqual(0, ln.Code);
            Assert.Contains("cross-device", ln.Out);

            // Online: a subvolume or snapshot made through the mount has its own mount when the
            // command returns (stat right after it, no waiting); the snapshot's source is named
            // through Reservoir's identity ioctl, since st_ino is 256 on every subvolume's root.
            m.Run($"{Cli} subvolume create a/c && {Cli} subvolume snapshot -r a snap2");
            Assert.Equal(6, Lines(m.Run("stat -c %d . a a/b snap a/c snap2 snap2/f")).Distinct().Count()); // snap2/f on snap2's
            Assert.Equal("one", m.Run("cat snap2/f").Trim());
            Assert.Equal(6, MountsBelow(m.Dir));
            Assert.Matches(@"Subvolume ID:\s+259\n", m.Run($"{Cli} subvolume show a/c"));
            Assert.Matches(@"Subvolume ID:\s+260\n", m.Run($"{Cli} subvolume show snap2"));
            // A snapshot of a snapshot, its source inside another subvolume's mount.
            m.Run($"{Cli} subvolume snapshot snap2 a/c/again && test \"$(cat a/c/again/f)\" = one && echo two > a/c/again/f && test \"$(cat a/f)\" = one");
            Assert.Equal(7, MountsBelow(m.Dir));
            // Deleting one takes its mount along (the kernel detaches mounts on the name the
            // daemon invalidates), and those inside it; by id too, asked on the top mount while
            // the name is in a/c's (the entry is invalidated on the connection that serves it).
            Assert.Matches(@"Subvolume ID:\s+261\n", m.Run($"{Cli} subvolume show a/c/again"));
            m.Run($"{Cli} subvolume delete snap2 && test ! -e snap2 && {Cli} subvolume delete -i 261 . && test ! -e a/c/again");
            Assert.Equal(5, MountsBelow(m.Dir));
            m.Run($"{Cli} subvolume delete a/c");
            Assert.Equal(4, MountsBelow(m.Dir));
            // The kernel refuses to unmount the top alone while subvolumes are mounted below it
            // (umount -i: without a helper install.sh may have put there, which takes them down).
            Assert.NotEqual(0, MountedImage.Sh($"umount -i {m.Dir} 2>&1", "/").Code);
        }
        finally { m.Unmount(); }
        NoMountLeftAndTheImageClean(m);
    }

    /// <summary>Request threads of their own go to the first subvolumes mounted (dedicated=N)
    /// and come back when one's mount ends: with dedicated=1, a subvolume made after the first
    /// one was deleted gets them again (its threads are named for its id), and a second one made
    /// beside it shares the epoll threads.</summary>
    [Fact]
    public void ThreadsOfTheirOwnComeBackWhenASubvolumesMountEnds()
    {
        static bool HasThreads(ulong id) => Directory.GetDirectories("/proc/self/task").Any(t =>
            File.Exists(Path.Combine(t, "comm")) && File.ReadAllText(Path.Combine(t, "comm")).Trim().StartsWith($"fuse-sv{id}-", StringComparison.Ordinal));
        static bool Eventually(Func<bool> p)
        {
            for (int i = 0; i < 200 && !p(); i++) Thread.Sleep(25);
            return p();
        }
        var m = new MountedImage(options: "submounts,dedicated=1");
        try
        {
            m.Run($"{Cli} subvolume create a");
            Assert.True(HasThreads(256));
            m.Run($"{Cli} subvolume delete a");
            Assert.True(Eventually(() => !HasThreads(256)), "the deleted subvolume's threads end with its mount");
            m.Run($"{Cli} subvolume create b && {Cli} subvolume create c && echo x > b/f && echo y > c/f && test \"$(cat b/f c/f)\" = \"x\ny\"");
            Assert.True(HasThreads(257), "b has the threads a gave back");
            Assert.False(HasThreads(258), "c shares the epoll threads");
            Assert.Equal(3, MountsBelow(m.Dir));
        }
        finally { m.Unmount(); }
        Assert.Equal(0, MountsBelow(m.Dir));
        m.Dispose();
    }

    /// <summary>
    /// A daemon whose mount the user unmounted ends after it: by then the same mount point may
    /// hold a new mount of the image (a user remounting at once, or a script). The old daemon's
    /// clean-up must not take the new mount away (it did: a stress run through a fresh mount
    /// lost its whole tree a minute in, when the previous daemon, still letting go of 526
    /// submounts, unmounted the mount point it had once held).
    /// </summary>
    [Fact]
    public void AnEndingDaemonLeavesANewMountOnItsMountPointAlone()
    {
        MountedImage.RequireFuse();
        string root = Directory.CreateTempSubdirectory("reservoir-remount-").FullName;
        string dir = Path.Combine(root, "mnt");
        Directory.CreateDirectory(dir);
        var opts = new Reservoir.Fuse.Session.FuseMountOptions { Threads = 2 };
        Assert.Empty(opts.Parse("submounts"));
        var images = new List<(FileBlockDevice Dev, Filesystem Fs)>();
        try
        {
            for (int i = 0; i < 2; i++)
            {
                var dev = FileBlockDevice.Create(Path.Combine(root, $"d{i}.img"), 128UL << 20);
                Filesystem.Format(dev);
                var fs = Filesystem.Mount(dev, new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 0 });
                TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "s", 0, 0, out _));
                TestFs.Ok(fs.Create(Filesystem.RootIno, $"image{i}", 0x81A4, 0, 0, out _));
                images.Add((dev, fs));
            }
            var old = Reservoir.Fuse.Session.FuseSession.Mount(images[0].Fs, Path.Combine(root, "d0.img"), dir, opts);
            Assert.Equal(2, MountsBelow(dir));
            Assert.Equal(0, MountedImage.Sh($"umount -R {dir}", "/").Code);
            using var fresh = Reservoir.Fuse.Session.FuseSession.Mount(images[1].Fs, Path.Combine(root, "d1.img"), dir, opts);
            Assert.Equal(2, MountsBelow(dir));
            old.Dispose(); // the old daemon's clean-up, after the new mount is there
            Assert.Equal(2, MountsBelow(dir));
            Assert.True(File.Exists(Path.Combine(dir, "image1")));
            fresh.Dispose();
            Assert.Equal(0, MountsBelow(dir));
        }
        finally
        {
            MountedImage.Sh($"umount -R {dir} 2>/dev/null; true", "/");
            foreach (var (dev, fs) in images) { fs.Dispose(); dev.Dispose(); }
            try { Directory.Delete(root, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// `umount DIR` as on btrfs: the kernel refuses to unmount a mount with mounts below it, so
    /// `reservoir umount` (and install.sh's umount(8) helper, which runs it) takes the
    /// subvolumes' mounts down first, deepest first. A mount below that is not the daemon's (a
    /// tmpfs on a directory in a subvolume) makes it refuse before anything is unmounted, as
    /// umount refuses on any filesystem. The helper leaves every other FUSE mount to umount -i.
    /// </summary>
    [Fact]
    public void UmountTakesTheSubvolumesMountsAlong()
    {
        var m = new MountedImage(options: "submounts", before: fs =>
        {
            TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "a", 0, 0, out var a));
            TestFs.Ok(fs.CreateSubvolume(a.Ino, "b", 0, 0, out _));
            TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "c", 0, 0, out _));
            TestFs.Ok(fs.Mkdir(a.Ino, "t", 0x1ED, 0, 0, out _));
        });
        // The helper as install.sh writes it, with this build's command in it.
        string helper = Path.Combine(Path.GetDirectoryName(m.Image)!, "umount.fuse");
        File.WriteAllText(helper, File.ReadAllText(Path.Combine(Architecture.LayerTests.RepoRoot(), "src", "Reservoir.Cli", "umount.reservoir")).Replace("@RESERVOIR@", Cli));
        try
        {
            Assert.Equal(4, MountsBelow(m.Dir));
            m.Run("mount -t tmpfs tmpfs a/t && echo x > a/t/x");
            var busy = MountedImage.Sh($"{Cli} umount {m.Dir}", "/");
            Assert.Equal(32, busy.Code);
            Assert.Contains($"{m.Dir}/a/t (tmpfs) is mounted inside", busy.Out);
            Assert.Equal(5, MountsBelow(m.Dir)); // nothing taken down
            // The helper hands a mount that is not Reservoir's to umount -i, arguments as they came.
            Assert.Equal(0, MountedImage.Sh($"sh {helper} {m.Dir}/a/t -n -t fuse", "/").Code);
            Assert.Equal(4, MountsBelow(m.Dir));
            // A subvolume's mount in use (a process's working directory) stops it there, saying
            // so; the mounts below it are gone by then (b, unmounted first, deepest first).
            using (var sleeper = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("sleep", "60") { WorkingDirectory = Path.Combine(m.Dir, "c") })!)
            {
                var inUse = MountedImage.Sh($"{Cli} umount {m.Dir}", "/");
                sleeper.Kill();
                sleeper.WaitForExit();
                Assert.Equal(32, inUse.Code);
                Assert.Contains($"{m.Dir}/c: target is busy", inUse.Out);
                Assert.Contains("1 subvolume mount(s) below it were unmounted", inUse.Out);
                Assert.Equal(3, MountsBelow(m.Dir));
                Assert.Equal("", m.Run("ls a/b").Trim()); // reached through a's mount now
            }
            // As umount(8) runs it (statfs says "fuse"): the whole tree goes.
            var done = MountedImage.Sh($"sh {helper} {m.Dir} -n -t fuse", "/");
            Assert.True(done.Code == 0, done.Out);
            Assert.Equal(0, MountsBelow(m.Dir));
            var gone = MountedImage.Sh($"{Cli} umount {m.Dir}", "/");
            Assert.Equal(32, gone.Code);
            Assert.Contains("not mounted", gone.Out);
        }
        finally { m.Unmount(); }
        NoMountLeftAndTheImageClean(m);
    }

    /// <summary>
    /// The kernel refuses to rename a mount point, so with submounts a subvolume's directory is
    /// renamed by unmounting its mount first; the daemon mounts it again at its new name (it
    /// did not: the renamed subvolume then showed the parent's device until a remount).
    /// </summary>
    [Fact]
    public void ASubvolumeRenamedOnceItsMountWasUnmountedIsMountedAgainAtItsNewName()
    {
        var m = new MountedImage(options: "submounts", before: fs =>
        {
            TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "a", 0, 0, out var a));
            TestFs.Ok(fs.Create(a.Ino, "f", 0x81A4, 0, 0, out _));
        });
        try
        {
            Assert.Equal(2, MountsBelow(m.Dir));
            var busy = MountedImage.Sh("mv a b 2>&1", m.Dir);
            Assert.NotEqual(0, busy.Code);
            Assert.Contains("busy", busy.Out);
            m.Run($"{Cli} umount a && mv a b");
            bool own = false;
            for (int i = 0; i < 200 && !own; i++)
            {
                own = m.Run("stat -c %d . b").Split('\n', StringSplitOptions.RemoveEmptyEntries).Distinct().Count() == 2;
                if (!own) Thread.Sleep(25);
            }
            Assert.True(own, "b has a device of its own again");
            Assert.Equal(2, MountsBelow(m.Dir));
            Assert.Equal("256", m.Run("stat -c %i b").Trim());
            Assert.True(File.Exists(Path.Combine(m.Dir, "b", "f")));
        }
        finally { m.Unmount(); }
        NoMountLeftAndTheImageClean(m);
    }
}

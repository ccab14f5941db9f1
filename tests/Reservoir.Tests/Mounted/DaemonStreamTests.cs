using System.Buffers.Binary;
using Reservoir.Api.Send;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Mounted;

/// <summary>
/// Root's `reservoir send` and `receive` through a mount are written and applied by the daemon
/// from the engine (the FUSE bridge's 'R' 17-19, the caller's pipe): the stream must be the one
/// a send that walks the mount writes, and the one an offline send of the image writes, byte for
/// byte, and a receive must make what a receive walking the mount makes; a send whose reader or a
/// receive whose writer goes away must end in the daemon too, a receive cut short leaving
/// nothing; the ioctls must touch nothing but the caller's pipe.
/// </summary>
public sealed class DaemonStreamTests
{
    private static readonly string Cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";

    /// <summary>Hard links, a symbolic link, a FIFO, a device, a sparse file, xattrs, a reflinked
    /// copy, other owners, 300 small files and one of 3 MB (more than a pipe holds).</summary>
    private const string Populate =
        "printf 'hello\\n' > a && mkdir -p d/e && ln a d/hl && ln -s a sl && mkfifo ff && truncate -s 1M sparse && " +
        "printf xyz | dd of=sparse bs=1 seek=300000 conv=notrunc status=none && setfattr -n user.k -v val a && chmod 4755 a && " +
        ": > empty && chown 1000:1000 empty && head -c 3000000 /dev/urandom > big && cp --reflink=auto big d/e/copy && mknod cdev c 1 3 && " +
        "for i in $(seq 300); do echo $i > d/f$i; done";

    private const string Changes =
        "echo more >> a && mv sl sl2 && rm ff && mv d/e/copy d/moved && setfattr -x user.k a && truncate -s 100 big && printf new > fresh && " +
        "dd if=/dev/urandom of=d/moved bs=4096 count=3 seek=100 conv=notrunc status=none && for i in $(seq 0 5 300); do echo x >> d/f$i; done";

    /// <summary>Sends with the daemon writing and with the walk, and checks which way each went
    /// from the mount's count of daemon-written sends.</summary>
    private static (byte[] Daemon, byte[] Walked) Both(MountedImage m, string work, string args, int subvolumes = 1)
    {
        int before = m.Streams.Started;
        m.Run($"{Cli} send -q -f {work}/daemon.stream {args}");
        Assert.Equal(before + subvolumes, m.Streams.Started);
        m.Run($"RESERVOIR_SEND_RECEIVE=walk {Cli} send -q -f {work}/walked.stream {args}");
        Assert.Equal(before + subvolumes, m.Streams.Started);
        var both = (File.ReadAllBytes($"{work}/daemon.stream"), File.ReadAllBytes($"{work}/walked.stream"));
        Assert.True(both.Item1.Length > 1000, $"send {args}: a stream of {both.Item1.Length} bytes");
        return both;
    }

    [Fact]
    public void ARootSendThroughTheMountIsWrittenByTheDaemonAsTheWalkAndTheImageWriteIt()
    {
        using var m = new MountedImage(size: 256UL << 20, allowOther: true);
        string work = Path.GetDirectoryName(m.Dir)!;
        m.Run($"{Cli} subvolume create sv && cd sv && {Populate}");
        m.Run($"chmod -R a+rX sv && {Cli} subvolume snapshot -r sv s1 && cd sv && {Changes} && cd .. && chmod -R a+rX sv && {Cli} subvolume snapshot -r sv s2");
        m.Run($"{Cli} subvolume create other && cp --reflink=auto s1/big other/big-copy && echo own > other/own && {Cli} subvolume snapshot -r other other-ro");

        var (full, fullWalked) = Both(m, work, "s1");
        Assert.Equal(fullWalked, full);
        var (inc, incWalked) = Both(m, work, "-p s1 s2");
        Assert.Equal(incWalked, inc);
        Assert.Contains("clone", m.Run($"{Cli} receive --dump -f {work}/daemon.stream")); // d/moved, from the parent's d/e/copy
        var (cloned, clonedWalked) = Both(m, work, "-c s1 other-ro");
        Assert.Equal(clonedWalked, cloned);
        Assert.Contains("clonepath=big", m.Run($"{Cli} receive --dump -f {work}/daemon.stream"));
        var (noData, noDataWalked) = Both(m, work, "--proto 2 --no-data s2");
        Assert.Equal(noDataWalked, noData);
        var (two, twoWalked) = Both(m, work, "s1 s2", subvolumes: 2);
        Assert.Equal(twoWalked, two);
        // -e: the two as one stream (a header and an END fewer), received by the daemon from a
        // sender that never closes its end and writes on past the END (`receive -e` stops there;
        // the sender ends on the broken pipe once the receive has).
        var (oneStream, oneStreamWalked) = Both(m, work, "-e s1 s2", subvolumes: 2);
        Assert.Equal(oneStreamWalked, oneStream);
        Assert.Equal(two.Length - 27, oneStream.Length);
        File.WriteAllBytes($"{work}/e.stream", oneStream);
        m.Run($"mkdir in-e && {{ cat {work}/e.stream; while sleep 0.3; do printf x || break; done; }} | timeout 30 {Cli} receive -q -e in-e && test \"$(cat in-e/s2/fresh)\" = new && test -e in-e/s1/big");

        // Received by the daemon and by the walk, the daemon's streams make the snapshots again,
        // the same as each other. Names the kernel looked up (and found missing) before a
        // receive show once it has made them.
        File.WriteAllBytes($"{work}/full.stream", full);
        File.WriteAllBytes($"{work}/inc.stream", inc);
        int started = m.Streams.Started;
        var said = m.Run($"mkdir in && ! stat in/s1 in/s2 2>/dev/null && {Cli} receive -f {work}/full.stream in 2>&1 && stat in/s1 >/dev/null && {Cli} receive -f {work}/inc.stream in 2>&1 && stat in/s2 >/dev/null");
        Assert.Equal("At subvol s1\nAt snapshot s2\n", said);
        Assert.Equal(started + 2, m.Streams.Started);
        m.Run($"mkdir in2 && RESERVOIR_SEND_RECEIVE=walk {Cli} receive -q -f {work}/full.stream in2 && RESERVOIR_SEND_RECEIVE=walk {Cli} receive -q -f {work}/inc.stream in2");
        Assert.Equal(started + 2, m.Streams.Started);
        const string listing = "find . -printf '%p %y %m %U %G %s %T@ %l\\n' | sort && find . -type f -exec md5sum {} + | sort && getfattr -R -h -d -m - . 2>/dev/null";
        string sent = m.Run($"cd s2 && {listing}"), received = m.Run($"cd in/s2 && {listing}");
        Assert.Contains("./d/moved", sent);
        Assert.Equal(sent, received);
        Assert.Equal(sent, m.Run($"cd in2/s2 && {listing}"));
        string show = m.Run($"{Cli} subvolume show in/s2");
        Assert.Contains("Flags: \t\t\treadonly", show);
        Assert.Matches(@"Received UUID: \t+[0-9a-f-]{36}\n", show);

        // Another user may not have the daemon write (the stream names every file whatever the
        // directories' permissions): their send walks the mount, to the same changes.
        m.Run($"chmod 755 {work}");
        int before = m.Streams.Started;
        var asUser = MountedImage.Sh($"setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp DOTNET_CLI_HOME=/tmp {Cli} send -q -p s1 s2 > {work}/user.stream", m.Dir);
        Assert.True(asUser.Code == 0, asUser.Out);
        Assert.Equal(before, m.Streams.Started);
        Assert.Equal(m.Run($"{Cli} receive --dump -f {work}/inc.stream"), m.Run($"{Cli} receive --dump -f {work}/user.stream"));

        // Offline, the image's send writes the same bytes.
        m.Unmount();
        MountedImage.Run0($"{Cli} send -q -f {work}/offline.stream {m.Image} /s1 && {Cli} send -q -f {work}/offline-inc.stream -p /s1 {m.Image} /s2");
        Assert.Equal(full, File.ReadAllBytes($"{work}/offline.stream"));
        Assert.Equal(inc, File.ReadAllBytes($"{work}/offline-inc.stream"));
        MountTests.ImageIsClean(m);
    }

    /// <summary>A send whose output fails, or whose command is killed while the daemon waits on
    /// the full pipe, ends in the daemon as well (EPIPE): no request thread is left writing, the
    /// next send is whole, and the mount unmounts.</summary>
    [Fact]
    public void ADaemonSendWhoseReaderGoesAwayEndsThereToo()
    {
        using var m = new MountedImage(size: 256UL << 20);
        string work = Path.GetDirectoryName(m.Dir)!;
        m.Run($"{Cli} subvolume create sv && head -c 40000000 /dev/urandom > sv/big && {Cli} subvolume snapshot -r sv snap");

        var full = MountedImage.Sh($"{Cli} send snap > /dev/full", m.Dir);
        Assert.Equal(1, full.Code);
        Assert.Contains("cannot write the stream", full.Out);
        WaitForNoDaemonSend(m);

        // The command blocks writing to a pipe nobody reads, the daemon on the full pipe to it;
        // then the command is killed.
        int before = m.Streams.Started;
        m.Run($"mkfifo {work}/p && {{ sleep 31 < {work}/p & r=$!; {Cli} send snap > {work}/p & s=$!; sleep 3; kill -KILL $s; kill $r; wait; true; }}");
        Assert.Equal(before + 1, m.Streams.Started);
        WaitForNoDaemonSend(m);

        m.Run($"{Cli} send -q -f {work}/s.stream snap && mkdir in && {Cli} receive -q -f {work}/s.stream in && cmp sv/big in/snap/big");
        m.Unmount();
        MountTests.ImageIsClean(m);
    }

    /// <summary>btrfs-progs' -v and --compressed-data: `send -v` says the stream's version and
    /// how each subvolume was read (by the daemon, through the mount, from the image);
    /// `--compressed-data` asks for version 2 unless a version is given (Reservoir stores nothing
    /// compressed, so the data goes as plain WRITEs); `receive -v` says what each stream names,
    /// in btrfs receive -v's words, from the daemon as from the walk.</summary>
    [Fact]
    public void SendAndReceiveTakeBtrfsProgsVerboseAndCompressedDataOptions()
    {
        using var m = new MountedImage(size: 128UL << 20);
        string work = Path.GetDirectoryName(m.Dir)!;
        m.Run($"{Cli} subvolume create sv && echo a > sv/a && {Cli} subvolume snapshot -r sv s1 && echo b > sv/b && {Cli} subvolume snapshot -r sv s2");
        Assert.Contains("Stream version 1; s1 written by the daemon\n", m.Run($"{Cli} send -v -f {work}/1.stream s1 2>&1"));
        Assert.Contains("Stream version 1; s2 read through the mount, against s1\n", m.Run($"RESERVOIR_SEND_RECEIVE=walk {Cli} send -v -p s1 -f {work}/2.stream s2 2>&1"));
        m.Run($"{Cli} send -q --compressed-data -f {work}/c2.stream s1 && {Cli} send -q --compressed-data --proto 1 -f {work}/c1.stream s1");
        Assert.Equal((2, 1), (File.ReadAllBytes($"{work}/c2.stream")[13], File.ReadAllBytes($"{work}/c1.stream")[13]));
        Assert.DoesNotContain("encoded_write", m.Run($"{Cli} receive --dump -f {work}/c2.stream"));

        string uuid = System.Text.RegularExpressions.Regex.Match(m.Run($"{Cli} subvolume show s2"), @"UUID: \t+([0-9a-f-]{36})\n").Groups[1].Value;
        string parent = System.Text.RegularExpressions.Regex.Match(m.Run($"{Cli} subvolume show s1"), @"UUID: \t+([0-9a-f-]{36})\n").Groups[1].Value;
        Assert.Equal(36, uuid.Length);
        string daemon = m.Run($"mkdir in && {Cli} receive -v -f {work}/1.stream in 2>&1 && {Cli} receive -v -f {work}/2.stream in 2>&1");
        string walked = m.Run($"mkdir in2 && RESERVOIR_SEND_RECEIVE=walk {Cli} receive -v -f {work}/1.stream in2 2>&1 && RESERVOIR_SEND_RECEIVE=walk {Cli} receive -v -f {work}/2.stream in2 2>&1");
        Assert.Matches($@"At subvol s1\nreceiving subvol s1 uuid={parent}, stransid=\d+\nAt snapshot s2\nreceiving snapshot s2 uuid={uuid}, ctransid=\d+ parent_uuid={parent}, parent_ctransid=\d+\n", daemon);
        Assert.Equal(daemon, walked);
        m.Run($"{Cli} send -q -f {work}/3.stream s2");
        m.Unmount();
        Assert.Contains("s2 read from the image", MountedImage.Run0($"{Cli} send -v -f {work}/4.stream {m.Image} /s2 2>&1"));
        Assert.Equal(File.ReadAllBytes($"{work}/3.stream"), File.ReadAllBytes($"{work}/4.stream"));
    }

    /// <summary>A stream cut short (a truncated file, or a command killed while the daemon
    /// waits on the pipe it writes) leaves nothing behind in the daemon's receive: the subvolume
    /// it was making is deleted, the next receive of the whole stream works, fsck is clean. A
    /// name taken is refused with the reason, what is there untouched.</summary>
    [Fact]
    public void ADaemonReceiveCutShortLeavesNothing()
    {
        using var m = new MountedImage(size: 256UL << 20);
        string work = Path.GetDirectoryName(m.Dir)!;
        m.Run($"{Cli} subvolume create sv && head -c 20000000 /dev/urandom > sv/big && for i in $(seq 100); do echo $i > sv/f$i; done && " +
            $"{Cli} subvolume snapshot -r sv snap && {Cli} send -q -f {work}/s.stream snap && mkdir in && head -c 10000000 {work}/s.stream > {work}/cut.stream");

        var cut = MountedImage.Sh($"{Cli} receive -f {work}/cut.stream in", m.Dir);
        Assert.Equal(1, cut.Code);
        Assert.Contains("the stream ends inside a command", cut.Out);
        Assert.Equal("", m.Run("ls in"));
        WaitForNoDaemonSend(m);

        // The command feeds the daemon from a FIFO that holds back the rest of the stream; it is
        // killed with the subvolume half made.
        int before = m.Streams.Started;
        m.Run($"mkfifo {work}/p && {{ (head -c 10000000 {work}/s.stream; sleep 30) > {work}/p & w=$!; {Cli} receive -f {work}/p in & r=$!; sleep 3; kill -KILL $r; kill $w; pkill -f 'sleep 30$' ; wait; true; }}");
        Assert.Equal(before + 1, m.Streams.Started);
        WaitForNoDaemonSend(m);
        Assert.Equal("", m.Run("ls in"));

        m.Run($"{Cli} receive -q -f {work}/s.stream in && cmp sv/big in/snap/big && cmp sv/f77 in/snap/f77");
        var again = MountedImage.Sh($"{Cli} receive -f {work}/s.stream in", m.Dir);
        Assert.Equal(1, again.Code);
        Assert.Contains("'snap' exists already", again.Out);
        m.Run("cmp sv/big in/snap/big");
        m.Run($"{Cli} subvolume sync .");
        m.Unmount();
        MountTests.ImageIsClean(m);
    }

    /// <summary>With -o submounts the daemon's receive gives each subvolume it made a mount of
    /// its own, as `subvolume create` does: a device of its own when the command returns, and a
    /// subvolume received into another subvolume's mount is mounted inside that one's.</summary>
    [Fact]
    public void OnASubmountsMountAReceivedSubvolumeHasItsOwnDeviceWhenReceiveReturns()
    {
        var m = new MountedImage(size: 256UL << 20, options: "submounts");
        try
        {
            string work = Path.GetDirectoryName(m.Dir)!;
            m.Run($"{Cli} subvolume create sv && for i in $(seq 30); do echo $i > sv/f$i; done && {Cli} subvolume snapshot -r sv s1 && " +
                $"echo more >> sv/f3 && {Cli} subvolume snapshot -r sv s2 && {Cli} send -q -f {work}/1.stream s1 && {Cli} send -q -p s1 -f {work}/2.stream s2 && " +
                $"{Cli} subvolume create box && mkdir in");
            int started = m.Streams.Started;
            m.Run($"{Cli} receive -q -f {work}/1.stream in && {Cli} receive -q -f {work}/2.stream in && {Cli} receive -q -f {work}/1.stream box");
            Assert.Equal(started + 3, m.Streams.Started);
            // in, in/s1, in/s2, box and box/s1: five devices, read at once after the commands.
            Assert.Equal(5, m.Run("stat -c %d in in/s1 in/s2 box box/s1").Split('\n', StringSplitOptions.RemoveEmptyEntries).Distinct().Count());
            Assert.Equal("more", m.Run("tail -n 1 in/s2/f3").Trim());
            Assert.Equal(["256", "256"], m.Run("stat -c %i in/s2 box/s1").Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        finally { m.Unmount(); }
        Assert.Equal(0, Reservoir.Fuse.Session.MountInfo.Read().Count(x => x.MountPoint.StartsWith(m.Dir, StringComparison.Ordinal)));
        MountTests.ImageIsClean(m);
        m.Dispose();
    }

    private static void WaitForNoDaemonSend(MountedImage m)
    {
        var until = DateTime.UtcNow.AddSeconds(20);
        while (m.Streams.Running > 0 && DateTime.UtcNow < until) Thread.Sleep(20);
        Assert.Equal(0, m.Streams.Running);
    }

    /// <summary>The ioctl opens only a pipe of the caller's whose inode the caller names: another
    /// file of the caller's, or a pipe named with the wrong inode, is refused (EBADF) and nothing
    /// is written to it; a directory that is not a subvolume's root is refused (EINVAL); a
    /// writable subvolume is refused by the send itself, with its reason, before any byte.</summary>
    [Fact]
    public void TheSendIoctlWritesIntoNothingButTheCallersPipe()
    {
        using var m = new MountedImage(size: 128UL << 20);
        string work = Path.GetDirectoryName(m.Dir)!;
        m.Run($"{Cli} subvolume create sv && echo x > sv/f && mkdir sv/d && {Cli} subvolume snapshot -r sv snap && mkfifo {work}/fifo");

        using (var file = File.Open($"{work}/victim", FileMode.Create, FileAccess.ReadWrite))
        {
            ulong fileIno = ulong.Parse(MountedImage.Run0($"stat -c %i {work}/victim").Trim());
            Assert.Equal(Errno.EBADF, Ask($"{m.Dir}/snap", (int)file.SafeFileHandle.DangerousGetHandle(), fileIno, out _));
            Assert.Equal(0, new FileInfo($"{work}/victim").Length);
        }
        // A FIFO opened read-write never blocks its opener; its inode is the path's.
        using (var fifo = File.OpenHandle($"{work}/fifo", FileMode.Open, FileAccess.ReadWrite))
        {
            ulong fifoIno = ulong.Parse(MountedImage.Run0($"stat -c %i {work}/fifo").Trim());
            int fd = (int)fifo.DangerousGetHandle();
            Assert.Equal(Errno.EBADF, Ask($"{m.Dir}/snap", fd, fifoIno + 1, out _));
            Assert.Equal(Errno.EINVAL, Ask($"{m.Dir}/snap/d", fd, fifoIno, out _));
            // The send starts (a token) and fails at once; its outcome says why.
            Assert.Equal(Errno.OK, Ask($"{m.Dir}/sv", fd, fifoIno, out var page));
            ulong token = BinaryPrimitives.ReadUInt64LittleEndian(page);
            Assert.NotEqual(0UL, token);
            Errno e;
            for (int i = 0; (e = Outcome($"{m.Dir}/sv", token, page)) == Errno.EAGAIN && i < 500; i++) Thread.Sleep(10);
            Assert.Equal(Errno.OK, e);
            Assert.Equal(Errno.ENOENT, Outcome($"{m.Dir}/sv", token, new byte[16376])); // answered once
            Assert.Equal(Errno.EINVAL, (Errno)BinaryPrimitives.ReadInt32LittleEndian(page));
            int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(4));
            Assert.Contains("is not read-only", System.Text.Encoding.UTF8.GetString(page, 64, len));
            Assert.Equal(0L, BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(16))); // stream bytes
        }
        Assert.Equal(0, m.Streams.Running);

        // Through the client: a writable subvolume is the send's error, with the daemon's words.
        var ex = Assert.Throws<FsException>(() => DaemonStreamClient.TrySend($"{m.Dir}/sv", 0, [], "sv", new SendOptions(), Stream.Null, out _));
        Assert.Equal(Errno.EINVAL, ex.Errno);
        Assert.Contains("is not read-only", ex.Message);
        using var ms = new MemoryStream();
        Assert.True(DaemonStreamClient.TrySend($"{m.Dir}/snap", 0, [], "snap", new SendOptions(), ms, out var sum));
        Assert.Equal(ms.Length, sum.StreamBytes);
        Assert.Equal(3, sum.Inodes); // the root, f and d
        m.Unmount();
    }

    /// <summary>'R' 18: the outcome of the send <paramref name="token"/> names, into <paramref name="page"/>.</summary>
    private static Errno Outcome(string dir, ulong token, byte[] page)
    {
        Array.Clear(page);
        BinaryPrimitives.WriteUInt64LittleEndian(page, token);
        int d = OnlineSubvolume.Open(dir, OnlineSubvolume.O_RDONLY | OnlineSubvolume.O_DIRECTORY | OnlineSubvolume.O_CLOEXEC);
        Assert.True(d >= 0, $"cannot open {dir}");
        try { return OnlineSubvolume.Ioctl(d, 0xC0000000 | (16376u << 16) | (0x52 << 8) | 18, page); }
        finally { OnlineSubvolume.Close(d); }
    }

    /// <summary>'R' 17 as the bridge reads it: the descriptor, stream version 1, the pipe's inode,
    /// no parent, no flags, the name "snap", no clone sources.</summary>
    private static Errno Ask(string dir, int fd, ulong pipeIno, out byte[] page)
    {
        const uint size = 16376;
        page = new byte[size];
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)fd);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(4), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(8), pipeIno);
        BinaryPrimitives.WriteUInt16LittleEndian(page.AsSpan(28), 4);
        "snap"u8.CopyTo(page.AsSpan(32));
        int d = OnlineSubvolume.Open(dir, OnlineSubvolume.O_RDONLY | OnlineSubvolume.O_DIRECTORY | OnlineSubvolume.O_CLOEXEC);
        Assert.True(d >= 0, $"cannot open {dir}");
        try { return OnlineSubvolume.Ioctl(d, 0xC0000000 | (size << 16) | (0x52 << 8) | 17, page); }
        finally { OnlineSubvolume.Close(d); }
    }
}

using System.Text.Json;
using Reservoir.Cli;
using Reservoir.Cli.Commands;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Cli;

/// <summary>The `reservoir` command line, run in-process on real image files.</summary>
public sealed partial class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("reservoir-cli-").FullName;
    private string Img => Path.Combine(_dir, "disk.img");

    private (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>`reservoir filesystem trim IMAGE` punches the free space out of the image file:
    /// after a 40 MB file is deleted the image takes that much less on the host; the file kept
    /// reads back and fsck is clean.</summary>
    [Fact]
    public void TrimGivesAnImagesFreeSpaceBackToTheHost()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "256M").Code);
        var keep = Path.Combine(_dir, "keep.bin");
        var gone = Path.Combine(_dir, "gone.bin");
        var data = new byte[2_000_000];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(keep, data);
        var big = new byte[40_000_000];
        new Random(4).NextBytes(big);
        File.WriteAllBytes(gone, big);
        Assert.Equal(0, Run("cp", Img, keep, ":/").Code);
        Assert.Equal(0, Run("cp", Img, gone, ":/").Code);
        long Blocks() => long.Parse(Reservoir.Tests.Mounted.MountedImage.Sh($"stat -c %b {Img}", "/").Out.Trim(), System.Globalization.CultureInfo.InvariantCulture);
        long before = Blocks();
        Assert.Equal(0, Run("rm", Img, "/gone.bin").Code);
        var t = Run("filesystem", "trim", "-v", Img);
        Assert.True(t.Code == 0, t.Err);
        Assert.Contains("trimmed", t.Out);
        long after = Blocks();
        Assert.True(before - after >= 38_000_000L / 512, $"image blocks {before} -> {after}");
        var back = Path.Combine(_dir, "back.bin");
        Assert.Equal(0, Run("cp", Img, ":/keep.bin", back).Code);
        Assert.Equal(data, File.ReadAllBytes(back));
        Assert.Equal(0, Run("fsck", Img).Code);
        Assert.Equal(2, Run("filesystem", "trim", "-m", "lots", Img).Code);
    }

    /// <summary>`reservoir filesystem resize` on an image, as btrfs-progs' on a mount point: it
    /// prints what it did; `truncate -s` shows as device slack in `filesystem usage` until
    /// `resize max` takes it in; a shrink past the data and bad arguments fail with a reason and
    /// change nothing; the file kept reads back and fsck is clean.</summary>
    [Fact]
    public void ResizeGrowsAndShrinksAnImage()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var keep = Path.Combine(_dir, "keep.bin");
        var data = new byte[20_000_000];
        new Random(5).NextBytes(data);
        File.WriteAllBytes(keep, data);
        Assert.Equal(0, Run("cp", Img, keep, ":/").Code);
        Assert.Equal("Resize device id 1 (" + Img + ") from 64.0MiB to 96.0MiB\n", Run("filesystem", "resize", "+32M", Img).Out);
        Assert.Equal(96L << 20, new FileInfo(Img).Length);
        using (var f = File.OpenWrite(Img)) f.SetLength(128L << 20);
        var usage = Run("filesystem", "usage", "-b", Img).Out;
        Assert.Matches(@"Device size:\s+134217728\n", usage);
        Assert.Matches(@"Device slack:\s+33554432\n", usage);
        // -T: btrfs's table of the device by kind, its slack in the device and total rows, every
        // line as wide as the table (as btrfs-progs pads them).
        var table = Run("filesystem", "usage", "-T", "-b", Img).Out.Split('\n');
        int head = Array.FindIndex(table, l => l.StartsWith("Id Path", StringComparison.Ordinal));
        Assert.Matches(@"^Id Path +single +single +Unallocated +Total +Slack *$", table[head]);
        Assert.Matches(@"^ +Data +Metadata +$", table[head - 1]);
        Assert.Matches($@"^ 1 {System.Text.RegularExpressions.Regex.Escape(Img)} +\d+ +\d+ +\d+ +134217728 +33554432$", table[head + 2]);
        Assert.Matches(@"^   Total +\d+ +\d+ +\d+ +134217728 +33554432$", table[head + 4]);
        Assert.Matches(@"^   Used +\d+ +\d+ +$", table[head + 5]);
        Assert.Single(table.Skip(head - 1).Take(7).Select(l => l.Length).Distinct());
        Assert.Contains("to 128MiB", Run("filesystem", "resize", "1:max", Img).Out);
        Assert.Matches(@"Device slack:\s+0\n", Run("filesystem", "usage", "-b", Img).Out);
        var refused = Run("filesystem", "resize", "12M", Img);
        Assert.Equal(1, refused.Code);
        Assert.Contains("cannot shrink to 12.0MiB", refused.Err);
        Assert.Contains("of metadata are in use", refused.Err);
        Assert.Equal(128L << 20, new FileInfo(Img).Length);
        var bad = Run("filesystem", "resize", "2:+1G", Img);
        Assert.Equal(1, bad.Code);
        Assert.Contains("no device with id '2'", bad.Err);
        var huge = Run("filesystem", "resize", "2E", Img);
        Assert.Equal(1, huge.Code);
        Assert.Contains("past the largest filesystem", huge.Err);
        Assert.Contains("to 40.0MiB", Run("filesystem", "resize", "40M", Img).Out);
        Assert.Equal(40L << 20, new FileInfo(Img).Length);
        var back = Path.Combine(_dir, "back.bin");
        Assert.Equal(0, Run("cp", Img, ":/keep.bin", back).Code);
        Assert.Equal(data, File.ReadAllBytes(back));
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`filesystem show`, `df` and `label` print as btrfs-progs' do; the global
    /// reserve of a 1 GiB image is 1/32 of the 1023 MiB after the first MiB, node-aligned (the
    /// space manager's rule, worked out here by hand). A label of 256 bytes is refused and
    /// changes nothing.</summary>
    [Fact]
    public void ShowDfAndLabelPrintAsBtrfsProgs()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "1G", "--nodesize", "4096").Code);
        var show = Run("filesystem", "show", "--raw", Img).Out;
        Assert.Matches(@"^Label: none  uuid: [0-9a-f-]{36}\n\tTotal devices 1 FS bytes used \d+\n\tdevid    1 size 1073741824 used \d+ path " + System.Text.RegularExpressions.Regex.Escape(Img) + "\n\n$", show);
        var df = Run("filesystem", "df", "-b", Img).Out.Split('\n');
        Assert.StartsWith("Data, single: total=", df[0]);
        Assert.StartsWith("Metadata, single: total=", df[1]);
        Assert.Equal($"GlobalReserve, single: total={(1023UL << 20) / 32 / 4096 * 4096}, used=0", df[2]);
        Assert.Equal("\n", Run("filesystem", "label", Img).Out);
        Assert.Equal(0, Run("filesystem", "label", Img, "archive 2026").Code);
        Assert.Equal("archive 2026\n", Run("filesystem", "label", Img).Out);
        Assert.StartsWith("Label: 'archive 2026'  uuid: ", Run("filesystem", "show", Img).Out);
        Assert.Equal(1, Run("filesystem", "label", Img, new string('x', 256)).Code);
        Assert.Equal("archive 2026\n", Run("filesystem", "label", Img).Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`filesystem du` on an image, as btrfs filesystem du prints: a file copied
    /// within the image (a reflink) shares all of its 3 MiB with the original, a snapshot of
    /// the top level shares everything, a file of 1 MiB alone is exclusive; each directory
    /// counts what its files share once. The figures are the sizes copied in.</summary>
    [Fact]
    public void DuShowsWhatReflinksAndSnapshotsShare()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "256M").Code);
        var three = Path.Combine(_dir, "three.bin");
        var one = Path.Combine(_dir, "one.bin");
        var data = new byte[3 << 20];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(three, data);
        File.WriteAllBytes(one, data.AsSpan(0, 1 << 20).ToArray());
        Assert.Equal(0, Run("mkdir", Img, "/d").Code);
        Assert.Equal(0, Run("cp", Img, three, ":/d/a").Code);
        Assert.Equal(0, Run("cp", Img, ":/d/a", ":/d/b").Code);
        Assert.Equal(0, Run("cp", Img, one, ":/solo").Code);
        var du = Run("filesystem", "du", "--raw", Img);
        Assert.True(du.Code == 0, du.Err);
        Assert.Equal(string.Join("\n",
            "     Total   Exclusive  Set shared  Filename",
            "   3145728           0           -  /d/a",
            "   3145728           0           -  /d/b",
            "   6291456           0     3145728  /d",
            "   1048576     1048576           -  /solo",
            "   7340032     1048576     3145728  /",
            ""), du.Out);
        Assert.Equal(0, Run("subvolume", "snapshot", Img, "/", "/snap").Code);
        du = Run("filesystem", "du", "-s", "--raw", Img, "/solo", "/snap");
        Assert.Equal(string.Join("\n",
            "     Total   Exclusive  Set shared  Filename",
            "   1048576           0     1048576  /solo",
            "   7340032           0     4194304  /snap",
            ""), du.Out);
        var missing = Run("filesystem", "du", Img, "/nothere");
        Assert.Equal(1, missing.Code);
        Assert.Contains("/nothere: no such file or directory", missing.Err);
    }

    [Fact]
    public void MakeCopyListReadCheckRoundTrip()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--label", "cli").Code);
        var src = Path.Combine(_dir, "src");
        Directory.CreateDirectory(Path.Combine(src, "sub"));
        File.WriteAllText(Path.Combine(src, "a.txt"), "hello");
        var big = new byte[3_000_000];
        new Random(1).NextBytes(big);
        File.WriteAllBytes(Path.Combine(src, "sub", "big.bin"), big);
        Assert.Equal(0, Run("cp", "-r", Img, src, ":/").Code);
        var ls = Run("ls", Img, "/src");
        Assert.Equal(0, ls.Code);
        Assert.Equal(["a.txt", "sub"], ls.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var json = JsonDocument.Parse(Run("ls", Img, "/src/sub", "--format", "json").Out);
        Assert.Equal(3_000_000, json.RootElement[0].GetProperty("size").GetInt64());
        var outDir = Path.Combine(_dir, "out");
        Assert.Equal(0, Run("cp", "-r", Img, ":/src", outDir).Code);
        Assert.Equal(big, File.ReadAllBytes(Path.Combine(outDir, "sub", "big.bin")));
        Assert.Equal("hello", File.ReadAllText(Path.Combine(outDir, "a.txt")));
        var fsck = Run("fsck", Img);
        Assert.True(fsck.Code == 0, fsck.Out + fsck.Err);
        Assert.Contains("no errors found", fsck.Out);
        Assert.Equal(0, Run("mkdir", "-p", Img, "/x/y/z").Code);
        foreach (var root in (string[])["/", "/x/..", "//."])          // rm -r of the root is refused (it emptied the image, then failed)
        {
            var refused = Run("rm", "-r", Img, root);
            Assert.Equal(1, refused.Code);
            Assert.Contains("dangerous to operate recursively", refused.Err);
        }
        Assert.Equal(["src", "x"], Run("ls", Img, "/").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(1, Run("rm", Img, "/x").Code);
        Assert.Equal(0, Run("rm", "-r", Img, "/x").Code);
        Assert.Equal(1, Run("cat", Img, "/x/y").Code);
        var sup = JsonDocument.Parse(Run("inspect", "super", Img, "--format", "json").Out);
        Assert.Equal("cli", sup.RootElement.GetProperty("label").GetString());
        Assert.Equal(0, Run("inspect", "tree", Img, "--tree", "extent").Code);
        Assert.Equal(0, Run("inspect", "inode", Img, "/src/sub/big.bin").Code);
        Assert.Equal(0, Run("inspect", "space", Img, "--format", "json").Code);
        Assert.Equal(0, Run("rm", "-r", "--no-preserve-root", Img, "/").Code); // empties the image, keeps its root
        Assert.Equal("", Run("ls", Img, "/").Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>
    /// `mkfs --preallocate` has the host give the image all its blocks, so no write into it can
    /// later fail for the host's room: on a 48 MiB host (tmpfs) a 100 MiB image is refused with
    /// ENOSPC and the host's free space said, and no file is left; a 32 MiB one has every block;
    /// growing it keeps it whole, and a grow the host cannot hold is refused with the image as
    /// it was. (A sparse image is what mkfs makes otherwise.)
    /// </summary>
    [Fact]
    public void MkfsPreallocateGivesTheImageItsHostSpace()
    {
        using var tmpfs = new Reservoir.Tests.Mounted.TmpfsHost(_dir);
        string host = tmpfs.Dir, img = Path.Combine(host, "p.img");
        var refused = Run("mkfs", img, "--size", "100M", "--preallocate");
        Assert.Equal(1, refused.Code);
        Assert.Matches(@"has no room for all its 100MiB \(4\d(\.\d+)?MiB free\) \(ENOSPC", refused.Err);
        Assert.False(File.Exists(img));
        Assert.Equal(0, Run("mkfs", img, "--size", "32M", "--preallocate", "-q").Code);
        Assert.Equal(0UL, Reservoir.Device.HostSpace.Of(img)!.Value.MayGrowBy);
        Assert.Equal(0, Run("filesystem", "resize", "+8M", img).Code);
        Assert.Equal((40UL << 20, 0UL), Reservoir.Device.HostSpace.Of(img) is { } h ? (h.ImageBytes, h.MayGrowBy) : default);
        var tooBig = Run("filesystem", "resize", "+20M", img);
        Assert.Equal(1, tooBig.Code);
        Assert.Contains("no room to allocate the new part", tooBig.Err);
        Assert.Equal(40L << 20, new FileInfo(img).Length);
        Assert.Equal(0, Run("fsck", img).Code);
        // Without --preallocate the image is sparse: it may grow by nearly all of it.
        Assert.Equal(0, Run("mkfs", Path.Combine(host, "s.img"), "--size", "64M", "-q").Code);
        Assert.True(Reservoir.Device.HostSpace.Of(Path.Combine(host, "s.img"))!.Value.MayGrowBy > 60UL << 20);
    }

    [Fact]
    public void BadInputGivesMessagesAndExitCodes()
    {
        var r = Run("fsck", Path.Combine(_dir, "missing.img"));
        Assert.Equal(8, r.Code);
        Assert.Contains("does not exist", r.Err);
        File.WriteAllBytes(Img, new byte[1 << 20]);
        r = Run("fsck", Img);
        Assert.Equal(8, r.Code);
        Assert.Contains("not a valid Reservoir filesystem", r.Err);
        r = Run("ls", Img);
        Assert.Equal(1, r.Code);
        Assert.Equal(16, Run("fsck").Code);
        Assert.Equal(16, Run("fsck", "-n", "-y", Img).Code);
        Assert.Equal(2, Run("mkfs").Code);
        r = Run("mkfs", Path.Combine(_dir, "new.img"));
        Assert.Equal(1, r.Code);
        Assert.Contains("--size", r.Err);
        Assert.Equal(1, Run("mkfs", Path.Combine(_dir, "new.img"), "--size", "lots").Code);
        Assert.Equal(1, Run("mkfs", Path.Combine(_dir, "new.img"), "--size", "64M", "--nodesize", "3000").Code);
        Assert.Equal(0, Run("mkfs", Img, "--size", "32M", "-q").Code);
        r = Run("mkfs", Img, "--size", "32M");
        Assert.Equal(1, r.Code);
        Assert.Contains("--force", r.Err);
        Assert.Equal(0, Run("mkfs", Img, "--size", "32M", "-f", "-q").Code);
        Assert.Equal(1, Run("ls", Img, "--format", "yaml").Code);
        Assert.Equal(1, Run("cp", Img, "a", "b").Code);
        // A mount point that is a file is said to be one (it was "does not exist").
        Assert.Equal((1, $"reservoir mount: mount point '{Img}' is not a directory\n"), Run("mount", Img, Img) is var m ? (m.Code, m.Err) : default);
    }

    [Fact]
    public void FsckRepairsCountersAndReportsExitCodeOne()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "32M", "-q").Code);
        Assert.Equal(0, Run("mkdir", Img, "/d").Code);
        // Damage a counter the way a buggy writer would: the root directory's link count.
        using (var dev = Reservoir.Device.FileBlockDevice.Open(Img))
        using (var fs = Reservoir.Engine.Filesystem.Mount(dev, new() { CommitIntervalMs = 0 }))
        {
            var root = fs.Top;
            root.Acquire(256, out var inode);
            using (var h = fs.Fs.Start(1))
            using (root.Tree.Lock.Write())
            {
                inode.Item.Nlink = 7;
                Reservoir.Engine.Inodes.DirItems.PutInode(h, root.Tree, 256, inode.Item);
            }
            root.Release(inode);
        }
        var r = Run("fsck", Img);
        Assert.Equal(4, r.Code);
        Assert.Contains("link count 7", r.Out);
        r = Run("fsck", "-y", Img);
        Assert.Equal(1, r.Code);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>
    /// cp keeps what cp(1) keeps: without -p a copy takes the source's permission bits less
    /// the umask, in, out and within the image (copies were 0644 whatever the source: an
    /// executable lost its bit and a 0600 file became readable by all); with -a the whole mode,
    /// the owner, the times to the nanosecond, user attributes and POSIX ACLs, in and out.
    /// </summary>
    [Fact]
    public void CopyKeepsModesAndWithArchiveOwnersTimesAndAttributes()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var src = Path.Combine(_dir, "keep");
        Directory.CreateDirectory(Path.Combine(src, "sub"));
        string run = Path.Combine(src, "run.sh"), priv = Path.Combine(src, "sub", "priv");
        File.WriteAllText(run, "#!/bin/sh\n");
        File.WriteAllText(priv, "secret");
        var sh = Reservoir.Tests.Mounted.MountedImage.Sh(
            $"chmod 4755 {run} && chmod 600 {priv} && chmod 700 {src}/sub && chown 1000:1001 {priv} && touch -d '2001-02-03 04:05:06.123456789 UTC' {run} && " +
            $"setfacl -m u:1000:r {run} && python3 -c \"import os; os.setxattr('{run}', 'user.tag', b'hello')\"", "/");
        Assert.True(sh.Code == 0, sh.Out);
        uint umask = HostFiles.Umask();
        Assert.Equal(0, Run("cp", "-r", Img, src, ":/plain").Code);
        Assert.Equal(0, Run("cp", "-a", Img, src, ":/arch").Code);
        using (var fs = FileCommands.Open(Img, write: false))
        {
            Assert.Equal(0x1EDu & ~umask, fs.GetInfo("/plain/run.sh").Attr.Mode & 0xFFF);   // 4755: no set-user-ID without -p
            Assert.Equal(0x180u, fs.GetInfo("/plain/sub/priv").Attr.Mode & 0xFFF);         // 0600 stays private
            Assert.Equal(0x1C0u, fs.GetInfo("/plain/sub").Attr.Mode & 0xFFF);
            var r = fs.GetInfo("/arch/run.sh").Attr;
            Assert.Equal(0x9EDu, r.Mode & 0xFFF);                                           // 4755, set-user-ID kept
            Assert.Equal(new Reservoir.Format.Timespec(981173106, 123456789), r.Mtime);
            var p = fs.GetInfo("/arch/sub/priv").Attr;
            Assert.Equal((1000u, 1001u), (p.Uid, p.Gid));
            Assert.Equal(Errno.OK, fs.Posix.GetXattr("/arch/run.sh", "user.tag", out var tag));
            Assert.Equal("hello"u8.ToArray(), tag);
            Assert.Equal(Errno.OK, fs.Posix.GetXattr("/arch/run.sh", "system.posix_acl_access", out var acl));
            Assert.Equal(Reservoir.Common.Errno.OK, Reservoir.Engine.Inodes.PosixAcl.TryParse(acl, out var parsed));
            Assert.Contains(parsed!.Entries.ToArray(), e => e.Tag == Reservoir.Engine.Inodes.PosixAcl.User && e.Id == 1000 && e.Perm == 4);
        }
        string back = Path.Combine(_dir, "back");
        Assert.Equal(0, Run("cp", "-a", Img, ":/arch", back).Code);
        var st = HostFiles.Lstat(Path.Combine(back, "run.sh"));
        Assert.Equal(0x9EDu, st.Mode & 0xFFF);
        Assert.Equal(new Reservoir.Format.Timespec(981173106, 123456789), st.Mtime);
        Assert.Equal((1000u, 1001u), (HostFiles.Lstat(Path.Combine(back, "sub", "priv")).Uid, HostFiles.Lstat(Path.Combine(back, "sub", "priv")).Gid));
        var facl = Reservoir.Tests.Mounted.MountedImage.Sh($"getfacl -cpn {Path.Combine(back, "run.sh")} && python3 -c \"import os; print(os.getxattr('{Path.Combine(back, "run.sh")}', 'user.tag'))\"", "/");
        Assert.Contains("user:1000:r--", facl.Out);
        Assert.Contains("b'hello'", facl.Out);
        string plainBack = Path.Combine(_dir, "plainback");
        Assert.Equal(0, Run("cp", "-r", Img, ":/arch", plainBack).Code);
        Assert.Equal(0x180u, HostFiles.Lstat(Path.Combine(plainBack, "sub", "priv")).Mode & 0xFFF);
        Assert.Equal(0x1EDu & ~umask, HostFiles.Lstat(Path.Combine(plainBack, "run.sh")).Mode & 0xFFF);
    }

    /// <summary>
    /// `cp` with both paths inside the image makes reflinks, as cp does on btrfs (through a FUSE
    /// mount `cp --reflink=always` cannot: the kernel does not pass FICLONE to a FUSE
    /// filesystem): a tree copied from one subvolume into another shares its data extents (the
    /// same disk addresses; both groups reference the 3 MiB and neither holds it alone), a
    /// `--reflink=never` copy has extents of its own, a copy into itself and a clone past a
    /// limit are refused with a message, and fsck is clean.
    /// </summary>
    [Fact]
    public void CopyWithinAnImageSharesTheDataExtents()
    {
        const long Big = (733 + 1) * 4096; // big.bin's 3,000,000 bytes in 4 KiB blocks, and a.txt's block
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("quota", "enable", Img).Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a", "/b", "/c").Code);
        var src = Path.Combine(_dir, "src");
        Directory.CreateDirectory(Path.Combine(src, "sub"));
        var big = new byte[3_000_000];
        new Random(7).NextBytes(big);
        File.WriteAllBytes(Path.Combine(src, "sub", "big.bin"), big);
        File.WriteAllText(Path.Combine(src, "a.txt"), "hello");
        File.CreateSymbolicLink(Path.Combine(src, "link"), "a.txt");
        Assert.Equal(0, Run("cp", "-r", Img, src, ":/a/").Code);

        var r = Run("cp", "-r", Img, ":/a/src", ":/b/copy");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(0, Run("cp", "-r", "--reflink=never", Img, ":/a/src", ":/b/bytes").Code);
        (long Rfer, long Excl) Group(string id)
        {
            var g = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out).RootElement
                .EnumerateArray().Single(x => x.GetProperty("qgroupid").GetString() == id);
            return (g.GetProperty("referenced").GetInt64(), g.GetProperty("exclusive").GetInt64());
        }
        Assert.Equal((Big, 0L), Group("0/256"));           // a: shared with b's copy
        Assert.Equal((2 * Big, Big), Group("0/257"));      // b: the shared one and its own bytes
        using (var fs = FileCommands.Open(Img, write: false))
        {
            ulong[] Extents(string p)
            {
                Assert.Equal(Errno.OK, fs.Engine.ExtentMap(fs.GetInfo(p).Attr.Ino, out var map));
                return map.Select(m => m.DiskBytenr).ToArray();
            }
            Assert.Equal(Extents("/a/src/sub/big.bin"), Extents("/b/copy/sub/big.bin"));
            Assert.Single(Extents("/a/src/a.txt")); // the one block counted above, shared too
            Assert.Equal(Extents("/a/src/a.txt"), Extents("/b/copy/a.txt"));
            Assert.Empty(Extents("/b/bytes/sub/big.bin").Intersect(Extents("/a/src/sub/big.bin")));
            foreach (var dir in (string[])["/b/copy", "/b/bytes"])
            {
                Assert.Equal(big, fs.ReadAllBytes(dir + "/sub/big.bin"));
                Assert.Equal("hello", fs.ReadAllText(dir + "/a.txt"));
                Assert.Equal("a.txt", fs.ReadLink(dir + "/link"));
            }
        }

        var same = Run("cp", Img, ":/a/src/sub/big.bin", ":/a/src/sub/");   // onto itself: refused, nothing emptied
        Assert.Equal(1, same.Code);
        Assert.Contains("are the same file", same.Err);
        using (var fs = FileCommands.Open(Img, write: false)) Assert.Equal(big, fs.ReadAllBytes("/a/src/sub/big.bin"));
        var into = Run("cp", "-r", Img, ":/a/src", ":/a/src/sub");
        Assert.Equal(1, into.Code);
        Assert.Contains("into itself", into.Err);
        Assert.Equal(0, Run("qgroup", "limit", "2M", Img, "/c").Code);
        var over = Run("cp", Img, ":/a/src/sub/big.bin", ":/c/big.bin");
        Assert.Equal(1, over.Code);
        Assert.Contains("disk quota exceeded", over.Err);
        Assert.Equal((0L, 0L), Group("0/258"));
        Assert.NotEqual(0, Run("cp", "--reflink=sometimes", Img, ":/a/src/a.txt", ":/c/a.txt").Code);
        var fsck = Run("fsck", Img);
        Assert.True(fsck.Code == 0, fsck.Out + fsck.Err);
    }

    /// <summary>An option a command does not have is refused, not taken for a name: `subvolume
    /// create IMG /a --format json`, before create took --format, made subvolumes called
    /// "--format" and "json" (the parser binds what it does not know to the list of paths). After "--" such a name is a name;
    /// values of options and sizes beginning with "-" (`resize -10M`) still pass.</summary>
    [Fact]
    public void AnOptionACommandDoesNotHaveIsRefusedNotMadeAName()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var stray = Run("subvolume", "create", Img, "/a", "--commit-after", "/b"); // delete's option, not create's
        Assert.Equal((2, "reservoir: unrecognized option '--commit-after' for 'create' (a name that begins with '-' goes after '--', or as ./--commit-after)\nTry 'reservoir --help'.\n"), (stray.Code, stray.Err));
        Assert.Equal(2, Run("subvolume", "delete", Img, "-x").Code);
        Assert.Equal("", Run("subvolume", "list", Img).Out); // nothing was made
        Assert.Equal(0, Run("subvolume", "create", Img, "--", "/-odd").Code);
        Assert.Equal("ID 256 gen 2 top level 5 path -odd\n", Run("subvolume", "list", "-G", "-5", "--sort=-gen", Img).Out);
        Assert.Equal(0, Run("filesystem", "resize", "-10M", Img).Code);
    }

    /// <summary><c>stress</c> on a path that does not exist makes an image there and says so
    /// (a mistyped directory on a mount would otherwise be stressed in-process unnoticed), names
    /// its target in the report, and takes <c>--referrer-entry-after</c> for images only.</summary>
    [Fact]
    public void StressSaysWhatItRunsOn()
    {
        string img = Path.Combine(_dir, "st.img");
        var r = Run("stress", img, "-p", "2", "-n", "150", "--size", "64M", "--quota-limit", "48M", "--referrer-entry-after", "0");
        Assert.True(r.Code == 0, r.Out + r.Err);
        Assert.Contains("does not exist: making a new 64M image there and running in-process", r.Err);
        Assert.Contains($"operations in-process on the image {img} in", r.Out);
        Assert.Contains("all checks passed", r.Out);
        Assert.Equal(1, Run("stress", img, "--referrer-entry-after", "-1").Code);
        Assert.False(File.Exists(Path.Combine(_dir, "none.img")));
        Assert.Equal(1, Run("stress", Path.Combine(_dir, "none.img"), "--referrer-entry-after", "-1").Code);
        Assert.False(File.Exists(Path.Combine(_dir, "none.img")), "a refused argument made an image");
        var dir = Directory.CreateDirectory(Path.Combine(_dir, "d")).FullName;
        r = Run("stress", dir, "-p", "1", "-n", "20", "--referrer-entry-after", "0");
        Assert.Equal(1, r.Code);
        Assert.Contains("applies to images", r.Err);
    }

    /// <summary>A mount option given a value it does not take is refused before anything is
    /// mounted, and the message says what the option takes (cache=16k said only "unknown").</summary>
    [Fact]
    public void AMountOptionWithAValueItDoesNotTakeSaysWhatItTakes()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var mnt = Directory.CreateDirectory(Path.Combine(_dir, "m")).FullName;
        var r = Run("mount", Img, mnt, "-o", "cache=16k,threads=99,noatime,bogus");
        Assert.Equal(2, r.Code);
        Assert.Contains("cache=16k (cache takes a size of at least 1M, such as 64M)", r.Err);
        Assert.Contains("threads=99 (threads takes 1 to 64)", r.Err);
        Assert.Contains(", bogus", r.Err);
        Assert.DoesNotContain("noatime", r.Err);
        Assert.DoesNotContain(mnt, File.ReadAllText("/proc/mounts"));
    }

    public void Dispose() => Directory.Delete(_dir, true);
}

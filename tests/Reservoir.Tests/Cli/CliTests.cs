using System.Text.Json;
using Reservoir.Cli;
using Reservoir.Cli.Commands;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Cli;

/// <summary>The `reservoir` command line, run in-process on real image files.</summary>
public sealed class CliTests : IDisposable
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

    /// <summary>`send` and `receive` on unmounted images: a writable subvolume is refused (and
    /// no stream file left); a read-only snapshot's stream makes the same files in another
    /// image, read-only, and `--dump` lists its commands; an incremental stream (`send -p`)
    /// carries only the change and applies to the received parent, and the received
    /// subvolume shows the sent one's uuid as its Received UUID.</summary>
    [Fact]
    public void SendAndReceiveBetweenImages()
    {
        string other = Path.Combine(_dir, "other.img"), full = Path.Combine(_dir, "full.stream"), inc = Path.Combine(_dir, "inc.stream");
        Assert.Equal(0, Run("mkfs", Img, "--size", "128M").Code);
        Assert.Equal(0, Run("mkfs", other, "--size", "128M").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/sv").Code);
        var big = new byte[3_000_000];
        new Random(8).NextBytes(big);
        File.WriteAllBytes(Path.Combine(_dir, "big.bin"), big);
        File.WriteAllText(Path.Combine(_dir, "note.txt"), "first");
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "big.bin"), ":/sv/").Code);
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "note.txt"), ":/sv/").Code);
        var refused = Run("send", "-f", full, Img, "/sv");
        Assert.Equal(1, refused.Code);
        Assert.Contains("not read-only", refused.Err);
        Assert.False(File.Exists(full));
        File.WriteAllText(full, "not a stream"); // a file of the user's: a refused send leaves it alone
        Assert.Equal(1, Run("send", "-f", full, Img, "/sv").Code);
        Assert.Equal("not a stream", File.ReadAllText(full));

        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/sv", "/snap1").Code);
        var sent = Run("send", "-f", full, Img, "/snap1");
        Assert.True(sent.Code == 0, sent.Err);
        Assert.Matches(@"At subvol /snap1: 3 inodes, 3000005 bytes of data", sent.Err); // the root and two files: 3,000,000 + "first"
        Assert.Equal(0, Run("receive", "-f", full, other, "/").Code);
        Assert.Equal(big, Reservoir.ReservoirFileSystem.Open(other) is var o1 ? Using(o1, f => f.ReadAllBytes("/snap1/big.bin")) : null);
        Assert.Equal("ro=true\n", Run("property", "get", other, "/snap1", "ro").Out);
        var dump = Run("receive", "--dump", "-f", full).Out.Split('\n');
        Assert.StartsWith("subvol          ./snap1", dump[0]);
        Assert.Contains(dump, l => l.StartsWith("mkfile          ./snap1/note.txt", StringComparison.Ordinal));
        Assert.Equal("end", dump.Last(l => l.Length > 0));

        File.WriteAllText(Path.Combine(_dir, "note.txt"), "second, longer");
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "note.txt"), ":/sv/note.txt").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/sv", "/snap2").Code);
        Assert.Equal(0, Run("send", "-q", "-p", "/snap1", "-f", inc, Img, "/snap2").Code);
        Assert.InRange(new FileInfo(inc).Length, 1, 4096); // the note, not the 3 MB file
        Assert.Equal(0, Run("receive", "-f", inc, other, "/").Code);
        Assert.Equal("second, longer", Run("cat", other, "/snap2/note.txt").Out);
        Assert.Equal("first", Run("cat", other, "/snap1/note.txt").Out);
        string Field(string show, string name) => System.Text.RegularExpressions.Regex.Match(show, $@"\t{name}: \t+(\S+)").Groups[1].Value;
        Assert.Equal(Field(Run("subvolume", "show", Img, "/snap2").Out, "UUID"), Field(Run("subvolume", "show", other, "/snap2").Out, "Received UUID"));
        Assert.Contains(Field(Run("subvolume", "show", Img, "/snap1").Out, "UUID"), Run("subvolume", "list", "-R", other).Out);
        // The ROOT_ITEM fields (SPEC §4.1) as the tree dump shows them.
        Assert.Matches($@"received_uuid {Field(Run("subvolume", "show", Img, "/snap2").Out, "UUID")} stransid \d+ rtransid \d+", Run("inspect", "tree", "-t", "root", other).Out);
        var again = Run("receive", "-f", inc, other, "/");
        Assert.Equal(1, again.Code);
        Assert.Contains("exists already", again.Err);
        Assert.Equal(0, Run("fsck", other).Code);
    }

    /// <summary>A receive into an image too small for the stream fails with ENOSPC, and the
    /// subvolume it was filling goes with its space before the command returns (on an image the
    /// command is the only user: the deletion once waited for some later mount).</summary>
    [Fact]
    public void AReceiveIntoAFullImageLeavesItAsItWas()
    {
        string small = Path.Combine(_dir, "small.img"), stream = Path.Combine(_dir, "big.stream");
        Assert.Equal(0, Run("mkfs", Img, "--size", "256M").Code);
        Assert.Equal(0, Run("mkfs", small, "--size", "64M").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/sv").Code);
        var big = new byte[100_000_000];
        new Random(4).NextBytes(big);
        File.WriteAllBytes(Path.Combine(_dir, "big.bin"), big);
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "big.bin"), ":/sv/").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/sv", "/snap").Code);
        Assert.Equal(0, Run("send", "-q", "-f", stream, Img, "/snap").Code);
        var got = Run("receive", "-q", "-f", stream, small, "/");
        Assert.Equal(1, got.Code);
        Assert.Contains("ENOSPC", got.Err);
        using var dev = Reservoir.Device.FileBlockDevice.Open(small, readOnly: true);
        var report = Reservoir.Engine.Check.Fsck.Run(dev, new Reservoir.Engine.Check.FsckOptions());
        Assert.True(report.Clean, string.Join("\n", report.Errors));
        Assert.DoesNotContain(report.Findings, f => f.Message.Contains("deleted"));
        using var fs = Reservoir.Engine.Filesystem.Mount(dev, new() { ReadOnly = true, CommitIntervalMs = 0 });
        TestFs.Ok(fs.ListSubvolumes(out var list));
        Assert.Empty(list);
        TestFs.Ok(fs.StatFs(out var st));
        Assert.True(st.Blocks - st.BlocksFree < 1000, $"{st.Blocks - st.BlocksFree} blocks still used");
    }

    /// <summary>Several subvolumes in one `send` (each later one a clone source of what came
    /// before: the shared 3 MB goes once), and `send -c` choosing the parent among its clone
    /// sources as btrfs does; a clone source that is not read-only is refused before any stream
    /// is written.</summary>
    [Fact]
    public void SendSeveralSubvolumesAndCloneSources()
    {
        string other = Path.Combine(_dir, "other.img"), both = Path.Combine(_dir, "both.stream"), next = Path.Combine(_dir, "next.stream");
        Assert.Equal(0, Run("mkfs", Img, "--size", "128M").Code);
        Assert.Equal(0, Run("mkfs", other, "--size", "128M").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/sv").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/w").Code);
        var big = new byte[3_000_000];
        new Random(9).NextBytes(big);
        File.WriteAllBytes(Path.Combine(_dir, "big.bin"), big);
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "big.bin"), ":/sv/").Code);
        Assert.Equal(0, Run("cp", Img, ":/sv/big.bin", ":/w/shared.bin").Code); // shares the extents (--reflink=auto)
        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/sv", "/a").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/w", "/b").Code);

        var sent = Run("send", "-f", both, Img, "/a", "/b");
        Assert.True(sent.Code == 0, sent.Err);
        Assert.Matches(@"At subvol /a: 2 inodes, 3000000 bytes of data, a stream", sent.Err);
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(sent.Err, @"At subvol /b: 2 inodes, 1728 bytes of data, 2998272 bytes cloned"), sent.Err); // whole blocks; the last partial one written
        Assert.InRange(new FileInfo(both).Length, 3_000_000, 3_100_000);
        var got = Run("receive", "-f", both, other, "/");
        Assert.True(got.Code == 0, got.Err);
        Assert.Equal(big, Using(Reservoir.ReservoirFileSystem.Open(other), f => f.ReadAllBytes("/b/shared.bin")));

        // A later snapshot of sv, sent with -c: its parent is /a (its sibling), an increment.
        File.WriteAllText(Path.Combine(_dir, "note.txt"), "new");
        Assert.Equal(0, Run("cp", Img, Path.Combine(_dir, "note.txt"), ":/sv/").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", "-r", Img, "/sv", "/a2").Code);
        var refused = Run("send", "-c", "/sv", "-f", next, Img, "/a2");
        Assert.Equal(1, refused.Code);
        Assert.Contains("not read-only", refused.Err);
        Assert.False(File.Exists(next));
        var inc = Run("send", "-c", "/a", "-c", "/b", "-f", next, Img, "/a2");
        Assert.True(inc.Code == 0, inc.Err);
        Assert.Contains("(parent /a)", inc.Err);
        Assert.InRange(new FileInfo(next).Length, 1, 4096);
        Assert.Equal(0, Run("receive", "-f", next, other, "/").Code);
        Assert.Equal("new", Run("cat", other, "/a2/note.txt").Out);
        Assert.Equal(0, Run("fsck", other).Code);
    }

    private static T Using<T>(Reservoir.ReservoirFileSystem fs, Func<Reservoir.ReservoirFileSystem, T> f)
    {
        using (fs) return f(fs);
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

    [Fact]
    public void QuotaCommandsEnableLimitShowAndEnforce()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("qgroup", "limit", "2M", Img).Code);
        var src = Path.Combine(_dir, "big");
        File.WriteAllBytes(src, new byte[3 << 20]);
        var r = Run("cp", Img, src, ":/big");
        Assert.Equal(1, r.Code);
        Assert.Contains("disk quota exceeded", r.Err);
        Assert.Contains("/big", r.Err);
        var show = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        var g = show.RootElement[0];
        Assert.Equal("0/5", g.GetProperty("qgroupid").GetString());
        Assert.Equal(2L << 20, g.GetProperty("max_referenced").GetInt64());
        Assert.True(g.GetProperty("referenced").GetInt64() <= 2L << 20);
        Assert.Equal(0, Run("fsck", Img).Code);
        var status = Run("quota", "status", Img).Out;
        Assert.StartsWith($"Quotas on {Img}:\n  Enabled:                 yes\n", status);
        Assert.Contains("  Total count:             1\n  Level 0:                 1\n", status); // the top level's group
        var json = JsonDocument.Parse(Run("quota", "status", Img, "--format", "json").Out).RootElement;
        Assert.Equal((true, 1, 1), (json.GetProperty("enabled").GetBoolean(), json.GetProperty("total_count").GetInt32(), json.GetProperty("level0").GetInt32()));
        Assert.Contains("every qgroup equals the recount", Run("quota", "rescan", Img).Out);
        Assert.Equal("no rescan operation in progress\n", Run("quota", "rescan", "-s", Img).Out);
        Assert.Equal(1, Run("qgroup", "limit", "lots", Img).Code);
    }

    [Fact]
    public void SubvolumeCommandsCreateListShowLimitDeleteAndSync()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("quota", "enable", Img).Code);
        var c = Run("subvolume", "create", Img, "/home", "/srv");
        Assert.Equal((0, "Create subvolume '/home'\nCreate subvolume '/srv'\n"), (c.Code, c.Out));
        var dup = Run("subvolume", "create", Img, "/home");
        Assert.Equal(1, dup.Code);
        Assert.Contains("EEXIST", dup.Err);
        var list = Run("subvolume", "list", Img);
        Assert.Equal("ID 256 gen", list.Out[..10]);
        Assert.Contains("top level 5 path home\n", list.Out);
        Assert.Contains("ID 257", list.Out);
        var json = JsonDocument.Parse(Run("subvolume", "list", Img, "--format", "json").Out);
        Assert.Equal("srv", json.RootElement[1].GetProperty("path").GetString());
        var show = Run("subvolume", "show", Img, "/home");
        Assert.Contains("Subvolume ID: \t\t256", show.Out);
        Assert.Contains("Quota group:\t\t0/256", show.Out);
        Assert.Equal(0, Run("subvolume", "show", Img, "/").Code); // the top level shows too
        Assert.Equal(0, Run("qgroup", "limit", "1M", Img, "/home").Code);
        Assert.Matches(@"0/256 .* 1\.00MiB +none +home\n", Run("qgroup", "show", "-re", Img).Out);
        // As btrfs-progs: by id (-r) and uuid (-u) instead of the path, the image alone being
        // its top level, and the group's numbers in the units asked for.
        string byPath = Run("subvolume", "show", Img, "/home").Out;
        Assert.Equal(byPath, Run("subvolume", "show", Img, "-r", "256").Out);
        string uuid = System.Text.RegularExpressions.Regex.Match(show.Out, @"\tUUID: \t+([0-9a-f-]{36})\n").Groups[1].Value;
        Assert.Equal(byPath, Run("subvolume", "show", Img, "-u", uuid).Out);
        Assert.StartsWith("/\n\tName: \t\t\t<FS_TREE>\n", Run("subvolume", "show", Img).Out);
        Assert.Contains("\t  Limit referenced:\t1048576\n", Run("subvolume", "show", Img, "/home", "-b").Out);
        Assert.Contains("\t  Limit referenced:\t1.05MB\n", Run("subvolume", "show", Img, "/home", "-H").Out);
        Assert.Contains("\t  Limit referenced:\t1024.00KiB\n", Run("subvolume", "show", Img, "/home", "-k").Out);
        var noId = Run("subvolume", "show", Img, "-r", "999");
        Assert.Equal((1, "reservoir subvolume show: no subvolume has id 999\n"), (noId.Code, noId.Err));
        Assert.Equal(2, Run("subvolume", "show", Img, "-u", "not-a-uuid").Code);
        Assert.Equal(2, Run("subvolume", "show", Img, "-r", "256", "-u", uuid).Code);
        // A snapshot into an existing directory lands inside it under the source's name, as
        // btrfs-progs puts it (and prints it: "snaps//home").
        Run("mkdir", Img, "/snaps");
        var into = Run("subvolume", "snapshot", Img, "/home", "/snaps/");
        Assert.Equal((0, "Create a snapshot of '/home' in '/snaps//home'\n"), (into.Code, into.Out));
        Assert.Contains("path snaps/home\n", Run("subvolume", "list", Img).Out);
        Assert.Equal(0, Run("subvolume", "delete", Img, "/snaps/home").Code);
        // set-default by path, offline (IMAGE PATH), and not by a path that is no subvolume.
        Assert.Equal(0, Run("subvolume", "set-default", Img, "/srv").Code);
        Assert.StartsWith("ID 257", Run("subvolume", "get-default", Img).Out);
        Run("mkdir", Img, "/plain");
        var plain = Run("subvolume", "set-default", Img, "/plain");
        Assert.Equal((1, "reservoir subvolume set-default: /plain: not a subvolume\n"), (plain.Code, plain.Err));
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        Assert.Equal(0, Run("property", "set", Img, "/srv", "ro", "true").Code);
        Assert.Equal("ro=true\n", Run("property", "get", Img, "/srv").Out);
        // "/" is the filesystem as well (btrfs's get on a mount's root): ro and label.
        Assert.Equal(0, Run("property", "set", Img, "/", "label", "tag").Code);
        Assert.Equal("ro=false\nlabel=tag\n", Run("property", "get", Img, "/").Out);
        var noLabel = Run("property", "get", Img, "/srv", "label");
        Assert.Equal((1, "reservoir property get: object is not compatible with property: label\n"), (noLabel.Code, noLabel.Err));
        Assert.Equal("ro                  read-only status of a subvolume\n", Run("property", "list", Img, "/srv").Out);
        Assert.Equal(1, Run("property", "get", Img, "/nothere").Code);
        Assert.Equal(0, Run("subvolume", "set-default", "256", Img).Code);
        Assert.StartsWith("ID 256", Run("subvolume", "get-default", Img).Out);
        Assert.Equal(1, Run("subvolume", "delete", Img, "/home").Code); // the default
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        Assert.Equal(0, Run("subvolume", "delete", Img, "/home").Code);
        Assert.Equal(0, Run("subvolume", "sync", Img).Code);
        Assert.DoesNotContain("path home", Run("subvolume", "list", Img).Out);
        Assert.DoesNotContain("0/256", Run("qgroup", "show", Img).Out);
        // btrfs scripts' clear-stale after a deletion: the group went with its subvolume, so
        // nothing is stale (silent success, as btrfs-progs with nothing to clear).
        Assert.Equal((0, "", ""), Run("qgroup", "clear-stale", Img));
        Assert.Contains("Device size:", Run("filesystem", "usage", Img).Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`qgroup show` reads as btrfs-progs' does: limits only with -r/-e (bundled as
    /// -re), the Path column, two decimals in each unit system, --raw, a fixed unit, --sort,
    /// and contradicting unit options refused. The expected sizes are worked out from the 3 MiB
    /// written (3,145,728 bytes: 3.00MiB, 3.15MB, 3072.00KiB).</summary>
    [Fact]
    public void QgroupShowPrintsLikeBtrfsProgs()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/home", "/srv").Code);
        var src = Path.Combine(_dir, "three");
        File.WriteAllBytes(src, new byte[3 << 20]);
        Assert.Equal(0, Run("cp", Img, src, ":/home/f").Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "/home").Code);
        var plain = Run("qgroup", "show", Img).Out.Split('\n');
        Assert.Matches(@"^Qgroupid +Referenced +Exclusive +Path$", plain[0]);
        Assert.Matches(@"^-------- +---------- +--------- +----$", plain[1]);
        Assert.Matches(@"^0/5 +0\.00B +0\.00B +<toplevel>$", plain[2]);
        Assert.Matches(@"^0/256 +3\.00MiB +3\.00MiB +home$", plain[3]);
        Assert.Matches(@"^0/257 +0\.00B +0\.00B +srv$", plain[4]);
        Assert.DoesNotContain("10.00MiB", string.Join('\n', plain)); // limits only with -r
        var re = Run("qgroup", "show", "-re", Img).Out;
        Assert.Matches(@"Qgroupid +Referenced +Exclusive +Max referenced +Max exclusive +Path\n", re);
        Assert.Matches(@"0/256 +3\.00MiB +3\.00MiB +10\.00MiB +none +home\n", re);
        Assert.Matches(@"0/256 +3\.15MB +3\.15MB +home\n", Run("qgroup", "show", "--si", Img).Out);
        Assert.Equal(string.Join('\n', plain), Run("qgroup", "show", "-h", Img).Out); // human-readable, not help (--help is)
        Assert.Contains("Usage:", Run("qgroup", "show", "--help").Out);
        Assert.Matches(@"0/256 +3145728 +3145728 +home\n", Run("qgroup", "show", "--raw", Img).Out);
        Assert.Matches(@"0/256 +3072\.00KiB +3072\.00KiB +home\n", Run("qgroup", "show", "--kbytes", Img).Out);
        var sorted = Run("qgroup", "show", "--sort=-rfer,path", Img).Out.Split('\n');
        Assert.StartsWith("0/256", sorted[2]);
        Assert.StartsWith("0/257", sorted[4]); // 0 bytes like 0/5, and "srv" sorts after "<toplevel>"
        var json = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        Assert.Equal("<toplevel>", json.RootElement[0].GetProperty("path").GetString());
        // -f: the group of the subvolume holding the path; -F: and the groups above it.
        Assert.Equal(0, Run("qgroup", "create", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "0/256", "1/100", Img).Code);
        string Ids(params string[] args) => string.Join(" ", Run(["qgroup", "show", .. args]).Out.Split('\n').Skip(2).Where(l => l.Length > 0).Select(l => l.Split(' ')[0]));
        Assert.Equal("0/256", Ids("-f", Img, "/home/f"));
        Assert.Equal("0/256 1/100", Ids("-F", Img, "/home"));
        Assert.Equal("0/5", Ids("-F", Img));
        var bad = Run("qgroup", "show", "--raw", "--si", Img);
        Assert.Equal(1, bad.Code);
        Assert.Contains("--raw", bad.Err);
        Assert.Equal(1, Run("qgroup", "show", "--sort=size", Img).Code);
    }

    /// <summary>`subvolume create|snapshot -i QGROUPID` (btrfs-progs'): the new subvolume's group
    /// joins each group given, with its numbers (a snapshot of a member already is one); a
    /// missing group, a level-0 id or quotas off are refused before anything is made.</summary>
    [Fact]
    public void SubvolumeCreateAndSnapshotJoinGroupsWithDashI()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "-q").Code);
        var off = Run("subvolume", "create", Img, "/a", "-i", "1/1");
        Assert.Equal(1, off.Code);
        Assert.Contains("quotas are off", off.Err);
        Assert.Equal(0, Run("quota", "enable", Img).Code);
        var missing = Run("subvolume", "create", Img, "/a", "-i", "1/1");
        Assert.Equal(1, missing.Code);
        Assert.Contains("-i 1/1: no such qgroup", missing.Err);
        Assert.Equal(1, Run("subvolume", "create", Img, "/a", "-i", "0/5").Code);
        Assert.Equal(1, Run("subvolume", "create", Img, "/a", "-i", "one").Code);
        Assert.DoesNotContain(" a\n", Run("subvolume", "list", Img).Out); // nothing was made
        Assert.Equal(0, Run("qgroup", "create", "1/1", Img).Code);
        Assert.Equal(0, Run("qgroup", "create", "1/2", Img).Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a", "-i", "1/1").Code);
        var src = Path.Combine(_dir, "one");
        File.WriteAllBytes(src, new byte[1 << 20]);
        Assert.Equal(0, Run("cp", Img, src, ":/a/f").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", Img, "/a", "/b", "-i", "1/1", "-i", "1/2").Code);
        var groups = JsonDocument.Parse(Run("qgroup", "show", "-pc", Img, "--format", "json").Out).RootElement.EnumerateArray()
            .ToDictionary(g => g.GetProperty("qgroupid").GetString()!, g => g);
        string Parents(string id) => string.Join(",", groups[id].GetProperty("parents").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal("1/1", Parents("0/256"));
        Assert.Equal("1/1,1/2", Parents("0/257"));
        // 1/1 holds a and b, which share the file: referenced and exclusive 1 MiB; 1/2 holds b
        // alone, which shares it with a outside: referenced 1 MiB, exclusive 0.
        Assert.Equal((1L << 20, 1L << 20), (groups["1/1"].GetProperty("referenced").GetInt64(), groups["1/1"].GetProperty("exclusive").GetInt64()));
        Assert.Equal((1L << 20, 0L), (groups["1/2"].GetProperty("referenced").GetInt64(), groups["1/2"].GetProperty("exclusive").GetInt64()));
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`qgroup limit` as btrfs-progs takes it (`[-e] SIZE [QGROUPID] PATH`) as well as
    /// image first: each limit set keeps the other, and an exclusive limit refuses a write.</summary>
    [Fact]
    public void QgroupLimitTakesBtrfsProgsOrderAndExclusiveLimits()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a").Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "/a").Code);        // image first
        Assert.Equal(0, Run("qgroup", "limit", "-e", "2M", "0/256", Img).Code); // btrfs-progs' order
        (long? Rfer, long? Excl) Limits()
        {
            var g = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out).RootElement
                .EnumerateArray().Single(x => x.GetProperty("qgroupid").GetString() == "0/256");
            long? L(string name) => g.GetProperty(name).ValueKind == JsonValueKind.Null ? null : g.GetProperty(name).GetInt64();
            return (L("max_referenced"), L("max_exclusive"));
        }
        Assert.Equal((10L << 20, 2L << 20), Limits());
        var src = Path.Combine(_dir, "three");
        File.WriteAllBytes(src, new byte[3 << 20]);
        var r = Run("cp", Img, src, ":/a/f");                                  // 3 MiB, all its own
        Assert.Equal(1, r.Code);
        Assert.Contains("disk quota exceeded", r.Err);
        Assert.Equal(0, Run("qgroup", "limit", "none", "0/256", Img).Code);    // referenced only
        Assert.Equal(((long?)null, 2L << 20), Limits());
        Assert.Equal(0, Run("qgroup", "limit", "-e", "none", Img, "0/256").Code);
        Assert.Equal(((long?)null, (long?)null), Limits());
        Assert.Equal(0, Run("cp", Img, src, ":/a/g").Code);
        var bad = Run("qgroup", "limit", "1M", "x/9", Img);
        Assert.Equal(1, bad.Code);
        Assert.Contains("not a qgroup id", bad.Err);
        var none = Run("qgroup", "limit", "1M", "9/9", Img);
        Assert.Equal(1, none.Code);
        Assert.Contains("9/9: no such qgroup", none.Err);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>
    /// `cp` with both paths inside the image makes reflinks, as cp does on btrfs (through a FUSE
    /// mount `cp --reflink=always` cannot: the kernel does not pass FICLONE to a FUSE
    /// filesystem): a tree copied from one subvolume into another shares its data extents (the
    /// same disk addresses; both groups reference the 3 MiB and neither holds it alone), a
    /// `--reflink=never` copy has extents of its own, a copy into itself and a clone past a
    /// limit are refused with a message, and fsck is clean.
    /// </summary>
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

    /// <summary>`subvolume create|snapshot|delete --format json` say what they did as JSON: the
    /// paths with the ids of the subvolumes made (what a script wants next), the snapshot's
    /// source and read-only flag, each deletion and its commit; the ids are those `subvolume
    /// list` gives.</summary>
    [Fact]
    public void SubvolumeCreateSnapshotAndDeleteSayWhatTheyDidInJson()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var made = JsonDocument.Parse(Run("subvolume", "create", Img, "/a", "/b", "--format", "json").Out).RootElement;
        Assert.Equal(2, made.GetArrayLength());
        Assert.Equal(("/a", 256UL), (made[0].GetProperty("path").GetString(), made[0].GetProperty("id").GetUInt64()));
        Assert.Equal(("/b", 257UL), (made[1].GetProperty("path").GetString(), made[1].GetProperty("id").GetUInt64()));
        var snap = JsonDocument.Parse(Run("subvolume", "snapshot", "-r", Img, "/a", "/s", "--format", "json").Out).RootElement;
        Assert.Equal(("/a", "/s", true), (snap.GetProperty("source").GetString(), snap.GetProperty("path").GetString(), snap.GetProperty("read_only").GetBoolean()));
        Assert.Contains($"ID {snap.GetProperty("id").GetUInt64()} gen", Run("subvolume", "list", Img).Out.Split('\n').Single(l => l.EndsWith(" path s", StringComparison.Ordinal)));
        var gone = JsonDocument.Parse(Run("subvolume", "delete", Img, "/b", "--format", "json").Out).RootElement;
        Assert.Equal(("/b", true), (gone[0].GetProperty("path").GetString(), gone[0].GetProperty("commit").GetBoolean()));
        var byId = JsonDocument.Parse(Run("subvolume", "delete", "-i", "256", Img, "--format", "json").Out).RootElement;
        Assert.Equal(256UL, byId[0].GetProperty("subvolid").GetUInt64());
        Assert.Single(Run("subvolume", "list", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // the snapshot
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

    /// <summary>`subvolume delete` says why it refuses, in btrfs-progs' words, where the errno
    /// alone puzzled ("invalid argument" for a plain directory), and deletes nothing.</summary>
    [Fact]
    public void SubvolumeDeleteSaysWhyItRefuses()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("mkdir", Img, "/plain").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/s", "/s/inner").Code);
        var plain = Run("subvolume", "delete", Img, "/plain");
        Assert.Equal(1, plain.Code);
        Assert.Contains("/plain: not a subvolume", plain.Err);
        var nested = Run("subvolume", "delete", Img, "/s");
        Assert.Equal(1, nested.Code);
        Assert.Contains("it holds subvolumes: delete those first", nested.Err);
        Assert.Equal(0, Run("subvolume", "set-default", "257", Img).Code);
        var dflt = Run("subvolume", "delete", Img, "/s/inner");
        Assert.Equal(1, dflt.Code);
        Assert.Contains("the default subvolume", dflt.Err);
        Assert.Equal(["plain", "s"], Run("ls", Img, "/").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        // By id (-i), as btrfs-progs: the same refusals, then the nested one wherever it is.
        var top = Run("subvolume", "delete", "-i", "5", Img);
        Assert.Equal(1, top.Code);
        Assert.Contains("the top-level subvolume (5) cannot be deleted", top.Err);
        Assert.Contains("no subvolume has that id", Run("subvolume", "delete", "-i", "999", Img).Err);
        Assert.Contains("it holds subvolumes", Run("subvolume", "delete", "--subvolid", "256", Img).Err);
        Assert.Equal(2, Run("subvolume", "delete", "-i", "257", Img, "/s").Code); // one target with -i
        Assert.Equal(2, Run("subvolume", "delete", "-c", "-C", Img, "/s").Code);
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        var byId = Run("subvolume", "delete", "-i", "257", Img);
        Assert.True(byId.Code == 0, byId.Err);
        Assert.Equal("Delete subvolume (commit): subvolid=257\n", byId.Out);
        var byPath = Run("subvolume", "delete", "-c", Img, "/s");
        Assert.Equal("Delete subvolume (commit): '/s'\n", byPath.Out);
        Assert.Equal("", Run("subvolume", "list", Img).Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    [Fact]
    public void QgroupHierarchyCommands()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        // btrfs-progs' scripts' options: simple quotas (-s) get full accounting, said so; a
        // relation change's --rescan / --no-rescan (none is ever needed) are taken.
        var simple = Run("quota", "enable", "-s", Img);
        Assert.Equal((0, "reservoir quota enable: note: -s: full accounting enabled (its commit costs what simple quotas' would; exclusive numbers are kept)\n"), (simple.Code, simple.Err));
        Assert.Contains("Mode:                    qgroup (full accounting)", Run("quota", "status", Img).Out);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a", "/b").Code);
        Assert.Equal(0, Run("qgroup", "create", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "--no-rescan", "0/256", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "--rescan", "0/257", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "1/100").Code);
        var wrong = Run("qgroup", "assign", "1/100", "0/256", Img);
        Assert.Equal(1, wrong.Code);
        Assert.Contains("higher level", wrong.Err);
        Assert.Contains("members", Run("qgroup", "destroy", "1/100", Img).Err);
        Assert.Equal(1, Run("qgroup", "create", "x", Img).Code);
        var show = Run("qgroup", "show", "-p", "-c", "-r", Img).Out;
        Assert.Contains("0/256", show);
        Assert.Matches(@"1/100 .*10\.00MiB .* 0/256,0/257 +<2 member qgroups>", show);
        var json = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        Assert.Contains(json.RootElement.EnumerateArray(), g => g.GetProperty("qgroupid").GetString() == "1/100" && g.GetProperty("children").GetArrayLength() == 2);
        Assert.Equal(0, Run("qgroup", "remove", "0/256", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "remove", "0/257", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "destroy", "1/100", Img).Code);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    [Fact]
    public void SubvolumeSnapshotOnAnImage()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/sv").Code);
        var s = Run("subvolume", "snapshot", Img, "/sv", "/snap");
        Assert.Equal((0, "Create a snapshot of '/sv' in '/snap'\n"), (s.Code, s.Out));
        var r = Run("subvolume", "snapshot", "-r", Img, "/", "/top-ro");
        Assert.Equal((0, "Create a readonly snapshot of '/' in '/top-ro'\n"), (r.Code, r.Out));
        var show = Run("subvolume", "show", Img, "/top-ro");
        Assert.Contains("Flags: \t\t\treadonly", show.Out);
        Assert.DoesNotContain("Parent UUID: \t\t-", show.Out); // a snapshot names its source
        Assert.Contains("\tSnapshot(s):\n\t\t\t\tsnap\n", Run("subvolume", "show", Img, "/sv").Out); // its snapshots, by parent uuid
        Assert.Contains("\tSnapshot(s):\n\t\t\t\ttop-ro\n", Run("subvolume", "show", Img, "/").Out);
        var notSv = Run("subvolume", "snapshot", Img, "/sv/missing", "/x");
        Assert.Equal(1, notSv.Code);
        Assert.Contains("/x", notSv.Err);
        // A directory as DEST takes the snapshot inside under the source's name, as btrfs-progs
        // does: refused where that name is taken.
        Assert.Equal(0, Run("mkdir", Img, "/d").Code);
        Assert.Equal(0, Run("mkdir", Img, "/d/sv").Code);
        var taken = Run("subvolume", "snapshot", Img, "/sv", "/d");
        Assert.Equal(1, taken.Code);
        Assert.Contains("/d/sv", taken.Err);
        Assert.Equal(3, Run("subvolume", "list", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        // list's btrfs-progs options: snapshots only (with cgen and otime), read-only only,
        // uuids (a snapshot's parent_uuid is its source's uuid), a table, a sort.
        var snaps = Run("subvolume", "list", "-s", Img).Out;
        Assert.Matches(@"^ID 257 gen \d+ cgen \d+ top level 5 otime \d{4}-\d\d-\d\d \d\d:\d\d:\d\d path snap\nID 258 .* path top-ro\n$", snaps);
        Assert.Matches(@"^ID 258 gen \d+ top level 5 path top-ro\n$", Run("subvolume", "list", "-r", Img).Out);
        var uuids = Run("subvolume", "list", "-uq", Img).Out.Split('\n');
        var svUuid = System.Text.RegularExpressions.Regex.Match(uuids[0], @"parent_uuid - +uuid ([0-9a-f-]{36}) path sv$").Groups[1].Value;
        Assert.NotEmpty(svUuid);
        Assert.Matches($@"^ID 257 .* parent_uuid {svUuid} uuid [0-9a-f-]{{36}} path snap$", uuids[1]);
        Assert.StartsWith("ID\tgen\ttop level\tpath\t\n--\t---\t---------\t----\t\n256\t", Run("subvolume", "list", "-t", Img).Out);
        Assert.Equal(["258", "257", "256"], Run("subvolume", "list", "--sort=-rootid", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[1]));
        Assert.Equal(0, Run("fsck", Img).Code);
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

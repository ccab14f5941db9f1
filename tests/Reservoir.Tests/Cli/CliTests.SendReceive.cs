using System.Text.Json;
using Reservoir.Cli;
using Reservoir.Cli.Commands;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Cli;

/// <summary>`send` and `receive` between unmounted images.</summary>
public sealed partial class CliTests
{
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
}

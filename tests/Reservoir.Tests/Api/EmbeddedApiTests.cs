using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Xunit;

namespace Reservoir.Tests.Api;

/// <summary>The embedded .NET API over a real image file.</summary>
public sealed class EmbeddedApiTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("reservoir-api-").FullName;
    private string Img => Path.Combine(_dir, "api.img");

    /// <summary>Each subvolume numbers its own inodes and has a device number of its own, as
    /// stat shows them on btrfs: two subvolumes' roots are both inode 256 on different
    /// devices; a snapshot's file has its source's inode number on another device; the top
    /// level is subvolume 5; the filesystem-wide numbers stay unique.</summary>
    [Fact]
    public void EachSubvolumeHasItsOwnInodeNumbersAndDevice()
    {
        using var fs = ReservoirFileSystem.Create(Img, 64 << 20);
        fs.CreateSubvolume("/a");
        fs.CreateSubvolume("/b");
        fs.WriteAllText("/a/f", "x");
        fs.CreateSnapshot("/a", "/a-snap");
        fs.CreateDirectory("/plain");
        ReservoirEntry a = fs.GetInfo("/a"), b = fs.GetInfo("/b"), top = fs.GetInfo("/plain");
        ReservoirEntry f = fs.GetInfo("/a/f"), g = fs.GetInfo("/a-snap/f");
        Assert.Equal((256UL, 256UL), (a.InodeNumber, b.InodeNumber));
        Assert.Equal((256UL, 257UL, 5UL), (a.SubvolumeId, b.SubvolumeId, top.SubvolumeId));
        // dev_t 0:256, 0:257, 0:258 and 0:5 in Linux's encoding (what Python's os.makedev(0, n) gives).
        Assert.Equal([1048576UL, 1048577UL, 1048578UL, 5UL], new[] { a.Device, b.Device, g.Device, top.Device });
        Assert.Equal(f.InodeNumber, g.InodeNumber);
        Assert.NotEqual(f.Device, g.Device);
        Assert.NotEqual(f.Attr.Ino, g.Attr.Ino);
        Assert.Equal(f.Device, a.Device);
    }

    /// <summary>An embedding program bounds the filesystem's memory with the page cache budget
    /// (DataOptions, as the mount's cache=): writing 32 MiB in one call and reading it back leave
    /// at most about the budget cached, where the default budget keeps it all (fails if Create
    /// or Open drop the option, or if a large write balances its pages only at its end).</summary>
    [Fact]
    public void ThePageCacheBudgetGivenToOpenBoundsWhatStaysCached()
    {
        var data = new byte[32 << 20];
        new Random(3).NextBytes(data);
        // One write of 32 MiB balances its dirty pages between its 1 MiB chunks: 5,888 pages
        // stayed cached after it before that (the balancing ran only at the end of the call).
        using (var fs = ReservoirFileSystem.Create(Img, 128 << 20, data: new DataOptions { PageCacheBytes = 4 << 20 }))
        {
            fs.WriteAllBytes("/big", data);
            Assert.True(Cached(fs) <= (4 << 20) / 4096 + 64, $"{Cached(fs)} pages cached after one 32 MiB write with a 4 MiB budget");
        }
        long CachedAfterRead(DataOptions? d)
        {
            using var fs = ReservoirFileSystem.Open(Img, data: d);
            Assert.Equal(data, fs.ReadAllBytes("/big"));
            return Cached(fs);
        }
        long bounded = CachedAfterRead(new DataOptions { PageCacheBytes = 4 << 20 });
        Assert.True(bounded <= (4 << 20) / 4096 + 512, $"{bounded} pages cached after reading with a 4 MiB budget");
        Assert.Equal((32 << 20) / 4096, CachedAfterRead(null)); // the default budget, 256 MiB, keeps it all
        static long Cached(ReservoirFileSystem fs) => fs.Engine.Data.AllMappings().Sum(m => (long)m.CachedPages);
    }

    [Fact]
    public void SystemIoShapedUsageWorksAndPersists()
    {
        using (var fs = ReservoirFileSystem.Create(Img, 64 << 20))
        {
            fs.CreateDirectory("/docs/2026");
            fs.WriteAllText("/docs/2026/note.txt", "first");
            using (var s = fs.OpenFile("/docs/2026/note.txt", FileMode.Append, FileAccess.Write)) s.Write(" second"u8);
            using (var s = fs.OpenFile("/docs/data.bin", FileMode.Create))
            {
                s.Write(new byte[10_000]);
                s.Seek(5000, SeekOrigin.Begin);
                s.Write("X"u8);
                s.SetLength(6000);
                Assert.Equal(6000, s.Length);
            }
            fs.CreateSymbolicLink("/docs/latest", "2026/note.txt");
            fs.CreateHardLink("/docs/hard.txt", "/docs/2026/note.txt");
            Assert.Equal("first second", fs.ReadAllText("/docs/latest"));
            Assert.Equal(["2026", "data.bin", "hard.txt", "latest"], fs.EnumerateEntries("/docs").Select(e => e.Name).OrderBy(x => x, StringComparer.Ordinal));
            Assert.Throws<FileNotFoundException>(() => fs.ReadAllBytes("/nope"));
            Assert.Throws<FsException>(() => fs.OpenFile("/docs/data.bin", FileMode.CreateNew));
            Assert.Throws<FsException>(() => fs.Delete("/docs"));
            fs.Move("/docs/data.bin", "/docs/2026/data.bin");
            Assert.Throws<FsException>(() => fs.Move("/docs/hard.txt", "/docs/2026/data.bin"));
        }
        using (var fs = ReservoirFileSystem.Open(Img))
        {
            Assert.Equal("first second", fs.ReadAllText("/docs/hard.txt"));
            var data = fs.ReadAllBytes("/docs/2026/data.bin");
            Assert.Equal(6000, data.Length);
            Assert.Equal((byte)'X', data[5000]);
            Assert.Equal("2026/note.txt", fs.ReadLink("/docs/latest"));
            Assert.Equal(2u, fs.GetInfo("/docs/hard.txt").Attr.Nlink);
            fs.Delete("/docs", recursive: true);
            Assert.False(fs.Exists("/docs"));
        }
        Assert.True(Reservoir.Engine.Check.Fsck.Run(Reservoir.Device.FileBlockDevice.Open(Img, readOnly: true)).Clean);
    }

    /// <summary>Send and Receive in the embedded API: a snapshot sent whole into another image,
    /// then the changes since it (Send with a parent), give the later snapshot there, read-only;
    /// a writable subvolume is refused.</summary>
    [Fact]
    public void SendAndReceiveThroughTheApi()
    {
        string other = Path.Combine(_dir, "other.img");
        var full = new MemoryStream();
        var inc = new MemoryStream();
        using (var fs = ReservoirFileSystem.Create(Img, 64 << 20))
        {
            fs.CreateSubvolume("/photos");
            fs.WriteAllBytes("/photos/a.jpg", Enumerable.Range(0, 100_000).Select(i => (byte)i).ToArray());
            fs.WriteAllText("/photos/list.txt", "a");
            Assert.Equal(Errno.EINVAL, Assert.Throws<FsException>(() => fs.Send("/photos", full)).Errno);
            fs.CreateSnapshot("/photos", "/monday", readOnly: true);
            var sum = fs.Send("/monday", full);
            Assert.Equal(100_001, sum.DataBytes);
            fs.WriteAllText("/photos/list.txt", "a b");
            fs.Move("/photos/a.jpg", "/photos/b.jpg");
            fs.CloneFile("/photos/b.jpg", "/photos/copy.jpg");
            fs.CreateSnapshot("/photos", "/tuesday", readOnly: true);
            // "a b"; the rename moves no data; the reflink is a CLONE of monday's a.jpg (24 whole
            // blocks) and its last 1,696 bytes.
            var incSum = fs.Send("/tuesday", inc, parent: "/monday");
            Assert.Equal((3 + 1696, 98_304), (incSum.DataBytes, incSum.CloneBytes));
        }
        using (var fs = ReservoirFileSystem.Create(other, 64 << 20))
        {
            full.Position = inc.Position = 0;
            Assert.Equal("monday", Assert.Single(fs.Receive(full, "/")).Name);
            Assert.Equal("tuesday", Assert.Single(fs.Receive(inc, "/")).Name);
            Assert.Equal(["b.jpg", "copy.jpg", "list.txt"], fs.EnumerateEntries("/tuesday").Select(e => e.Name).Order(StringComparer.Ordinal));
            Assert.Equal("a b", fs.ReadAllText("/tuesday/list.txt"));
            Assert.Equal(fs.ReadAllBytes("/monday/a.jpg"), fs.ReadAllBytes("/tuesday/b.jpg"));
            Assert.Equal(fs.ReadAllBytes("/monday/a.jpg"), fs.ReadAllBytes("/tuesday/copy.jpg"));
            Assert.Equal(4096UL, fs.DiskUsage("/tuesday/copy.jpg").Exclusive); // the rest shared with monday's a.jpg, as at the source
            Assert.All(fs.ListSubvolumes(), s => Assert.True(s.ReadOnly));
        }
        Assert.True(Reservoir.Engine.Check.Fsck.Run(Reservoir.Device.FileBlockDevice.Open(other, readOnly: true)).Clean);
    }

    /// <summary>
    /// CloneFile (cp --reflink=always) onto the source itself, by its own path or another link
    /// to it, answers EINVAL and leaves the file whole (it opened dest with O_TRUNC first and
    /// emptied it: found through `reservoir cp IMAGE :/f :/f`); onto a longer file it replaces
    /// that file's contents and size.
    /// </summary>
    /// <summary>The space tools of the embedded API: a clone shares its file's bytes
    /// (DiskUsage), the label persists, the image grows with Resize and shrinks back, and Trim
    /// gives a deleted file's space back.</summary>
    [Fact]
    public void LabelDiskUsageResizeAndTrimThroughTheApi()
    {
        var data = new byte[2 << 20];
        new Random(11).NextBytes(data);
        using (var fs = ReservoirFileSystem.Create(Img, 64 << 20))
        {
            fs.WriteAllBytes("/a", data);
            fs.CloneFile("/a", "/b");
            fs.Sync();
            var a = fs.DiskUsage("/a");
            Assert.Equal((2UL << 20, 0UL, 2UL << 20), (a.Total, a.Exclusive, Filesystem.UnionBytes(a.Shared)));
            Assert.Throws<FsException>(() => fs.DiskUsage("/"));
            fs.Label = "tenant-7";
            Assert.Equal(128UL << 20, fs.Resize(128UL << 20));
            Assert.Equal(128L << 20, new FileInfo(Img).Length);
            fs.Delete("/b");
            Assert.True(fs.Trim() > 0);
            Assert.Equal(48UL << 20, fs.Resize(48UL << 20));
            Assert.Equal(48UL << 20, fs.Size);
        }
        using (var fs = ReservoirFileSystem.Open(Img))
        {
            Assert.Equal("tenant-7", fs.Label);
            Assert.Equal(48UL << 20, fs.Size);
            Assert.Equal(data, fs.ReadAllBytes("/a"));
            Assert.Equal((2UL << 20, 2UL << 20), (fs.DiskUsage("/a").Total, fs.DiskUsage("/a").Exclusive));
        }
    }

    [Fact]
    public void CloneFileOntoItselfLosesNothing()
    {
        using var fs = ReservoirFileSystem.Create(Img, 32 << 20);
        var data = new byte[100_000];
        new Random(5).NextBytes(data);
        fs.WriteAllBytes("/f", data);
        Assert.Equal(Errno.OK, fs.Posix.Link("/f", "/g"));
        Assert.Equal(Errno.EINVAL, fs.Posix.CloneFile("/f", "/f"));
        Assert.Equal(Errno.EINVAL, fs.Posix.CloneFile("/f", "/g"));
        Assert.Equal(data, fs.ReadAllBytes("/f"));
        fs.WriteAllBytes("/long", new byte[300_000]);
        fs.CloneFile("/f", "/long");
        Assert.Equal(data, fs.ReadAllBytes("/long"));
    }

    [Fact]
    public void PosixLayerGivesExactErrnos()
    {
        using var fs = ReservoirFileSystem.Create(Img, 32 << 20);
        var p = fs.Posix;
        Assert.Equal(Errno.OK, p.Mkdir("/a"));
        Assert.Equal(Errno.EEXIST, p.Mkdir("/a"));
        Assert.Equal(Errno.ENOENT, p.Mkdir("/missing/b"));
        Assert.Equal(Errno.OK, p.Open("/a/f", OpenFlags.Create | OpenFlags.WriteOnly, 0x1A4, out var a));
        p.Close(a.Ino);
        Assert.Equal(Errno.ENOTDIR, p.Mkdir("/a/f/x"));
        Assert.Equal(Errno.EEXIST, p.Open("/a/f", OpenFlags.Create | OpenFlags.Exclusive | OpenFlags.WriteOnly, 0x1A4, out _));
        Assert.Equal(Errno.OK, p.Symlink("/a/loop2", "/a/loop1"));
        Assert.Equal(Errno.OK, p.Symlink("/a/loop1", "/a/loop2"));
        Assert.Equal(Errno.ELOOP, p.Stat("/a/loop1", out _));
        Assert.Equal(Errno.ENOTEMPTY, p.Rmdir("/a"));
        Assert.Equal(Errno.EINVAL, p.Rename("/a", "/a/sub"));
        Assert.Equal(Errno.OK, p.Mkdir("/b"));
        Assert.Equal(Errno.EEXIST, p.Rename("/a", "/b", RenameFlags.NoReplace));
        Assert.Equal(Errno.OK, p.Rename("/a", "/b", RenameFlags.Exchange));
        Assert.Equal(Errno.OK, p.Stat("/b/f", out _));
        Assert.Equal(Errno.OK, p.SetXattr("/b/f", "user.k", "v"u8, XattrSetFlags.Create));
        Assert.Equal(Errno.EEXIST, p.SetXattr("/b/f", "user.k", "w"u8, XattrSetFlags.Create));
        Assert.Equal(Errno.ENODATA, p.GetXattr("/b/f", "user.none", out _));
        Assert.Equal(Errno.ENAMETOOLONG, p.Mkdir("/" + new string('n', 256)));
        Assert.Equal(Errno.OK, p.Mknod("/fifo", 0x1000 | 0x1A4));
        Assert.Equal(Errno.OK, p.Lstat("/fifo", out var fifo));
        Assert.Equal(0x1000u, fifo.Mode & 0xF000);
    }

    [Fact]
    public void MappedRegionsWriteThroughThePageFaultPath()
    {
        using var fs = ReservoirFileSystem.Create(Img, 32 << 20);
        fs.WriteAllBytes("/m", new byte[20_000]);
        using (var region = fs.MapWritable("/m", 4096, 8192))
        {
            region.Write(10, "mapped"u8);
            Assert.Throws<ArgumentOutOfRangeException>(() => region.Write(8190, "xyz"u8));
            var back = new byte[6];
            region.Read(10, back);
            Assert.Equal("mapped"u8.ToArray(), back);
            region.Flush();
        }
        Assert.Equal("mapped"u8.ToArray(), fs.ReadAllBytes("/m").AsSpan(4106, 6).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => fs.MapWritable("/m", 0, 30_000));
        Assert.Empty(fs.Engine.VerifyReservations());
    }

    [Fact]
    public void OpeningAnImageTwiceFailsCleanly()
    {
        using var fs = ReservoirFileSystem.Create(Img, 32 << 20);
        var ex = Assert.ThrowsAny<IOException>(() => ReservoirFileSystem.Open(Img));
        Assert.Contains("api.img", ex.Message);
    }

    public void Dispose() => Directory.Delete(_dir, true);
}

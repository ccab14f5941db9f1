using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Xunit;
using Xunit.Abstractions;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Data;

/// <summary>
/// Every data operation (buffered and direct writes and reads, page-fault stores, fallocate,
/// punch, zero range, truncate, writeback, page reclaim, sync, remount) in random order against
/// a byte-array model; at every sync the reservation ledger is verified, at every unmount the
/// leak checks must be zero, and fsck must be clean.
/// </summary>
public class DataModelTests(ITestOutputHelper log)
{
    public static IEnumerable<object[]> Seeds() => Enumerable.Range(1, 40).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Seeds))]
    public void DataOperationsMatchModel(int seed)
    {
        var rng = new Random(seed);
        var dev = NewDevice(96UL << 20, seed % 2 == 0 ? 16384 : 4096);
        var dopt = new DataOptions { WritebackIntervalMs = 0, PageCacheBytes = 2 << 20 };
        var files = new List<byte[]>();
        var inos = new List<ulong>();
        var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }, dopt);
        if (seed % 3 == 0) { Ok(fs.EnableQuota()); Ok(fs.SetQuotaLimit(48UL << 20)); }
        int ops = 0;
        try
        {
            for (int i = 0; i < 3; i++)
            {
                Ok(fs.Create(Filesystem.RootIno, "f" + i, 0x1A4, 0, 0, out var a));
                inos.Add(a.Ino);
                files.Add([]);
            }
            for (int step = 0; step < 400; step++, ops++)
            {
                int fi = rng.Next(files.Count);
                ulong ino = inos[fi];
                var model = files[fi];
                int op = rng.Next(100);
                string what = $"seed {seed} step {step} op {op} file {fi}";
                ulong off = (ulong)(rng.Next(3) == 0 ? rng.Next(0, 600_000) : rng.Next(0, model.Length + 1));
                int len = rng.Next(4) == 0 ? rng.Next(1, 300_000) : rng.Next(1, 20_000);
                if (op < 30)
                {
                    // A quarter of the writes are whole blocks, as most programs' are: files
                    // then end on a block boundary, where a punch past the end has no tail edge.
                    if (rng.Next(4) == 0) { off = off / 4096 * 4096; len = Math.Max(4096, len / 4096 * 4096); }
                    var d = Rand(rng, len);
                    Ok(fs.Write(ino, off, d, out int n), what + " write");
                    Assert.Equal(len, n);
                    files[fi] = Apply(model, off, d);
                }
                else if (op < 40)
                {
                    // Direct IO, aligned or not.
                    bool aligned = rng.Next(2) == 0;
                    if (aligned) { off = off / 4096 * 4096; len = Math.Max(4096, len / 4096 * 4096); }
                    var d = Rand(rng, len);
                    Ok(fs.WriteDirect(ino, off, d, out int n), what + " dwrite");
                    Assert.Equal(len, n);
                    files[fi] = Apply(model, off, d);
                }
                else if (op < 48)
                {
                    if (model.Length == 0) continue;
                    ulong mo = (ulong)rng.Next(0, model.Length);
                    int ml = Math.Min(rng.Next(1, 10_000), model.Length - (int)mo);
                    var d = Rand(rng, ml);
                    Ok(fs.MappedWrite(ino, mo, d), what + " mwrite");
                    files[fi] = Apply(model, mo, d);
                }
                else if (op < 55)
                {
                    var mode = rng.Next(3) switch { 0 => FallocateMode.Allocate, 1 => FallocateMode.KeepSize, _ => FallocateMode.ZeroRange };
                    Ok(fs.Fallocate(ino, mode, off, (ulong)len), what + $" fallocate {mode}");
                    if (mode == FallocateMode.ZeroRange) files[fi] = Zero(files[fi], off, (ulong)len, keep: false);
                    else if (mode == FallocateMode.Allocate && off + (ulong)len > (ulong)model.Length) files[fi] = Resize(model, (int)(off + (ulong)len));
                }
                else if (op < 62)
                {
                    // A third of the punches run from inside the file past its end: with the end
                    // still in dirty pages, that leaves one dirty edge page below a hole, the case
                    // where the size on disk once stopped at the edge page.
                    if (rng.Next(3) == 0 && (ulong)model.Length > off) len = model.Length - (int)off + rng.Next(0, 10_000);
                    Ok(fs.Fallocate(ino, FallocateMode.PunchHole | FallocateMode.KeepSize, off, (ulong)len), what + " punch");
                    files[fi] = Zero(model, off, (ulong)len, keep: true);
                }
                else if (op < 68)
                {
                    int size = rng.Next(3) == 0 ? rng.Next(0, 5000) : rng.Next(0, model.Length + 100_000);
                    Ok(fs.Truncate(ino, (ulong)size), what + " truncate");
                    files[fi] = Resize(model, size);
                }
                else if (op < 80)
                {
                    var buf = new byte[len];
                    bool direct = rng.Next(3) == 0;
                    Ok(direct ? fs.ReadDirect(ino, off, buf, out int n) : fs.Read(ino, off, buf, out n), what + " read");
                    int want = (int)Math.Max(0, Math.Min(len, model.Length - (long)off));
                    Assert.Equal(want, n);
                    Assert.True(buf.AsSpan(0, n).SequenceEqual(model.AsSpan((int)Math.Min(off, (ulong)model.Length), want)), what + " read content");
                }
                else if (op < 84) Ok(fs.StartWriteback(ino));
                else if (op < 88) fs.ReleaseCleanPages();
                else if (op < 92)
                {
                    var e = fs.Seek(ino, off, data: true, out ulong r);
                    if ((long)off >= model.Length) Assert.Equal(Errno.ENXIO, e);
                    else if (e == Errno.OK) Assert.True(r >= off && r < (ulong)model.Length);
                    else Assert.True(model.AsSpan((int)off).IndexOfAnyExcept((byte)0) < 0, what + " SEEK_DATA said no data but there are non-zero bytes");
                }
                else if (op < 97)
                {
                    Ok(fs.Sync(), what + " sync");
                    var v = fs.VerifyReservations();
                    Assert.True(v.Count == 0, what + ": " + string.Join("; ", v));
                }
                else
                {
                    fs.Dispose();
                    Assert.True(fs.LeakedBytes == 0, what + ": " + string.Join("; ", fs.LeakReports));
                    FsckAssert.Clean(dev);
                    fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }, dopt);
                }
                if (rng.Next(10) == 0)
                    for (int k = 0; k < files.Count; k++) Assert.True(ReadAll(fs, inos[k]).AsSpan().SequenceEqual(files[k]), $"{what}: file {k} differs");
            }
            for (int k = 0; k < files.Count; k++) Assert.True(ReadAll(fs, inos[k]).AsSpan().SequenceEqual(files[k]), $"seed {seed}: file {k} differs at the end");
            Ok(fs.Sync());
            Assert.Empty(fs.VerifyReservations());
        }
        finally { fs.Dispose(); }
        Assert.True(fs.LeakedBytes == 0, string.Join("; ", fs.LeakReports));
        Assert.Equal(0, fs.Stats.ReservationOverruns);
        FsckAssert.Clean(dev);
        log.WriteLine($"seed {seed}: {ops} operations, {fs.Stats.Commits} commits, {fs.Stats.DataBytesWritten} data bytes written");
    }

    private static byte[] Rand(Random r, int n) { var d = new byte[n]; r.NextBytes(d); return d; }

    private static byte[] Apply(byte[] model, ulong off, byte[] d)
    {
        var m = model;
        if (off + (ulong)d.Length > (ulong)m.Length) m = Resize(m, (int)(off + (ulong)d.Length));
        d.CopyTo(m, (int)off);
        return m;
    }

    private static byte[] Resize(byte[] m, int size)
    {
        var n = new byte[size];
        Array.Copy(m, n, Math.Min(size, m.Length));
        return n;
    }

    private static byte[] Zero(byte[] m, ulong off, ulong len, bool keep)
    {
        ulong end = off + len;
        if (!keep && end > (ulong)m.Length) m = Resize(m, (int)end);
        for (ulong i = off; i < Math.Min(end, (ulong)m.Length); i++) m[i] = 0;
        return m;
    }
}

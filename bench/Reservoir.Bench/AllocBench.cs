using System.Buffers.Binary;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Fuse.Session;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;
using static Reservoir.Bench.BenchFs;

namespace Reservoir.Bench;

/// <summary>
/// Managed bytes allocated per operation on the hot paths: in the engine (buffered 4 KiB
/// writes and reads, 1 MiB writes with their writeback and commit, cold reads, creates,
/// lookups, stats, unlinks) and as FUSE requests through the bridge (what the daemon's request
/// threads run for each message), with quotas off and on inside a snapshotted subvolume (the
/// accounting's path). The brief's rule is no allocation per block on a hot path; this table
/// is how we see whether it holds. Rows that grow a cache allocate by design (a new page, a new
/// inode, a new extent status entry: memory the cache keeps, not garbage). Counted with
/// GC.GetTotalAllocatedBytes(precise), so background threads' allocations in the window count
/// too (the flusher and committer are idle here: intervals 0, thresholds out of reach).
/// Usage: dotnet run -c Release --project bench/Reservoir.Bench -- --alloc [--quick]
/// [--alloc-types: and what each row allocates, by type, from the runtime's samples]
/// </summary>
internal static class AllocBench
{
    private const int Block = 4096;

    public static void Run(bool quick)
    {
        int n = quick ? 20_000 : 100_000;
        Console.WriteLine();
        Console.WriteLine($"## managed bytes allocated per operation ({n:N0} operations each after a warm-up of the same; per 4 KiB block for the 1 MiB rows)");
        Console.WriteLine("| operation | quotas off, top level (B/op) | quotas on, snapshotted subvolume (B/op) |");
        Console.WriteLine("|-----------|-----------------------------:|----------------------------------------:|");
        var off = Measure(n, quotas: false);
        var on = Measure(n, quotas: true);
        foreach (var (name, b) in off)
            Console.WriteLine($"| {name} | {b,28:N0} | {on.First(x => x.Name == name).Bytes,39:N0} |");
        if (Samples.Count > 0)
        {
            Console.WriteLine();
            Console.WriteLine("what the rows allocate (the runtime's allocation samples, by type, share of the sampled bytes):");
            foreach (var (row, q, types) in Samples) Console.WriteLine($"- {row} ({q}): {types}");
        }
    }

    private static List<(string Name, double Bytes)> Measure(int n, bool quotas)
    {
        var rows = new List<(string, double)>();
        var dopt = new DataOptions { PageCacheBytes = 768L << 20, DirtyPercent = 100, DirtyBackgroundPercent = 100, WritebackIntervalMs = 0 };
        var mopt = new MountOptions { CommitIntervalMs = 0, DirtyCommitBytes = 1L << 40 };
        string img = Path.Combine(Path.GetTempPath(), $"bench-alloc-{Environment.ProcessId}.img");
        const long fileBytes = 64L << 20;
        const int mibs = 64; // 64 MiB written after 64 MiB of warm-up, whatever n
        try
        {
            using (var dev = FileBlockDevice.Create(img, 2UL << 30)) Filesystem.Format(dev);
            ulong dir = Filesystem.RootIno, seqIno;
            using (var dev = FileBlockDevice.Open(img))
            using (var fs = Filesystem.Mount(dev, mopt, dopt))
            {
                if (quotas)
                {
                    Check(fs.EnableQuota());
                    Check(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
                    dir = sv.Ino;
                }
                var block = new byte[Block];
                new Random(1).NextBytes(block);
                var mib = new byte[1 << 20];
                new Random(2).NextBytes(mib);
                Check(fs.Create(dir, "rand", 0x1A4, 0, 0, out var rf));
                Check(fs.Truncate(rf.Ino, (ulong)fileBytes));
                if (quotas)
                {
                    // Every block of the file is shared with a snapshot, so the writes below
                    // unshare, as in the snapshot benchmark.
                    for (long off = 0; off < fileBytes; off += mib.Length) Check(fs.Write(rf.Ino, (ulong)off, mib, out _));
                    Check(fs.Sync());
                    Check(fs.CreateSnapshot(dir, Filesystem.RootIno, "snap", readOnly: true, out _));
                }
                var rng = new Random(3);
                var written = new bool[fileBytes / Block];
                ulong RandomBlock() { int b = rng.Next(0, written.Length); written[b] = true; return (ulong)b * Block; }

                Row(rows, "4 KiB write, random, over a 64 MiB file", PerOp(n, () => Check(fs.Write(rf.Ino, RandomBlock(), block, out _))), quotas);
                // The first MiB's pages are cached and dirty by now: an overwrite of a dirty page.
                Row(rows, "4 KiB overwrite of a dirty cached page", PerOp(n, () => Check(fs.Write(rf.Ino, RandomBlock() % (1 << 20), block, out _))), quotas);
                var buf = new byte[Block];
                Row(rows, "4 KiB read of a cached page", PerOp(n, () => Check(fs.Read(rf.Ino, RandomBlock() % (1 << 20), buf, out _))), quotas);
                int blocks = written.Count(w => w);
                Row(rows, "writeback + commit of those (per 4 KiB block)", Once(() => Check(fs.Sync())) / blocks, quotas);

                Check(fs.Create(dir, "seq", 0x1A4, 0, 0, out var sf));
                seqIno = sf.Ino;
                long at = 0;
                Row(rows, "1 MiB write, sequential (per 4 KiB)", PerOp(mibs, () => { Check(fs.Write(sf.Ino, (ulong)at, mib, out _)); at += mib.Length; }) / 256, quotas);
                Row(rows, "writeback + commit of it (per 4 KiB)", Once(() => Check(fs.Sync())) / (at / Block), quotas);

                Check(fs.Mkdir(dir, "d", 0x1ED, 0, 0, out var d));
                int files = Math.Min(n, 10_000);
                var names = Enumerable.Range(0, 2 * files).Select(i => System.Text.Encoding.UTF8.GetBytes($"f{i}")).ToArray();
                int k = 0;
                // Warm-up and measured creates take different names (2 × files in all).
                Row(rows, "create an empty file", PerOp(files, () => Check(fs.Create(d.Ino, names[k++], 0x1A4, 0, 0, out _))), quotas);
                k = 0;
                Row(rows, "lookup (cached)", PerOp(n, () => Check(fs.Lookup(d.Ino, names[k++ % files], out _))), quotas);
                Row(rows, "getattr (cached)", PerOp(n, () => Check(fs.GetAttr(rf.Ino, out _))), quotas);
                k = 0;
                Row(rows, "unlink", PerOp(files, () => Check(fs.Unlink(d.Ino, names[k++]))), quotas);
                BridgeRows(fs, rf.Ino, dir, n, rows, quotas);
                Check(fs.Sync());
            }
            // Cold reads: a fresh mount, nothing cached.
            using (var dev = FileBlockDevice.Open(img))
            using (var fs = Filesystem.Mount(dev, mopt, dopt))
            {
                var big = new byte[1 << 20];
                long rd = 0, size = (long)mibs << 20;
                Row(rows, "1 MiB read, cold (per 4 KiB)", PerOp(mibs / 2, () => { Check(fs.Read(seqIno, (ulong)(rd % size), big, out _)); rd += big.Length; }) / 256, quotas);
            }
        }
        finally { File.Delete(img); }
        return rows;
    }

    /// <summary>
    /// The same operations as FUSE requests through the bridge (what the daemon's request
    /// threads call with each message read from /dev/fuse): the request's decoding, the engine
    /// call and the reply's encoding, with the message and reply buffers the session reuses.
    /// </summary>
    private static void BridgeRows(Filesystem fs, ulong file, ulong dir, int n, List<(string, double)> rows, bool quotas)
    {
        var bridge = new FuseBridge(fs, new FuseMountOptions(), _ => { });
        var reply = new byte[(1 << 20) + 4096];
        var msg = new byte[(1 << 20) + 4096];
        ulong unique = 0;
        int Send(Opcode op, ulong node, ReadOnlySpan<byte> body)
        {
            int len = Abi.InHeaderSize + body.Length;
            var m = msg.AsSpan(0, len);
            BinaryPrimitives.WriteUInt32LittleEndian(m, (uint)len);
            BinaryPrimitives.WriteUInt32LittleEndian(m[4..], (uint)op);
            BinaryPrimitives.WriteUInt64LittleEndian(m[8..], ++unique);
            BinaryPrimitives.WriteUInt64LittleEndian(m[16..], node);
            m.Slice(24, 16).Clear(); // uid, gid, pid: root
            body.CopyTo(m[Abi.InHeaderSize..]);
            int r = bridge.Handle(m, reply);
            int err = BinaryPrimitives.ReadInt32LittleEndian(reply.AsSpan(4));
            if (r < Abi.OutHeaderSize || err != 0) throw new IOException($"benchmark request {op} failed: {err}");
            return r;
        }
        Span<byte> init = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(init, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(init[4..], Abi.KernelMinor);
        BinaryPrimitives.WriteUInt32LittleEndian(init[8..], 128 << 10);
        Send(Opcode.Init, 0, init);
        Span<byte> open = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(open, 2); // O_RDWR
        Send(Opcode.Open, file, open);
        ulong fh = BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(Abi.OutHeaderSize));
        // fuse_read_in and fuse_write_in: fh, offset, size, flags, lock_owner, flags, padding.
        var io = new byte[40 + 4096];
        BinaryPrimitives.WriteUInt64LittleEndian(io, fh);
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(16), 4096);
        new Random(4).NextBytes(io.AsSpan(40));
        var rng = new Random(5);
        var getattr = new byte[16];
        var name = "rand\0"u8.ToArray();
        Row(rows, "FUSE WRITE 4 KiB, dirty cached page", PerOp(n, () =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(io.AsSpan(8), (ulong)rng.Next(0, 256) * 4096);
            Send(Opcode.Write, file, io);
        }), quotas);
        Row(rows, "FUSE READ 4 KiB, cached page", PerOp(n, () =>
        {
            BinaryPrimitives.WriteUInt64LittleEndian(io.AsSpan(8), (ulong)rng.Next(0, 256) * 4096);
            Send(Opcode.Read, file, io.AsSpan(0, 40));
        }), quotas);
        Row(rows, "FUSE GETATTR", PerOp(n, () => Send(Opcode.Getattr, file, getattr)), quotas);
        Row(rows, "FUSE LOOKUP (cached)", PerOp(n, () => Send(Opcode.Lookup, dir == Filesystem.RootIno ? 1 : dir, name)), quotas);
    }

    /// <summary>Bytes allocated per call of <paramref name="op"/>, after a warm-up of as many
    /// calls, up to 2,000 (the JIT's and the caches' first allocations are not the steady
    /// state).</summary>
    private static double PerOp(int n, Action op)
    {
        for (int i = 0; i < Math.Min(n, 2_000); i++) op();
        Sampler?.Start();
        long before = GC.GetTotalAllocatedBytes(true);
        for (int i = 0; i < n; i++) op();
        double perOp = (GC.GetTotalAllocatedBytes(true) - before) / (double)n;
        StopSampler();
        return perOp;
    }

    /// <summary>Bytes allocated by one call of <paramref name="op"/> (no warm-up: a commit).</summary>
    private static double Once(Action op)
    {
        Sampler?.Start();
        long before = GC.GetTotalAllocatedBytes(true);
        op();
        double bytes = GC.GetTotalAllocatedBytes(true) - before;
        StopSampler();
        return bytes;
    }

    private static void StopSampler() =>
        LastSample = Sampler == null ? null : string.Join(", ", Sampler.Stop().Select(t => $"{t.Type} {t.Share:P0}"));

    /// <summary>With --alloc-types: what each row allocates, printed under the table.</summary>
    public static AllocationSampler? Sampler;
    private static string? LastSample;
    private static readonly List<(string Row, string Quotas, string Types)> Samples = new();

    /// <summary>A row's figure, and (with --alloc-types) what its last measurement sampled.</summary>
    private static void Row(List<(string, double)> rows, string name, double bytes, bool quotas)
    {
        rows.Add((name, bytes));
        if (LastSample is { Length: > 0 } t) Samples.Add((name, quotas ? "quotas on" : "quotas off", t));
        LastSample = null;
    }
}

/// <summary>
/// The runtime's allocation samples (GCAllocationTick: one event per ~100 KB allocated, naming
/// the type of the object that crossed the mark), counted by type while enabled, so that a row
/// of the allocation table can say what it allocates. A closure shows as its display class
/// (<c>Filesystem+&lt;&gt;c__DisplayClass…</c>), a boxed struct as the struct.
/// </summary>
internal sealed class AllocationSampler : System.Diagnostics.Tracing.EventListener
{
    private readonly Dictionary<string, long> _bytes = new();
    private volatile bool _on;

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (!_on || e.EventName == null || !e.EventName.StartsWith("GCAllocationTick") || e.Payload == null) return;
        int ti = e.PayloadNames!.IndexOf("TypeName"), ai = e.PayloadNames.IndexOf("AllocationAmount64");
        if (ti < 0) return;
        string type = e.Payload[ti] as string ?? "?";
        long amount = ai >= 0 ? Convert.ToInt64(e.Payload[ai]) : 100_000;
        lock (_bytes) _bytes[type] = _bytes.GetValueOrDefault(type) + amount;
    }

    public void Start() { lock (_bytes) _bytes.Clear(); _on = true; }

    /// <summary>Stops and returns the types that took most of the sampled bytes.</summary>
    public List<(string Type, double Share)> Stop(int top = 4)
    {
        _on = false;
        lock (_bytes)
        {
            double total = Math.Max(1, _bytes.Values.Sum());
            return _bytes.OrderByDescending(kv => kv.Value).Take(top).Select(kv => (kv.Key, kv.Value / total)).ToList();
        }
    }
}

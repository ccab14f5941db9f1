using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Data;

namespace Reservoir.Stress;

public sealed class StressOptions
{
    public int Workers { get; set; } = 4;
    public int OpsPerWorker { get; set; } = 1000;
    public int Seed { get; set; } = 1;
    /// <summary>Relative frequency per operation (fsstress -f op=freq); 0 turns one off.</summary>
    public Dictionary<string, int> Frequencies { get; } = StressRunner.DefaultFrequencies();
    /// <summary>Where each operation is logged (fsstress's log format, replayable).</summary>
    public TextWriter? Log { get; set; }
    /// <summary>Runs the workers on this scheduler (the deterministic one in tests, so that a
    /// hang is reported as a deadlock with every thread's state and a failing run replays).</summary>
    public Common.Concurrency.IScheduler Scheduler { get; set; } = Common.Concurrency.RealScheduler.Instance;
    /// <summary>A soak: each worker stops at this much wall time even if it has operations
    /// left (the log records what ran, so the run still replays).</summary>
    public TimeSpan? Duration { get; set; }
    /// <summary>After every operation on a file, read the whole file back and compare it with
    /// the model (slow; pins a data mismatch to the operation that caused it instead of
    /// reporting it at the end).</summary>
    public bool CheckEach { get; set; }
}

public sealed class StressResult
{
    public long Operations;
    public TimeSpan Elapsed;
    public readonly List<string> Failures = new();
    public readonly SortedDictionary<string, long> OpCounts = new(StringComparer.Ordinal);
    /// <summary>SHA-256 over every worker's final tree (names, types, contents).</summary>
    public string StateHash = "";
    /// <summary>Files whose contents a failed mapped write left unspecified (through a FUSE
    /// mount on a full filesystem), not compared.</summary>
    public int Unverified;
    public bool Ok => Failures.Count == 0;
}

/// <summary>
/// An fsstress-style workload in-process: N workers × M operations from fsstress's vocabulary,
/// each worker in its own directory pN (as fsstress does), so that a per-worker shadow model of
/// what was written stays exact however the workers interleave. Every operation and its errno
/// is logged as `worker/number: op path [args] errno`, with the seed of any data it wrote, so a
/// log replays to the same state. At the end: each worker's tree equals its model, the
/// reservation ledger verifies, and (by the caller) no reservation leaked and fsck is clean.
/// </summary>
public static class StressRunner
{
    public static readonly string[] Ops = ["creat", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "write", "dwrite", "read", "dread", "mwrite", "fallocate", "punch", "zero", "truncate", "fsync", "fdatasync", "sync", "setattr", "setxattr", "removexattr", "getdents", "stat", "subvol_create", "subvol_delete", "subvol_rename", "subvol_exchange", "snapshot", "clonerange", "tmpfile", "whiteout", "resize", "du", "findnew"];

    public static Dictionary<string, int> DefaultFrequencies() => new()
    {
        ["creat"] = 8, ["mkdir"] = 3, ["mknod"] = 1, ["symlink"] = 2, ["link"] = 2, ["unlink"] = 5, ["rmdir"] = 2, ["rename"] = 5,
        ["write"] = 14, ["dwrite"] = 5, ["read"] = 6, ["dread"] = 3, ["mwrite"] = 4, ["fallocate"] = 3, ["punch"] = 3, ["zero"] = 2,
        ["truncate"] = 4, ["fsync"] = 2, ["fdatasync"] = 1, ["sync"] = 1, ["setattr"] = 2, ["setxattr"] = 2, ["removexattr"] = 1,
        ["getdents"] = 2, ["stat"] = 3, ["subvol_create"] = 1, ["subvol_delete"] = 1, ["subvol_rename"] = 1, ["subvol_exchange"] = 1, ["snapshot"] = 1, ["clonerange"] = 2,
        // open(O_TMPFILE), written, then named by linkat: off unless asked for (-f tmpfile=N), so
        // that every seed run before it existed still makes the same operations.
        ["tmpfile"] = 0,
        // renameat2(RENAME_WHITEOUT), overlayfs's rename: off unless asked for (-f whiteout=N).
        ["whiteout"] = 0,
        // The filesystem grown or shrunk, between 75% and 125% of its size at the start
        // (`reservoir filesystem resize`): off unless asked for (-f resize=N).
        ["resize"] = 0,
        // `filesystem du` of a file (read-only), beside the writers: off unless asked for (-f du=N).
        ["du"] = 0,
        // `subvolume find-new` of a subvolume (read-only), beside the writers: off unless asked
        // for (-f findnew=N).
        ["findnew"] = 0,
    };

    /// <summary>A worker's shadow of its directory: files (content), dirs, symlinks, fifos.</summary>
    private sealed class Model
    {
        /// <summary>Regular files by name; hard links are names of one <see cref="ModelFile"/>.</summary>
        public readonly SortedDictionary<string, ModelFile> Files = new(StringComparer.Ordinal);
        public readonly SortedSet<string> Dirs = new(StringComparer.Ordinal);
        public readonly SortedDictionary<string, string> Links = new(StringComparer.Ordinal);
        public readonly SortedSet<string> Fifos = new(StringComparer.Ordinal);
        /// <summary>Directories that are subvolumes (also in <see cref="Dirs"/>).</summary>
        public readonly SortedSet<string> Subvols = new(StringComparer.Ordinal);
        public bool Exists(string p) => Files.ContainsKey(p) || Dirs.Contains(p) || Links.ContainsKey(p) || Fifos.Contains(p);
    }

    /// <summary>
    /// A file (an inode) in the model. Hard links are names of one object; a snapshot makes a
    /// new one that shares the content until either side changes it, copy on write like the
    /// filesystem itself (copying every file at every snapshot made an hour-long soak with
    /// thousands of snapshots of snapshots grow past the machine's memory). The sharer count
    /// is not lowered when a file goes away: a later change then copies once more than needed,
    /// never less.
    /// </summary>
    private sealed class ModelFile
    {
        private sealed class Content(byte[] bytes)
        {
            public byte[] Bytes = bytes;
            public int Sharers = 1;
        }

        private Content _c;
        /// <summary>A failed mapped write left the contents unspecified: not compared any more.</summary>
        public bool Unspecified;

        public ModelFile() => _c = new Content([]);
        private ModelFile(ModelFile from)
        {
            _c = from._c;
            _c.Sharers++;
            Unspecified = from.Unspecified;
        }

        /// <summary>The contents; read only (every change goes through the methods below).</summary>
        public ReadOnlySpan<byte> Bytes => _c.Bytes;
        public int Length => _c.Bytes.Length;

        /// <summary>The snapshot's copy of this file: the same contents until one side changes.</summary>
        public ModelFile Share() => new(this);

        private byte[] Own()
        {
            if (_c.Sharers > 1)
            {
                _c.Sharers--;
                _c = new Content((byte[])_c.Bytes.Clone());
            }
            return _c.Bytes;
        }

        public void Store(ulong off, ReadOnlySpan<byte> d)
        {
            if (off + (ulong)d.Length > (ulong)Length) Resize((int)(off + (ulong)d.Length));
            d.CopyTo(Own().AsSpan((int)off));
        }

        public void Resize(int size)
        {
            var n = new byte[size];
            Array.Copy(_c.Bytes, n, Math.Min(size, Length));
            if (_c.Sharers > 1) _c.Sharers--;
            _c = new Content(n);
        }

        public void Zero(ulong off, ulong len)
        {
            if (off >= (ulong)Length) return;
            Own().AsSpan((int)off, (int)Math.Min(len, (ulong)Length - off)).Clear();
        }
    }

    /// <summary>A worker's thread is named this and its number.</summary>
    public const string WorkerThreadName = "stress-";

    public static StressResult Run(ReservoirFileSystem rfs, StressOptions o) => Run(new EngineStressTarget(rfs), o);

    public static StressResult Run(IStressTarget t, StressOptions o)
    {
        var result = new StressResult();
        var sw = Stopwatch.StartNew();
        var models = new Model[o.Workers];
        var logLock = new object();
        var threads = new List<Common.Concurrency.FsThread>();
        for (int w = 0; w < o.Workers; w++)
        {
            int wid = w;
            models[w] = new Model();
            var me = t.Mkdir($"/p{wid}");
            if (me != Errno.OK) throw new IOException($"cannot make the worker directory /p{wid} in {t.Describe}: {me} (the stress root must be empty)");
            models[w].Dirs.Add($"/p{wid}");
            threads.Add(o.Scheduler.Start(WorkerThreadName + wid.ToString(CultureInfo.InvariantCulture), () =>
            {
                var rng = new Random(o.Seed * 7919 + wid);
                var picker = BuildPicker(o.Frequencies);
                for (int i = 0; i < o.OpsPerWorker; i++)
                {
                    if (o.Duration is { } limit && (i & 63) == 0 && sw.Elapsed >= limit) break;
                    string op = picker[rng.Next(picker.Length)];
                    string line;
                    try { line = Step(t, models[wid], wid, i, op, rng, o.CheckEach); }
                    catch (CheckFailedException cf)
                    {
                        // The operation ran; only the check after it failed: its line goes to the
                        // log all the same, so the log still replays what happened.
                        lock (result.Failures) result.Failures.Add($"{wid}/{i}: {op}: {cf.Message}");
                        line = cf.Line;
                    }
                    catch (Exception ex) { lock (result.Failures) result.Failures.Add($"{wid}/{i}: {op}: {ex.Message}"); continue; }
                    lock (logLock)
                    {
                        o.Log?.WriteLine(line);
                        result.OpCounts[op] = result.OpCounts.GetValueOrDefault(op) + 1;
                        result.Operations++;
                    }
                }
            }));
        }
        threads.ForEach(th => th.Join());
        Finish(t, models, result);
        result.Elapsed = sw.Elapsed;
        return result;
    }

    /// <summary>Replays a log line by line (workers are independent, so order across workers
    /// does not matter); reports any errno that differs from the log.</summary>
    public static StressResult Replay(ReservoirFileSystem rfs, TextReader log) => Replay(new EngineStressTarget(rfs), log);

    public static StressResult Replay(IStressTarget t, TextReader log)
    {
        var result = new StressResult();
        var sw = Stopwatch.StartNew();
        var models = new Dictionary<int, Model>();
        string? line;
        while ((line = log.ReadLine()) != null)
        {
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var head = line.Split(':', 2);
            var wn = head[0].Split('/');
            int wid = int.Parse(wn[0], CultureInfo.InvariantCulture);
            if (!models.TryGetValue(wid, out var m))
            {
                models[wid] = m = new Model();
                t.Mkdir($"/p{wid}");
                m.Dirs.Add($"/p{wid}");
            }
            var parts = head[1].Trim().Split(' ');
            Apply(t, m, parts[0], parts[1..^1], out string errno);
            if (errno != parts[^1]) result.Failures.Add($"replay of '{line}' gave {errno}");
            result.OpCounts[parts[0]] = result.OpCounts.GetValueOrDefault(parts[0]) + 1;
            result.Operations++;
        }
        Finish(t, models.OrderBy(kv => kv.Key).Select(kv => kv.Value).ToArray(), result);
        result.Elapsed = sw.Elapsed;
        return result;
    }

    private static string[] BuildPicker(Dictionary<string, int> freq) =>
        freq.Where(kv => kv.Value > 0).SelectMany(kv => Enumerable.Repeat(kv.Key, kv.Value)).OrderBy(s => s, StringComparer.Ordinal).ToArray();

    /// <summary>Chooses arguments for one operation and applies it; returns the log line.</summary>
    private static string Step(IStressTarget t, Model m, int wid, int no, string op, Random rng, bool checkEach = false)
    {
        string dir = Pick(rng, m.Dirs.ToList());
        string name = dir + "/" + (op is "mkdir" ? "d" : op is "symlink" ? "l" : op is "mknod" ? "c" : op is "subvol_create" or "subvol_delete" or "snapshot" ? "s" : "f") + rng.Next(10);
        string file = m.Files.Count > 0 ? Pick(rng, m.Files.Keys.ToList()) : name;
        var args = op switch
        {
            "rmdir" => [m.Dirs.Count > 1 ? Pick(rng, m.Dirs.Where(d => d != $"/p{wid}").ToList()) : name],
            "creat" or "mkdir" or "mknod" or "unlink" or "getdents" or "stat" => [rng.Next(3) == 0 && m.Files.Count > 0 ? file : op == "getdents" ? Pick(rng, m.Dirs.ToList()) : name],
            "symlink" => new[] { name, "t" + rng.Next(100) },
            "subvol_create" => [name],
            // Block-aligned mostly (what a clone takes), sometimes not; length 0 is "to the end".
            "clonerange" => [file, Clone(rng, 0), m.Files.Count > 0 ? Pick(rng, m.Files.Keys.ToList()) : name, Clone(rng, 0), Clone(rng, 1)],
            "snapshot" => [m.Subvols.Count > 0 ? Pick(rng, m.Subvols.ToList()) : dir, name, rng.Next(3) == 0 ? "ro" : "rw"],
            "subvol_delete" => [m.Subvols.Count > 0 && rng.Next(4) != 0 ? Pick(rng, m.Subvols.ToList()) : name],
            // A subvolume moved anywhere in the worker's tree: within its parent, into another
            // subvolume, or (refused) into itself or a read-only snapshot.
            "subvol_rename" => [m.Subvols.Count > 0 ? Pick(rng, m.Subvols.ToList()) : name, Pick(rng, m.Dirs.ToList()) + "/v" + rng.Next(10)],
            // A subvolume trading places (RENAME_EXCHANGE) with any directory or subvolume of
            // the worker's: refused across subvolumes for a plain directory, and into itself.
            "subvol_exchange" => [m.Subvols.Count > 0 ? Pick(rng, m.Subvols.ToList()) : name, Pick(rng, m.Dirs.ToList())],
            "link" or "rename" or "whiteout" => [file, dir + "/f" + rng.Next(10)],
            "write" or "mwrite" => [file, rng.Next(0, 300_000).ToString(CultureInfo.InvariantCulture), rng.Next(1, 65_536).ToString(CultureInfo.InvariantCulture), rng.Next().ToString(CultureInfo.InvariantCulture)],
            "dwrite" => [file, (rng.Next(0, 64) * 4096).ToString(CultureInfo.InvariantCulture), (rng.Next(1, 16) * 4096).ToString(CultureInfo.InvariantCulture), rng.Next().ToString(CultureInfo.InvariantCulture)],
            "read" or "dread" or "fallocate" or "punch" or "zero" => [file, rng.Next(0, 300_000).ToString(CultureInfo.InvariantCulture), rng.Next(1, 100_000).ToString(CultureInfo.InvariantCulture)],
            "truncate" => [file, rng.Next(0, 400_000).ToString(CultureInfo.InvariantCulture)],
            "setattr" => [file, rng.Next(0, 512).ToString(CultureInfo.InvariantCulture)],
            "setxattr" or "removexattr" => [file, "user.s" + rng.Next(4), rng.Next().ToString(CultureInfo.InvariantCulture)],
            "resize" => [rng.Next(30, 126).ToString(CultureInfo.InvariantCulture)],
            "findnew" => [m.Subvols.Count > 0 && rng.Next(4) != 0 ? Pick(rng, m.Subvols.ToList()) : "/", rng.Next(0, 4).ToString(CultureInfo.InvariantCulture)],
            "tmpfile" => [name, rng.Next(0, 200_000).ToString(CultureInfo.InvariantCulture), rng.Next().ToString(CultureInfo.InvariantCulture)],
            _ => [file],
        };
        Apply(t, m, op, args, out string errno);
        string line = $"{wid}/{no}: {op} {string.Join(' ', args)} {errno}";
        if (checkEach)
            foreach (var path in op switch { "clonerange" => [args[0], args[2]], "link" or "rename" or "whiteout" => [args[0], args[1]], _ => new[] { args[0] } })
                CheckAfter(t, m, op, path, line);
        return line;
    }

    /// <summary>--check-each: a file an operation named (each of its files: a clone's
    /// destination too, where a wrong size was once found only by a later operation on the
    /// file) is checked by the target and read whole against the model.</summary>
    private static void CheckAfter(IStressTarget t, Model m, string op, string path, string line)
    {
        if (m.Files.ContainsKey(path) && t.CheckFile(path) is { } bad)
            throw new CheckFailedException(line, $"after '{line}': {bad}");
        if (m.Files.TryGetValue(path, out var modelled) && !modelled.Unspecified && op is not ("creat" or "mkdir" or "mknod" or "symlink"))
        {
            var got = t.ReadAll(path);
            var want = modelled.Bytes;
            if (!got.AsSpan().SequenceEqual(want))
            {
                int at = 0;
                while (at < Math.Min(got.Length, want.Length) && got[at] == want[at]) at++;
                throw new CheckFailedException(line, $"after '{line}': {path} differs from the model at byte {at} ({got.Length} bytes, model {want.Length})");
            }
        }
    }

    private static string Pick(Random rng, List<string> l) => l[rng.Next(l.Count)];

    /// <summary>An offset (kind 0) or length (1) for clonerange: 4 KiB multiples up to 256 KiB,
    /// one time in eight unaligned, a length of 0 (to the end) one time in eight.</summary>
    private static string Clone(Random rng, int kind)
    {
        int r = rng.Next(8);
        ulong v = kind == 1 && r == 0 ? 0 : r == 1 ? (ulong)rng.Next(1, 300_000) : (ulong)rng.Next(kind == 1 ? 1 : 0, 64) * 4096;
        return v.ToString(CultureInfo.InvariantCulture);
    }

    private static byte[] Data(string seed, int len)
    {
        var d = new byte[len];
        new Random(int.Parse(seed, CultureInfo.InvariantCulture)).NextBytes(d);
        return d;
    }

    /// <summary>A rename in the model. A regular file: two names of one inode, and rename does
    /// nothing (POSIX); otherwise the target name, of whatever kind, now names the moved file.
    /// Anything else moves with everything below it. (`subvol_rename` renames a file when the
    /// worker has no subvolume: moving it as a directory lost the no-op, and a later link of the
    /// name the model had dropped found the filesystem still had it: explore seed 332595.)</summary>
    private static void RenameModel(Model m, string from, string to)
    {
        if (from == to) return;
        if (!m.Files.TryGetValue(from, out var moved)) { MoveModel(m, from, to); return; }
        if (ReferenceEquals(m.Files.GetValueOrDefault(to), moved)) return;
        m.Files.Remove(from);
        m.Links.Remove(to);
        m.Fifos.Remove(to);
        m.Files[to] = moved;
    }

    /// <summary>A directory, subvolume, link or node renamed from <paramref name="from"/> to
    /// <paramref name="to"/>: it and everything below it move, and whatever the target name
    /// held goes.</summary>
    private static void MoveModel(Model m, string from, string to)
    {
        // Whatever the target name held goes (rename replaces a file, a link, a node or an
        // empty directory; another name of a file keeps the file).
        m.Dirs.Remove(to);
        m.Files.Remove(to);
        m.Links.Remove(to);
        m.Fifos.Remove(to);
        string below = from + "/";
        bool Moves(string p) => p == from || p.StartsWith(below, StringComparison.Ordinal);
        string To(string p) => to + p[from.Length..];
        foreach (var (p, f) in m.Files.Where(kv => Moves(kv.Key)).ToList()) { m.Files.Remove(p); m.Files[To(p)] = f; }
        foreach (var (p, l) in m.Links.Where(kv => Moves(kv.Key)).ToList()) { m.Links.Remove(p); m.Links[To(p)] = l; }
        foreach (var set in new[] { m.Fifos, m.Dirs, m.Subvols })
            foreach (var p in set.Where(Moves).ToList()) { set.Remove(p); set.Add(To(p)); }
    }

    /// <summary>A snapshot in the model: everything below <paramref name="src"/> appears below
    /// <paramref name="dst"/>, except subvolumes nested in it (a snapshot does not descend into
    /// them); hard links stay hard links of the snapshot's own inode (one new file per file).</summary>
    private static void SnapshotModel(Model m, string src, string dst)
    {
        string below = src + "/";
        var nested = m.Subvols.Where(s => s.StartsWith(below, StringComparison.Ordinal)).Select(s => s + "/").ToList();
        bool Copied(string p) => p.StartsWith(below, StringComparison.Ordinal) && !nested.Any(n => p == n[..^1] || p.StartsWith(n, StringComparison.Ordinal));
        string To(string p) => dst + p[src.Length..];
        var copies = new Dictionary<ModelFile, ModelFile>(ReferenceEqualityComparer.Instance);
        foreach (var (p, f) in m.Files.Where(kv => Copied(kv.Key)).ToList())
        {
            if (!copies.TryGetValue(f, out var c)) copies[f] = c = f.Share();
            m.Files[To(p)] = c;
        }
        foreach (var (p, target) in m.Links.Where(kv => Copied(kv.Key)).ToList()) m.Links[To(p)] = target;
        foreach (var p in m.Fifos.Where(Copied).ToList()) m.Fifos.Add(To(p));
        foreach (var p in m.Dirs.Where(Copied).ToList()) m.Dirs.Add(To(p));
        m.Dirs.Add(dst);
        m.Subvols.Add(dst);
    }

    /// <summary>Applies one operation to the filesystem and, when it succeeds, to the model.</summary>
    private static void Apply(IStressTarget t, Model m, string op, string[] a, out string errno)
    {
        Errno e;
        ulong U(int i) => ulong.Parse(a[i], CultureInfo.InvariantCulture);
        switch (op)
        {
            case "creat":
                e = t.Create(a[0]);
                if (e == Errno.OK) m.Files[a[0]] = new ModelFile();
                break;
            case "mkdir":
                e = t.Mkdir(a[0]);
                if (e == Errno.OK) m.Dirs.Add(a[0]);
                break;
            case "mknod":
                e = t.MkFifo(a[0]);
                if (e == Errno.OK) m.Fifos.Add(a[0]);
                break;
            case "symlink":
                e = t.Symlink(a[1], a[0]);
                if (e == Errno.OK) m.Links[a[0]] = a[1];
                break;
            case "link":
                e = t.Link(a[0], a[1]);
                if (e == Errno.OK)
                {
                    // A new name of whatever the old one holds (link(2) follows no symlink): a
                    // file (the same inode: one object), a FIFO or a whiteout left by a rename,
                    // or a symlink.
                    if (m.Files.TryGetValue(a[0], out var linked)) m.Files[a[1]] = linked;
                    else if (m.Fifos.Contains(a[0])) m.Fifos.Add(a[1]);
                    else if (m.Links.TryGetValue(a[0], out var target)) m.Links[a[1]] = target;
                }
                break;
            case "unlink":
                e = t.Unlink(a[0]);
                if (e == Errno.OK) { m.Files.Remove(a[0]); m.Links.Remove(a[0]); m.Fifos.Remove(a[0]); }
                break;
            case "rmdir":
                e = t.Rmdir(a[0]);
                if (e == Errno.OK) { m.Dirs.Remove(a[0]); m.Subvols.Remove(a[0]); }
                break;
            case "subvol_create":
                e = t.CreateSubvolume(a[0]);
                if (e == Errno.OK) { m.Dirs.Add(a[0]); m.Subvols.Add(a[0]); }
                break;
            case "clonerange":
                {
                    e = t.CloneRange(a[0], U(1), a[2], U(3), U(4), out ulong copied);
                    if ((e != Errno.OK && copied == 0) || !m.Files.TryGetValue(a[0], out var src) || !m.Files.ContainsKey(a[2])) break;
                    if (src.Unspecified) { m.Files[a[2]].Unspecified = true; break; } // copied unknown bytes
                    // copy_file_range's loop: each step copies what the source has up to its end
                    // now (a copy within one file may have grown it in the step before).
                    ulong so = U(1), doff = U(3), len = U(4);
                    if (len == 0) len = so < (ulong)src.Length ? (ulong)src.Length - so : 0;
                    if (e != Errno.OK) len = Math.Min(len, copied); // the prefix copied before the error
                    while (len > 0)
                    {
                        var cur = m.Files[a[0]];
                        if (so >= (ulong)cur.Length) break;
                        ulong n = Math.Min(len, (ulong)cur.Length - so);
                        m.Files[a[2]].Store(doff, cur.Bytes.Slice((int)so, (int)n).ToArray());
                        so += n; doff += n; len -= n;
                    }
                    break;
                }
            case "tmpfile":
                {
                    // A nameless file written whole, then named: the model sees it only once it
                    // has its name (linkat does not replace: EEXIST leaves the old name's file).
                    var d = Data(a[2], (int)U(1));
                    e = t.Tmpfile(a[0], d);
                    if (e != Errno.OK) break;
                    var f = new ModelFile();
                    f.Store(0, d);
                    m.Files[a[0]] = f;
                    break;
                }
            case "snapshot":
                e = t.Snapshot(a[0], a[1], a[2] == "ro");
                if (e == Errno.OK) SnapshotModel(m, a[0], a[1]);
                break;
            case "subvol_rename":
                e = t.Rename(a[0], a[1]);
                if (e == Errno.OK) RenameModel(m, a[0], a[1]);
                break;
            case "subvol_exchange":
                e = t.Exchange(a[0], a[1]);
                if (e == Errno.OK && a[0] != a[1])
                {
                    // Neither is below the other (the filesystem refuses that): three moves.
                    string aside = a[0] + "\u0001exchange";
                    MoveModel(m, a[0], aside);
                    MoveModel(m, a[1], a[0]);
                    MoveModel(m, aside, a[1]);
                }
                break;
            case "subvol_delete":
                e = t.DeleteSubvolume(a[0]);
                if (e == Errno.OK)
                {
                    // Everything below it goes with it.
                    string below = a[0] + "/";
                    foreach (var f in m.Files.Keys.Where(k => k.StartsWith(below, StringComparison.Ordinal)).ToList()) m.Files.Remove(f);
                    foreach (var l in m.Links.Keys.Where(k => k.StartsWith(below, StringComparison.Ordinal)).ToList()) m.Links.Remove(l);
                    m.Fifos.RemoveWhere(k => k.StartsWith(below, StringComparison.Ordinal));
                    m.Dirs.RemoveWhere(k => k == a[0] || k.StartsWith(below, StringComparison.Ordinal));
                    m.Subvols.RemoveWhere(k => k == a[0] || k.StartsWith(below, StringComparison.Ordinal));
                }
                break;
            case "whiteout":
                {
                    // No whiteout where the rename does nothing: one name, or two names of one
                    // file (the VFS returns before asking the filesystem). The whiteout is a
                    // node like a FIFO for what later operations answer.
                    bool nothing = a[0] == a[1] || (m.Files.TryGetValue(a[0], out var wf) && ReferenceEquals(m.Files.GetValueOrDefault(a[1]), wf));
                    e = t.RenameWhiteout(a[0], a[1]);
                    if (e == Errno.OK && !nothing)
                    {
                        RenameModel(m, a[0], a[1]);
                        m.Fifos.Add(a[0]);
                    }
                    break;
                }
            case "rename":
                // Of whatever the name holds: a file mostly, but a directory after
                // subvol_exchange traded a file's name for it (the model ignored those and kept
                // the directory's tree at its old name: explore seed 423465).
                e = t.Rename(a[0], a[1]);
                if (e == Errno.OK) RenameModel(m, a[0], a[1]);
                break;
            case "write" or "dwrite" or "mwrite":
                {
                    e = t.Stat(a[0], out var st);
                    if (e != Errno.OK) break;
                    if (!st.IsReg) { e = Errno.EISDIR; break; }
                    ulong off = U(1);
                    var d = Data(a[3], (int)U(2));
                    if (op == "mwrite")
                    {
                        // Stores into the existing bytes only, as a mapping allows.
                        if (off >= st.Size) { e = Errno.OK; break; }
                        d = d[..(int)Math.Min((ulong)d.Length, st.Size - off)];
                    }
                    e = t.Write(a[0], off, d, op switch { "mwrite" => StressWriteKind.Mapped, "dwrite" => StressWriteKind.Direct, _ => StressWriteKind.Buffered }, out int n);
                    // Exactly what reached the file: a full filesystem makes short writes, or
                    // fails after partial progress (the runner's model once stored the whole
                    // buffer on a short write, and long soaks that filled the disk then
                    // reported "data differs" for writes that never claimed to be complete).
                    if (n > 0 && m.Files.TryGetValue(a[0], out var written)) written.Store(off, d.AsSpan(0, n));
                    if (op == "mwrite" && e != Errno.OK && t.FailedMappedWriteLeavesContentsUnspecified(e) && m.Files.TryGetValue(a[0], out var lost))
                        lost.Unspecified = true;
                    break;
                }
            case "read" or "dread":
                {
                    var buf = new byte[U(2)];
                    e = t.Read(a[0], U(1), buf, op == "dread", out int n);
                    if (e == Errno.OK && m.Files.TryGetValue(a[0], out var want) && !want.Unspecified)
                    {
                        int expect = (int)Math.Max(0, Math.Min((long)buf.Length, want.Length - (long)U(1)));
                        var wantSpan = want.Bytes.Slice((int)Math.Min(U(1), (ulong)want.Length), expect);
                        if (n != expect || !buf.AsSpan(0, n).SequenceEqual(wantSpan))
                        {
                            int at = 0;
                            while (at < Math.Min(n, expect) && buf[at] == wantSpan[at]) at++;
                            throw new InvalidDataException($"{op} {string.Join(' ', a)} returned data that differs from what was written at file offset {U(1) + (ulong)at} (got {n} bytes, expected {expect}; model {want.Length} bytes)");
                        }
                    }
                    break;
                }
            case "fallocate" or "punch" or "zero":
                {
                    var mode = op switch { "punch" => FallocateMode.PunchHole | FallocateMode.KeepSize, "zero" => FallocateMode.ZeroRange | FallocateMode.KeepSize, _ => FallocateMode.KeepSize };
                    e = t.Fallocate(a[0], mode, U(1), U(2));
                    if (e == Errno.OK && op != "fallocate" && m.Files.TryGetValue(a[0], out var zeroed)) zeroed.Zero(U(1), U(2));
                    break;
                }
            case "truncate":
                e = t.Truncate(a[0], U(1));
                if (e == Errno.OK && m.Files.TryGetValue(a[0], out var truncated)) truncated.Resize((int)U(1));
                break;
            case "fsync" or "fdatasync": e = t.Fsync(a[0], op == "fdatasync"); break;
            case "sync": e = t.Sync(); break;
            case "resize": e = t.Resize(int.Parse(a[0], CultureInfo.InvariantCulture)); break;
            case "du": e = t.DiskUsage(a[0]); break;
            case "findnew": e = t.FindNew(a[0], int.Parse(a[1], CultureInfo.InvariantCulture)); break;
            case "setattr": e = t.Chmod(a[0], (uint)U(1)); break;
            case "setxattr": e = t.SetXattr(a[0], a[1], Encoding.UTF8.GetBytes(a[2])); break;
            case "removexattr": e = t.RemoveXattr(a[0], a[1]); break;
            case "getdents": e = t.ReadDir(a[0]); break;
            case "stat": e = t.Lstat(a[0]); break;
            default: throw new ArgumentException($"unknown operation '{op}'");
        }
        errno = e == Errno.OK ? "0" : e.ToString();
    }

    /// <summary>Sync, run the target's own checks, compare every worker's tree with its model,
    /// hash the state.</summary>
    private static void Finish(IStressTarget t, Model[] models, StressResult r)
    {
        var se = t.Sync();
        // After a mapped write failed at writeback, syncfs reports that error once more (the
        // kernel keeps it for the superblock): expected, not a new failure.
        bool mappedFailed = models.Any(m => m.Files.Values.Any(f => f.Unspecified));
        if (se != Errno.OK && !(mappedFailed && se is Errno.ENOSPC or Errno.EDQUOT)) r.Failures.Add($"final sync: {se}");
        r.Failures.AddRange(t.Verify());
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var m in models)
        {
            foreach (var (path, want) in m.Files)
            {
                byte[] got;
                try { got = t.ReadAll(path); }
                catch (IOException ex) { r.Failures.Add($"{path}: {ex.Message}"); continue; }
                if (want.Unspecified) r.Unverified++;
                else if (!got.AsSpan().SequenceEqual(want.Bytes)) r.Failures.Add($"{path}: content differs from what was written ({got.Length} bytes, model {want.Length})");
                sha.AppendData(Encoding.UTF8.GetBytes(path));
                sha.AppendData(got);
            }
            foreach (var d in m.Dirs)
            {
                if (!t.DirectoryExists(d)) r.Failures.Add($"{d}: directory missing");
                sha.AppendData(Encoding.UTF8.GetBytes("dir " + d));
            }
            foreach (var (l, target) in m.Links)
            {
                if (t.Readlink(l, out var got) != Errno.OK || got != target) r.Failures.Add($"{l}: symlink target differs");
                sha.AppendData(Encoding.UTF8.GetBytes($"link {l} {target}"));
            }
        }
        r.StateHash = Convert.ToHexString(sha.GetHashAndReset());
    }
}

/// <summary>A per-operation check (--check-each) failed after the operation ran.</summary>
internal sealed class CheckFailedException(string line, string message) : Exception(message)
{
    public string Line { get; } = line;
}

using System.Buffers.Binary;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Reservoir.Engine.Tx;
using Reservoir.Format;

namespace Reservoir.Stress;

/// <summary>
/// The image fuzzer (issue 6): damages a populated image in the ways real damage looks (bit
/// flips in tree nodes, random bytes anywhere, nodes swapped for others, stale nodes from an
/// older generation left at their address, trees that loop back on themselves with valid
/// checksums, truncated files) and feeds each result to fsck, fsck's repair, the mount and a walk
/// of everything, and the offline tree dump. Each must end with a clear error or a repair:
/// only <see cref="FsException"/> may come out, never another exception, a hang or a loop.
/// </summary>
public static class ImageFuzzer
{
    public static readonly string[] Kinds = ["bitflip", "random-bytes", "swap", "stale", "loop", "truncate"];

    public sealed class Result
    {
        public readonly SortedDictionary<string, int> Images = new(StringComparer.Ordinal);
        public readonly SortedDictionary<string, int> Detected = new(StringComparer.Ordinal);
        public readonly List<string> Failures = new();
        public bool Ok => Failures.Count == 0;
    }

    /// <summary>A small populated image and the addresses of its tree nodes; also an older
    /// version of it (one commit back), the source of stale nodes. Quotas are on, with a
    /// subvolume, a snapshot of it and files rewritten since, so the quota items (owner refs,
    /// lineage, usage, ORIGIN_DROPs) are damaged too. Cleanly unmounted (a crash image would
    /// let the mount fall back to the commit before a damaged one, hiding the damage), then its
    /// superblocks say ORIGIN_DROPs are pending, as after a crash, so a read-write mount (fsck's
    /// repair) derives them again from the damaged trees.</summary>
    public static (MemoryBlockDevice Image, MemoryBlockDevice Older, List<ulong> Nodes) Populated(int seed)
    {
        var dev = new MemoryBlockDevice(32UL << 20);
        Filesystem.Format(dev, new MkfsOptions { NodeSize = 4096 });
        MemoryBlockDevice older, image;
        var rng = new Random(seed);
        using (var fs = Filesystem.Mount(dev, new MountOptions { CommitIntervalMs = 0 }))
        {
            fs.EnableQuota();
            fs.CreateSubvolume(Filesystem.RootIno, "v", 0x1ED, 0, out var v);
            var inV = new List<ulong>();
            void Fill(int from, int to)
            {
                for (int i = from; i < to; i++)
                {
                    ulong dir = i % 3 == 0 ? v.Ino : Filesystem.RootIno;
                    if (i % 5 == 0 && fs.Mkdir(Filesystem.RootIno, "d" + i, 0x1ED, 0, 0, out var d) == Errno.OK) dir = d.Ino;
                    if (fs.Create(dir, "f" + i, 0x1A4, 0, 0, out var a) != Errno.OK) continue;
                    var data = new byte[rng.Next(1, 30_000)];
                    rng.NextBytes(data);
                    fs.Write(a.Ino, 0, data, out _);
                    fs.SetXattr(Filesystem.RootIno, "user.x" + i, data.AsSpan(0, Math.Min(100, data.Length)));
                    if (dir == v.Ino) inV.Add(a.Ino);
                }
                fs.Sync();
            }
            Fill(0, 30);
            fs.CreateSnapshot(v.Ino, Filesystem.RootIno, "s", readOnly: true, out _);
            fs.Sync();
            older = dev.Clone();
            Fill(30, 45);
            foreach (var f in inV) fs.Write(f, 0, new byte[4096], out _); // v lets go of what s keeps
            fs.Sync();
        }
        image = dev.Clone();
        MarkOriginDropsPending(image);
        List<ulong> nodes;
        using (var fs = Filesystem.Mount(image.Clone(), new MountOptions { ReadOnly = true, CommitIntervalMs = 0 }))
            // The subvolume, its snapshot and the quota tree too: their items are damaged as well.
            nodes = TreeDump.Trees.Select(t => t.Id).Concat([256UL, 257UL, TreeIds.QuotaTree])
                .SelectMany(id => TreeDump.Nodes(fs, id)).Select(n => n.Bytenr).Distinct().ToList();
        return (image, older, nodes);
    }

    /// <summary>Sets every valid superblock copy's origin_drops_missing_since to its generation.</summary>
    private static void MarkOriginDropsPending(MemoryBlockDevice dev)
    {
        var buf = new byte[FormatConstants.SuperblockSize];
        foreach (var off in FormatConstants.SuperblockOffsets)
        {
            if (off + FormatConstants.SuperblockSize > dev.Size) continue;
            dev.Read(off, buf);
            if (Superblock.TryRead(buf, off, out _) is not { } sb) continue;
            sb.OriginDropsMissingSince = sb.Generation;
            sb.Write(buf);
            dev.Write(off, buf);
        }
    }

    /// <summary>Runs <paramref name="count"/> damaged images of every kind (seeded) through
    /// every consumer.</summary>
    public static Result Run(int seed, int count, TimeSpan perImage, IEnumerable<string>? kinds = null)
    {
        var r = new Result();
        var (clean, older, nodes) = Populated(seed);
        var rng = new Random(seed);
        foreach (var kind in kinds ?? Kinds)
            for (int i = 0; i < count; i++)
            {
                var img = Damage(kind, clean, older, nodes, rng);
                if (img == null) continue;
                r.Images[kind] = r.Images.GetValueOrDefault(kind) + 1;
                string? problem = Exercise(img, perImage, out bool detected);
                if (detected) r.Detected[kind] = r.Detected.GetValueOrDefault(kind) + 1;
                if (problem != null) r.Failures.Add($"{kind} #{i} (seed {seed}): {problem}");
            }
        return r;
    }

    /// <summary>One damaged copy of <paramref name="clean"/>, or null when the draw is void
    /// (two equal nodes to swap, no internal node for a loop).</summary>
    public static MemoryBlockDevice? Damage(string kind, MemoryBlockDevice clean, MemoryBlockDevice older, List<ulong> nodes, Random rng)
    {
        const int ns = 4096;
        var dev = clean.Clone();
        switch (kind)
        {
            case "bitflip":
                {
                    ulong at = nodes[rng.Next(nodes.Count)] + (ulong)rng.Next(ns);
                    var b = new byte[1];
                    dev.Read(at, b);
                    b[0] ^= (byte)(1 << rng.Next(8));
                    dev.Write(at, b);
                    return dev;
                }
            case "random-bytes":
                for (int j = 0; j < 20; j++) dev.Write((ulong)rng.NextInt64(0, (long)Math.Min(dev.Size, 12UL << 20)), [(byte)rng.Next(256)]);
                return dev;
            case "swap":
                {
                    ulong a = nodes[rng.Next(nodes.Count)], b = nodes[rng.Next(nodes.Count)];
                    if (a == b) return null;
                    var buf = new byte[ns];
                    dev.Read(b, buf);
                    dev.Write(a, buf); // a valid node at the wrong address
                    return dev;
                }
            case "stale":
                {
                    // The older image's bytes where a node now lives: a valid checksum, an older
                    // generation (or another node altogether).
                    var now = new byte[ns];
                    var then = new byte[ns];
                    var changed = nodes.Where(n => { dev.Read(n, now); older.Read(n, then); return !now.AsSpan().SequenceEqual(then); }).ToList();
                    if (changed.Count == 0) return null;
                    ulong at = changed[rng.Next(changed.Count)];
                    older.Read(at, then);
                    dev.Write(at, then);
                    return dev;
                }
            case "loop":
                {
                    // An internal node whose first child pointer points back at itself (or at the
                    // root of its tree), checksum recomputed so that only the structure is wrong.
                    var buf = new byte[ns];
                    var internals = nodes.Where(n => { dev.Read(n, buf); return NodeLayout.Level(buf) > 0; }).ToList();
                    if (internals.Count == 0) return null;
                    ulong at = internals[rng.Next(internals.Count)];
                    dev.Read(at, buf);
                    ulong target = rng.Next(2) == 0 ? at : nodes[rng.Next(nodes.Count)];
                    int ptr = NodeLayout.HeaderSize + Key.Size;
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(ptr), target);
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(ptr + 8), NodeLayout.Generation(buf));
                    NodeLayout.WriteChecksum(buf);
                    dev.Write(at, buf);
                    return dev;
                }
            case "truncate":
                {
                    int len = rng.Next(0, (int)Math.Min(clean.Size, 24UL << 20));
                    var t = new MemoryBlockDevice((ulong)len);
                    var buf = new byte[len];
                    clean.Read(0, buf);
                    if (len > 0) t.Write(0, buf);
                    return t;
                }
            default: throw new ArgumentException($"unknown damage '{kind}' (one of {string.Join(", ", Kinds)})");
        }
    }

    /// <summary>fsck, fsck's repair on a copy, the mount with a walk reading everything,
    /// find-new of every subvolume and the tree dump, under a time limit; returns null when everything ended with a result or an
    /// FsException, else what went wrong. <paramref name="detected"/>: fsck or the mount
    /// reported the damage.</summary>
    public static string? Exercise(MemoryBlockDevice dev, TimeSpan limit, out bool detected)
    {
        bool found = false;
        var task = Task.Run(() =>
        {
            var report = Fsck.Run(dev, new FsckOptions { CheckDataCsums = true });
            found = !report.Clean;
            Fsck.Run(dev.Clone(), new FsckOptions { Repair = true });
            try
            {
                using var fs = Filesystem.Mount(dev.Clone(), new MountOptions { ReadOnly = true, CommitIntervalMs = 0 });
                void Walk(ulong dir, int depth)
                {
                    if (depth > 20 || fs.ListDir(dir, out var entries) != Errno.OK) return;
                    foreach (var e in entries)
                    {
                        if (fs.GetAttr(e.Ino, out var a) != Errno.OK) continue;
                        if (a.IsDir) Walk(e.Ino, depth + 1);
                        else if (a.IsReg && a.Size < (64UL << 20)) fs.Read(e.Ino, 0, new byte[a.Size], out _);
                        fs.ListXattr(e.Ino, out _);
                    }
                }
                Walk(Filesystem.RootIno, 0);
                // find-new of every subvolume from generation 0: a walk of each tree by its
                // pointers' generations, with every file's path from its names.
                var ids = fs.ListSubvolumes(out var subvolumes) == Errno.OK ? subvolumes.Select(s => s.Id).ToList() : [];
                foreach (var id in ids.Prepend(Format.TreeIds.FsTree)) fs.FindNew(id, 0, out _);
                foreach (var t in TreeDump.Trees)
                {
                    try { TreeDump.Items(fs, t.Id); } catch (FsException) { }
                }
            }
            catch (FsException) { found = true; }
        });
        bool ended;
        try { ended = task.Wait(limit); }
        catch (AggregateException) { ended = true; } // faulted: looked at below
        detected = found;
        if (!ended) return $"no answer after {limit.TotalSeconds:F0} s (a hang or a loop)";
        if (task.IsFaulted)
        {
            var ex = task.Exception!.InnerException!;
            return ex is FsException ? null : $"{ex.GetType().Name}: {ex.Message} at {string.Join(" < ", (ex.StackTrace ?? "").Split('\n').Take(4).Select(l => l.Trim()))}";
        }
        return null;
    }
}

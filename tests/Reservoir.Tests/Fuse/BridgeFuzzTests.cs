using System.Buffers.Binary;
using System.Text;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;
using Xunit;

namespace Reservoir.Tests.Fuse;

/// <summary>
/// "The mount never crashes and never hangs on what a client sends": the bridge is fed
/// thousands of requests per seed, each well formed with random fields (offsets, sizes, modes,
/// flags, names of random bytes, node ids and file handles known and unknown, callers root and
/// not) or such a request damaged (bytes changed, cut short, lengthened), as a client's
/// syscalls reach it through the kernel and as a confused kernel or a hostile /dev/fuse writer
/// could send them. The ioctls, whose argument bytes are the client's own, get the most.
///
/// Every request must get a well-formed reply (its unique, a length that covers the header,
/// an errno between 1 and 4095 or none, nothing after an error) within the time limit; no
/// exception may escape the bridge and no request may answer EIO or log a failure (on a memory
/// device nothing fails for real: an EIO is a bug answered as an I/O error). At the end, with
/// every handle released: a file the requests never reached is intact, every reservation is
/// accounted for, nothing leaked, and fsck (with its recount of every quota group) is clean.
/// </summary>
public class BridgeFuzzTests
{
    /// <summary>Requests per seed, and seeds: 5,000 and 8 (about 2 s); a longer run by hand
    /// sets BRIDGE_FUZZ_REQUESTS and BRIDGE_FUZZ_SEEDS (64 seeds of 40,000: about a minute), and
    /// BRIDGE_FUZZ_FROM the first seed (to run one again).</summary>
    private static readonly int Requests = Knob("BRIDGE_FUZZ_REQUESTS", 5000);

    private static int Knob(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    private static readonly Opcode[] Ops =
    [
        Opcode.Lookup, Opcode.Getattr, Opcode.Setattr, Opcode.Readlink, Opcode.Symlink, Opcode.Mknod, Opcode.Mkdir,
        Opcode.Unlink, Opcode.Rmdir, Opcode.Rename, Opcode.Rename2, Opcode.Link, Opcode.Open, Opcode.Create,
        Opcode.Tmpfile, Opcode.Read, Opcode.Write, Opcode.Write, Opcode.Write, Opcode.Release, Opcode.Flush,
        Opcode.Fsync, Opcode.Opendir, Opcode.Readdir, Opcode.Releasedir, Opcode.Fsyncdir, Opcode.Statfs,
        Opcode.Setxattr, Opcode.Getxattr, Opcode.Listxattr, Opcode.Removexattr, Opcode.Access, Opcode.Fallocate,
        Opcode.Lseek, Opcode.CopyFileRange, Opcode.Statx, Opcode.Syncfs, Opcode.Forget, Opcode.BatchForget,
        Opcode.Interrupt, Opcode.Getlk, Opcode.Bmap, Opcode.Poll, Opcode.Readdirplus,
        Opcode.Ioctl, Opcode.Ioctl, Opcode.Ioctl, Opcode.Ioctl, Opcode.Ioctl, Opcode.Ioctl,
    ];

    private static readonly uint[] Ioctls =
    [
        FuseBridge.IocSubvolCreate, FuseBridge.IocSnapDestroy, FuseBridge.IocSnapCreate, FuseBridge.IocSubvolList,
        FuseBridge.IocSubvolSetRo, FuseBridge.IocSubvolGetFlags, FuseBridge.IocSetReceived, FuseBridge.IocQgroupList, FuseBridge.IocQuotaCtl,
        FuseBridge.IocQgroupRelations, FuseBridge.IocSpaceInfo, FuseBridge.IocFsIdentity, FuseBridge.FsIocGetFlags,
        FuseBridge.FsIocSetFlags, FuseBridge.FsIocFsGetXattr, FuseBridge.FsIocFsSetXattr, FuseBridge.FiTrim,
        FuseBridge.IocResize, FuseBridge.IocBtrfsResize, FuseBridge.FsIocGetFsLabel, FuseBridge.FsIocSetFsLabel,
        FuseBridge.IocDiskUsage, FuseBridge.IocExtentMap, FuseBridge.IocChangedInodes, FuseBridge.IocInodeNames,
        FuseBridge.IocExtentReferrers, FuseBridge.IocFindNew, 0xDEADBEEF,
    ];

    private static readonly string[] Names = ["a", "b", "c", "d", "e", "sv", "snap", "f1", "f2", "dir", "user.x", "trusted.t", "system.posix_acl_access", "security.capability"];

    public static TheoryData<int> Seeds => [.. Enumerable.Range(Knob("BRIDGE_FUZZ_FROM", 1), Knob("BRIDGE_FUZZ_SEEDS", 8))];

    [Theory]
    [MemberData(nameof(Seeds))]
    public Task EveryRequestGetsAnErrnoAndNothingIsLost(int seed) =>
        Within(TimeSpan.FromMinutes(3), () => Run(seed), () => $"seed {seed}: no answer within 3 minutes (a request hangs): {_last}");

    /// <summary>Runs <paramref name="run"/>, failing with <paramref name="hung"/>'s words if it
    /// has not ended within <paramref name="limit"/>.</summary>
    internal static async Task Within(TimeSpan limit, Action run, Func<string> hung)
    {
        var task = Task.Run(run);
        if (await Task.WhenAny(task, Task.Delay(limit)) != task) throw new Xunit.Sdk.XunitException(hung());
        await task;
    }

    private volatile string _last = "";

    private void Run(int seed)
    {
        // Every fourth seed on an image small enough that writes run out of space often.
        var dev = TestFs.NewDevice(seed % 4 == 3 ? 12UL << 20 : 96UL << 20);
        var fs = TestFs.Mount(dev);
        var (canary, canaryIno, unreached, sv) = Populate(fs, seed, 100_000);
        TestFs.Ok(fs.Sync());
        // The daemon's permission checks, the kernel's (default_permissions), or the mount's
        // root in the subvolume (subvol=sv), by turns.
        var options = (seed % 3) switch
        {
            1 => new FuseMountOptions { DefaultPermissions = true },
            2 => new FuseMountOptions { Subvol = "sv" },
            _ => new FuseMountOptions(),
        };
        var log = new List<string>();
        var b = new FuseBridge(fs, options, m => { lock (log) log.Add(m); });
        var f = new Fuzzer(b, new Random(seed));
        Assert.Equal(0, f.Send(Opcode.Init, Abi.RootId, 0, Cat(U32(7), U32(39), U32(128 << 10), U32(uint.MaxValue))).Error);
        f.Unreached.UnionWith(unreached);
        f.Nodes.Add(sv);

        for (int i = 0; i < Requests; i++)
        {
            int logged = log.Count;
            var (desc, reply) = f.Step();
            _last = $"seed {seed}, request {i}: {desc}";
            string? bad = reply.Problem;
            if (bad == null && reply.Error == -(int)Errno.EIO) bad = "answered EIO";
            if (bad == null && log.Count > logged && reply.Error is not (-(int)Errno.ENOSPC or -(int)Errno.EDQUOT))
                bad = "logged " + string.Join(" | ", log.Skip(logged));
            if (bad != null) throw new Xunit.Sdk.XunitException($"{_last}: {bad}" + (fs.Fs.FailedReason is { } why ? $" (the filesystem failed: {why})" : ""));
        }

        foreach (ulong fh in f.Handles.ToList())
            Assert.Equal(0, f.Send(Opcode.Release, Abi.RootId, 0, Cat(U64(fh), U32(0), U32(0), U64(0))).Error);
        TestFs.Ok(fs.Sync());
        Assert.Equal(canary, TestFs.ReadAll(fs, canaryIno));
        Assert.Empty(fs.VerifyReservations());
        fs.Dispose();
        Assert.True(fs.LeakedBytes == 0, string.Join("; ", fs.LeakReports));
        FsckAssert.Clean(dev);
    }

    /// <summary>
    /// The same requests from three threads at once on one bridge (as the mount's request
    /// threads send them), under the seeded deterministic scheduler so that an interleaving that
    /// fails is replayed exactly by its seed: replies well formed, no EIO, no failure logged,
    /// the untouched file intact, nothing leaked, fsck clean.
    /// </summary>
    [Fact]
    public void ConcurrentRequestsUnderTheSchedulerGetAnErrnoAndNothingIsLost()
    {
        SchedulerRuns.Within(TimeSpan.FromMinutes(10), Knob("BRIDGE_FUZZ_SEEDS", 8) / 2, () => new Reservoir.Engine.Tx.MountOptions { CommitIntervalMs = 5 }, (seed, s, fs, failures) =>
        {
            var log = new List<string>();
            var b = new FuseBridge(fs, new FuseMountOptions(), m => { lock (log) log.Add(m); });
            var first = new Fuzzer(b, new Random(seed));
            Assert.Equal(0, first.Send(Opcode.Init, Abi.RootId, 0, Cat(U32(7), U32(39), U32(128 << 10), U32(uint.MaxValue))).Error);
            lock (log) log.Clear(); // what INIT negotiated
            var (canary, canaryIno, unreached, sv) = Populate(fs, seed, 50_000);
            var fuzzers = Enumerable.Range(0, 3).Select(i => new Fuzzer(b, new Random(seed * 10 + i))).ToList();
            foreach (var f in fuzzers) { f.Unreached.UnionWith(unreached); f.Nodes.Add(sv); }
            var threads = fuzzers.Select((f, i) => s.Start($"fuzz{i}", () =>
            {
                for (int k = 0; k < Requests / 8; k++)
                {
                    var (desc, reply) = f.Step();
                    string? bad = reply.Problem ?? (reply.Error == -(int)Errno.EIO ? "answered EIO" : null);
                    if (bad != null) lock (failures) failures.Add($"thread {i}, request {k}: {desc}: {bad}");
                }
            })).ToList();
            foreach (var t in threads) t.Join();
            foreach (var f in fuzzers)
                foreach (ulong fh in f.Handles)
                    f.Send(Opcode.Release, Abi.RootId, 0, Cat(U64(fh), U32(0), U32(0), U64(0)));
            TestFs.Ok(fs.Sync());
            lock (log)
                foreach (var line in log.Where(l => !l.Contains("ENOSPC") && !l.Contains("EDQUOT")))
                    failures.Add("logged " + line);
            if (!canary.AsSpan().SequenceEqual(TestFs.ReadAll(fs, canaryIno))) failures.Add("the untouched file changed");
            failures.AddRange(fs.VerifyReservations());
        });
    }

    /// <summary>What every run starts from: a file no request reaches (in a directory whose name
    /// no request uses; both node ids are kept from the requests), quotas on, and a subvolume
    /// whose group has a limit to run into.</summary>
    private static (byte[] Canary, ulong CanaryIno, ulong[] Unreached, ulong Subvolume) Populate(Filesystem fs, int seed, int canaryBytes)
    {
        byte[] canary = new byte[canaryBytes];
        new Random(seed + 1000).NextBytes(canary);
        TestFs.Ok(fs.Mkdir(Filesystem.RootIno, "canary-dir", 0x1ed, 0, 0, out var cd));
        ulong canaryIno = TestFs.CreateFile(fs, cd.Ino, "canary", canary);
        TestFs.Ok(fs.EnableQuota());
        TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
        TestFs.Ok(fs.LimitQgroup(NodeIds.Decode(sv.Ino).TreeId, 4UL << 20, exclusive: false));
        return (canary, canaryIno, [cd.Ino, canaryIno], sv.Ino);
    }

    internal static byte[] U32(uint v) { var x = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(x, v); return x; }
    internal static byte[] U64(ulong v) { var x = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(x, v); return x; }
    internal static byte[] Cat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    private readonly record struct Reply(int Error, byte[] Body, string? Problem);

    /// <summary>Builds requests from what earlier replies named (node ids, file handles) and
    /// checks each reply's framing.</summary>
    private sealed class Fuzzer(FuseBridge bridge, Random rng)
    {
        public readonly List<ulong> Nodes = [Abi.RootId];
        public readonly HashSet<ulong> Handles = [];
        /// <summary>Node ids no request names (small ids are tried at random otherwise).</summary>
        public readonly HashSet<ulong> Unreached = [];
        private readonly byte[] _out = new byte[1 << 20];
        private ulong _unique;

        public Reply Send(Opcode op, ulong node, uint uid, byte[] body) =>
            Check(op, bridge.Handle(BridgeTests.Request(op, ++_unique, node, uid, uid, body), _out));

        private Reply Check(Opcode op, int len)
        {
            if (op is Opcode.Forget or Opcode.BatchForget)
                return new Reply(0, [], len == 0 ? null : $"a reply of {len} bytes to {op}");
            if (len < Abi.OutHeaderSize) return new Reply(0, [], $"a reply of {len} bytes");
            uint hl = BinaryPrimitives.ReadUInt32LittleEndian(_out);
            int err = BinaryPrimitives.ReadInt32LittleEndian(_out.AsSpan(4));
            ulong u = BinaryPrimitives.ReadUInt64LittleEndian(_out.AsSpan(8));
            string? p = null;
            if (hl != len) p = $"header says {hl} bytes, reply has {len}";
            else if (u != _unique) p = $"reply to unique {u}, not {_unique}";
            else if (err > 0 || err < -4095) p = $"error {err} is no errno";
            else if (err != 0 && len != Abi.OutHeaderSize) p = $"an error ({err}) with {len - Abi.OutHeaderSize} bytes of body";
            return new Reply(err, _out[Abi.OutHeaderSize..len], p);
        }

        private ulong Node()
        {
            ulong n = rng.Next(10) switch
            {
                0 => (ulong)rng.NextInt64(),
                1 => (ulong)rng.Next(0, 400),
                _ => Nodes[rng.Next(Nodes.Count)],
            };
            return Unreached.Contains(n) ? Abi.RootId : n;
        }

        private ulong Fh() => Handles.Count > 0 && rng.Next(8) != 0 ? Handles.ElementAt(rng.Next(Handles.Count)) : (ulong)rng.Next(0, 50);

        private byte[] Name()
        {
            switch (rng.Next(12))
            {
                case 0:
                    var raw = new byte[rng.Next(0, 300)];
                    rng.NextBytes(raw);
                    return [.. raw, 0];
                case 1: return [.. Encoding.UTF8.GetBytes(rng.Next(3) switch { 0 => ".", 1 => "..", _ => "a/b" }), 0];
                case 2: return [.. Encoding.UTF8.GetBytes(new string('n', 256)), 0];
                default: return [.. Encoding.UTF8.GetBytes(Names[rng.Next(Names.Length)]), 0];
            }
        }

        private ulong Offset() => rng.Next(6) switch
        {
            0 => (ulong)rng.NextInt64(),
            1 => ulong.MaxValue - (ulong)rng.Next(0, 8192),
            2 => (ulong)rng.Next(0, 1 << 26),
            _ => (ulong)rng.Next(0, 1 << 18),
        };

        private uint Size() => rng.Next(6) switch
        {
            0 => (uint)rng.Next(),
            1 => 0,
            2 => (uint)rng.Next(0, 1 << 20),
            _ => (uint)rng.Next(0, 1 << 14),
        };

        private uint Mode() => rng.Next(4) switch
        {
            0 => (uint)rng.Next(),
            _ => (uint)(new[] { 0x8000, 0x4000, 0xA000, 0x1000, 0xC000, 0x2000, 0x6000 }[rng.Next(7)] | rng.Next(0, 0x1000)),
        };

        private byte[] Bytes(int max)
        {
            var x = new byte[rng.Next(0, max)];
            rng.NextBytes(x);
            return x;
        }

        private byte[] Body(Opcode op, out uint ioctlOut)
        {
            ioctlOut = 0;
            switch (op)
            {
                case Opcode.Lookup: case Opcode.Unlink: case Opcode.Rmdir: case Opcode.Removexattr:
                    return Name();
                case Opcode.Symlink: return Cat(Name(), Name());
                case Opcode.Mknod: return Cat(U32(Mode()), U32((uint)rng.Next()), U32((uint)rng.Next(0, 0x200)), U32(0), Name());
                case Opcode.Mkdir: return Cat(U32(Mode()), U32((uint)rng.Next(0, 0x200)), Name());
                case Opcode.Rename: return Cat(U64(Node()), Name(), Name());
                case Opcode.Rename2: return Cat(U64(Node()), U32(rng.Next(3) == 0 ? (uint)rng.Next() : (uint)rng.Next(0, 8)), U32(0), Name(), Name());
                case Opcode.Link: return Cat(U64(Node()), Name());
                case Opcode.Open: return Cat(U32(rng.Next(3) == 0 ? (uint)rng.Next() : (uint)rng.Next(0, 3) | (uint)(rng.Next(2) * 0x4000) | (uint)(rng.Next(2) * 0x200)), U32(0));
                case Opcode.Create: case Opcode.Tmpfile:
                    return Cat(U32((uint)rng.Next(0, 3) | 0x40 | (uint)(rng.Next(2) * 0x4000) | (uint)(rng.Next(2) * 0x80)), U32(Mode()), U32((uint)rng.Next(0, 0x200)), U32(0), Name());
                case Opcode.Read: case Opcode.Readdir: case Opcode.Readdirplus:
                    return Cat(U64(Fh()), U64(Offset()), U32(Size()), U32(0), U64(0), U32(0), U32(0));
                case Opcode.Write:
                    {
                        var data = Bytes(rng.Next(4) == 0 ? 300_000 : 20_000);
                        uint size = rng.Next(10) == 0 ? Size() : (uint)data.Length;
                        return Cat(U64(Fh()), U64(Offset()), U32(size), U32((uint)rng.Next(0, 8)), U64(0), U32(0), U32(0), data);
                    }
                case Opcode.Release: return Cat(U64(Fh()), U32(0), U32(0), U64(0));
                case Opcode.Flush: return Cat(U64(Fh()), U32(0), U32(0), U64(0));
                case Opcode.Fsync: case Opcode.Fsyncdir: return Cat(U64(Fh()), U32((uint)rng.Next(0, 3)), U32(0));
                case Opcode.Setattr:
                    {
                        var s = new byte[88];
                        BinaryPrimitives.WriteUInt32LittleEndian(s, (uint)rng.Next(0, 1 << 12));
                        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(8), Fh());
                        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(16), Offset());
                        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(32), (ulong)rng.NextInt64());
                        BinaryPrimitives.WriteUInt64LittleEndian(s.AsSpan(40), (ulong)rng.NextInt64());
                        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(56), (uint)rng.Next());
                        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(60), (uint)rng.Next());
                        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(68), Mode());
                        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(76), rng.Next(2) == 0 ? 1000u : (uint)rng.Next());
                        BinaryPrimitives.WriteUInt32LittleEndian(s.AsSpan(80), rng.Next(2) == 0 ? 1000u : (uint)rng.Next());
                        return s;
                    }
                case Opcode.Setxattr:
                    {
                        var value = Bytes(rng.Next(4) == 0 ? 70_000 : 200);
                        uint size = rng.Next(8) == 0 ? Size() : (uint)value.Length;
                        return Cat(U32(size), U32((uint)rng.Next(0, 4)), Name(), value);
                    }
                case Opcode.Getxattr: return Cat(U32(Size()), U32(0), Name());
                case Opcode.Listxattr: return Cat(U32(Size()), U32(0));
                case Opcode.Access: return Cat(U32((uint)rng.Next(0, 8)), U32(0));
                case Opcode.Fallocate:
                    return Cat(U64(Fh()), U64(Offset()), U64(rng.Next(3) == 0 ? Offset() : (ulong)rng.Next(0, 1 << 20)),
                        U32(rng.Next(4) == 0 ? (uint)rng.Next() : new uint[] { 0, 1, 3, 0x10, 0x11, 0x8, 0x20 }[rng.Next(7)]), U32(0));
                case Opcode.Lseek: return Cat(U64(Fh()), U64(Offset()), U32((uint)rng.Next(0, 6)), U32(0));
                case Opcode.CopyFileRange:
                    return Cat(U64(Fh()), U64(Offset()), U64(Node()), U64(Fh()), U64(Offset()), U64(rng.Next(3) == 0 ? Offset() : (ulong)rng.Next(0, 1 << 20)), U64(0));
                case Opcode.Statx: return Cat(U32(0), U32(0), U64(Fh()), U32((uint)rng.Next()), U32(0));
                case Opcode.Forget: return U64((ulong)rng.Next(0, 10));
                case Opcode.BatchForget: return Cat(U32(1), U32(0), U64(Node()), U64(1));
                case Opcode.Ioctl:
                    {
                        uint cmd = Ioctls[rng.Next(Ioctls.Length)];
                        uint size = (cmd >> 16) & 0x3FFF;
                        uint inSize = (cmd & 0x40000000) != 0 ? size : 0;
                        if (rng.Next(6) == 0) inSize = (uint)rng.Next(0, 5000);
                        ioctlOut = (cmd & 0x80000000) != 0 ? size : 0;
                        if (rng.Next(6) == 0) ioctlOut = (uint)rng.Next(0, 20000);
                        var arg = new byte[inSize];
                        switch (rng.Next(3))
                        {
                            case 0: rng.NextBytes(arg); break;
                            case 1: // small numbers, as real arguments mostly are
                                for (int k = 0; k + 8 <= arg.Length; k += 8) BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(k), (ulong)rng.Next(0, 300));
                                break;
                            default: // a name where the subvolume ioctls look for one
                                if (arg.Length >= 24) { var nm = Name(); nm.AsSpan(0, Math.Min(nm.Length, arg.Length - 16)).CopyTo(arg.AsSpan(rng.Next(2) == 0 ? 8 : 16)); }
                                if (arg.Length >= 8) BinaryPrimitives.WriteUInt64LittleEndian(arg, Node());
                                break;
                        }
                        uint flags = (uint)(rng.Next(4) == 0 ? rng.Next(0, 64) : 16);
                        return Cat(U64(Fh()), U32(flags), U32(cmd), U64(0), U32(inSize), U32(ioctlOut), arg);
                    }
                default: return Bytes(64);
            }
        }

        /// <summary>One request: returns what it was and its reply.</summary>
        public (string, Reply) Step()
        {
            var op = Ops[rng.Next(Ops.Length)];
            ulong node = Node();
            uint uid = rng.Next(4) == 0 ? 1000u : 0u;
            var body = Body(op, out _);
            string damage = "";
            switch (rng.Next(10))
            {
                case 0 when body.Length > 0:
                    body = body[..rng.Next(0, body.Length)];
                    damage = ", cut short";
                    break;
                case 1 when body.Length > 0:
                    for (int k = rng.Next(1, 4); k > 0; k--) body[rng.Next(body.Length)] ^= (byte)(1 << rng.Next(8));
                    damage = ", bits flipped";
                    break;
                case 2:
                    body = Cat(body, Bytes(100));
                    damage = ", lengthened";
                    break;
            }
            var reply = Send(op, node, uid, body);
            string desc = $"{op} node {node} uid {uid}, {body.Length} bytes{damage}" + (op == Opcode.Ioctl && body.Length >= 16 ? $", cmd 0x{BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(12)):x8}" : "");
            if (reply.Problem == null && reply.Error == 0) Learn(op, reply.Body);
            return (desc, reply);
        }

        /// <summary>Node ids and file handles the replies give, for the requests after.</summary>
        private void Learn(Opcode op, byte[] body)
        {
            if (op is Opcode.Lookup or Opcode.Mkdir or Opcode.Mknod or Opcode.Symlink or Opcode.Link or Opcode.Create or Opcode.Tmpfile
                && body.Length >= Abi.EntryOutSize)
            {
                ulong n = BinaryPrimitives.ReadUInt64LittleEndian(body);
                if (n != 0 && !Nodes.Contains(n)) Nodes.Add(n);
            }
            if (op is Opcode.Create or Opcode.Tmpfile && body.Length >= Abi.EntryOutSize + Abi.OpenOutSize)
                Handles.Add(BinaryPrimitives.ReadUInt64LittleEndian(body.AsSpan(Abi.EntryOutSize)));
            if (op == Opcode.Open && body.Length >= Abi.OpenOutSize)
                Handles.Add(BinaryPrimitives.ReadUInt64LittleEndian(body));
        }
    }
}

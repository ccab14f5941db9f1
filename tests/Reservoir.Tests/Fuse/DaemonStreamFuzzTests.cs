using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Reservoir.Api.Send;
using Reservoir.Common;
using Reservoir.Engine;
using Reservoir.Engine.Inodes;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;
using Xunit;
using static Reservoir.Tests.Fuse.BridgeFuzzTests;

namespace Reservoir.Tests.Fuse;

/// <summary>
/// The daemon's sends and receives ('R' 17, 18, 19) driven with arguments a client chooses: a
/// real pipe of this process named rightly or wrongly (descriptor, inode, caller), any node
/// (subvolume roots read-only or not, the top level, directories, files, ids that are no
/// subvolume), any parent and clone sources, versions and flags, names of any bytes; receives
/// fed whole streams, cut, damaged and random ones. Every request must be answered (a token or
/// an errno); every send or receive started must end with an outcome, never a failure the
/// daemon did not expect (an exception type in the words) and never a hang; a send that says it
/// is whole must be a whole stream of the length it says; at the end the untouched file is
/// intact, every reservation is accounted for, nothing leaked and fsck is clean.
/// </summary>
public class DaemonStreamFuzzTests
{
    /// <summary>Requests per seed (DAEMON_STREAM_FUZZ_REQUESTS, 200 in CI: a few seconds).</summary>
    private static readonly int Requests = int.TryParse(Environment.GetEnvironmentVariable("DAEMON_STREAM_FUZZ_REQUESTS"), out int n) && n > 0 ? n : 200;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public Task EverySendAndReceiveEndsWithAnOutcomeAndNothingIsLost(int seed) =>
        BridgeFuzzTests.Within(TimeSpan.FromMinutes(3), () => Run(seed), () => $"seed {seed}: no end within 3 minutes (a send or receive hangs): {_last}");

    private volatile string _last = "";

    private void Run(int seed)
    {
        var rng = new Random(seed);
        var dev = TestFs.NewDevice(96UL << 20);
        var fs = TestFs.Mount(dev);
        byte[] canary = new byte[50_000];
        rng.NextBytes(canary);
        TestFs.Ok(fs.Mkdir(Filesystem.RootIno, "canary-dir", 0x1ed, 0, 0, out var cd));
        ulong canaryIno = TestFs.CreateFile(fs, cd.Ino, "canary", canary);
        TestFs.Ok(fs.EnableQuota());
        TestFs.Ok(fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
        TestFs.Ok(fs.Mkdir(sv.Ino, "d", 0x1ed, 0, 0, out var d));
        for (int i = 0; i < 20; i++) TestFs.CreateFile(fs, d.Ino, $"f{i}", Enumerable.Repeat((byte)i, 1000 * i).ToArray());
        TestFs.Ok(fs.CreateSnapshot(sv.Ino, Filesystem.RootIno, "snap", readOnly: true, out var snap));
        TestFs.CreateFile(fs, sv.Ino, "new", new byte[70_000]);
        TestFs.Ok(fs.CreateSnapshot(sv.Ino, Filesystem.RootIno, "snap2", readOnly: true, out var snap2));
        TestFs.Ok(fs.Mkdir(Filesystem.RootIno, "in", 0x1ed, 0, 0, out var into));
        TestFs.Ok(fs.LimitQgroup(NodeIds.Decode(sv.Ino).TreeId, 8UL << 20, exclusive: false));
        ulong fileIno = TestFs.CreateFile(fs, into.Ino, "file", [1, 2, 3]);
        TestFs.Ok(fs.Sync());
        ulong Tree(ulong node) => NodeIds.Decode(node).TreeId;

        // Streams a receive may be fed: whole ones the daemon itself wrote, then damaged.
        byte[] Stream(ulong tree, ulong parent)
        {
            using var ms = new MemoryStream();
            DaemonSend.Run(fs, tree, parent, [], "r" + tree, new SendOptions(), ms);
            return ms.ToArray();
        }
        byte[] full = Stream(Tree(snap.Ino), 0), inc = Stream(Tree(snap2.Ino), Tree(snap.Ino));

        var streams = Reservoir.Cli.Commands.MountCommand.StreamsFor(fs);
        var log = new List<string>();
        var b = new FuseBridge(fs, new FuseMountOptions { Streams = streams }, m => { lock (log) log.Add(m); });
        var output = new byte[1 << 20];
        ulong unique = 0;
        // The caller: this process (whose descriptors the daemon opens), or none (0). Drawn by
        // the caller of Ioctl, never in it: the outcome is asked as often as timing wants, and
        // the draws must not depend on that, or a seed would not replay.
        int Ioctl(ulong node, uint cmd, byte[] arg, out byte[] body, bool noCaller = false)
        {
            var msg = BridgeTests.Request(Opcode.Ioctl, ++unique, node, 0, 0,
                [.. U64(0), .. U32(16), .. U32(cmd), .. U64(0), .. U32((uint)arg.Length), .. U32(16376), .. arg]);
            BinaryPrimitives.WriteUInt32LittleEndian(msg.AsSpan(32), noCaller ? 0u : (uint)Environment.ProcessId);
            int len = b.Handle(msg, output);
            Assert.True(len >= 16, $"a reply of {len} bytes");
            int err = BinaryPrimitives.ReadInt32LittleEndian(output.AsSpan(4));
            body = err == 0 ? output[32..len] : [];
            return -err;
        }

        Assert.True(b.Handle(BridgeTests.Request(Opcode.Init, ++unique, Abi.RootId, 0, 0, [.. U32(7), .. U32(39), .. U32(128 << 10), .. U32(uint.MaxValue)]), output) > 0);
        Assert.Equal(0, BinaryPrimitives.ReadInt32LittleEndian(output.AsSpan(4)));
        lock (log) log.Clear(); // what INIT negotiated
        ulong[] sendNodes = [snap.Ino, snap2.Ino, sv.Ino, Abi.RootId, d.Ino, fileIno, NodeIds.Encode(999, Filesystem.RootIno), NodeIds.Encode(Tree(snap.Ino), 300)];
        ulong[] receiveNodes = [into.Ino, into.Ino, into.Ino, Abi.RootId, sv.Ino, snap.Ino, fileIno, d.Ino, NodeIds.Encode(999, Filesystem.RootIno)];
        ulong[] ids = [0, Tree(snap.Ino), Tree(snap2.Ino), Tree(sv.Ino), 5, 999, (ulong)rng.NextInt64()];
        int sent = 0, received = 0, refused = 0;
        for (int i = 0; i < Requests; i++)
        {
            bool send = rng.Next(2) == 0;
            var (readEnd, writeEnd, pipeIno) = Pipe();
            using var r = readEnd;
            using var w = writeEnd;
            int fd = (int)(send ? w : r).DangerousGetHandle();
            int named = rng.Next(12) switch { 0 => (int)(send ? r : w).DangerousGetHandle(), 1 => rng.Next(0, 200), _ => fd };
            ulong inode = rng.Next(12) == 0 ? pipeIno + (ulong)rng.Next(1, 5) : pipeIno;
            byte[] arg = new byte[16376];
            ulong node;
            if (send)
            {
                node = sendNodes[rng.Next(sendNodes.Length)];
                var name = rng.Next(8) switch { 0 => [], 1 => new byte[300], 2 => [0xff, 0xfe], 3 => "a/b"u8.ToArray(), _ => "s"u8.ToArray() };
                int clones = rng.Next(6) == 0 ? rng.Next(0, 4) : 0;
                BinaryPrimitives.WriteUInt32LittleEndian(arg, (uint)named);
                BinaryPrimitives.WriteUInt32LittleEndian(arg.AsSpan(4), (uint)(rng.Next(4) == 0 ? rng.Next(0, 5) : 1 + rng.Next(2)));
                BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), inode);
                BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(16), rng.Next(2) == 0 ? 0 : ids[rng.Next(ids.Length)]);
                BinaryPrimitives.WriteUInt32LittleEndian(arg.AsSpan(24), (uint)(rng.Next(8) == 0 ? rng.Next(0, 4) : 0));
                BinaryPrimitives.WriteUInt16LittleEndian(arg.AsSpan(28), (ushort)name.Length);
                BinaryPrimitives.WriteUInt16LittleEndian(arg.AsSpan(30), (ushort)(rng.Next(20) == 0 ? 60000 : clones));
                name.AsSpan(0, Math.Min(name.Length, 255)).CopyTo(arg.AsSpan(32));
                for (int k = 0; k < clones; k++) BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(288 + 8 * k), ids[rng.Next(ids.Length)]);
            }
            else
            {
                node = receiveNodes[rng.Next(receiveNodes.Length)];
                BinaryPrimitives.WriteUInt64LittleEndian(arg, (ulong)named);
                BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(8), inode);
            }
            if (rng.Next(15) == 0) arg[rng.Next(64)] ^= (byte)(1 << rng.Next(8));
            _last = $"seed {seed}, request {i}: {(send ? "send" : "receive")} on node {node}";
            int e = Ioctl(node, send ? FuseBridge.IocDaemonSend : FuseBridge.IocDaemonReceive, arg, out var body, noCaller: rng.Next(20) == 0);
            if (e != 0)
            {
                Assert.True(e != (int)Errno.EIO, $"{_last}: EIO");
                refused++;
                continue;
            }
            ulong token = BinaryPrimitives.ReadUInt64LittleEndian(body);
            long moved = 0;
            if (send)
            {
                // Read the stream to its end, as the command does.
                w.Dispose();
                using var input = new FileStream(r, FileAccess.Read, 0);
                var buf = new byte[1 << 16];
                var head = new List<byte>();
                int k;
                while ((k = input.Read(buf)) > 0)
                {
                    if (head.Count < 13) head.AddRange(buf.AsSpan(0, Math.Min(k, 13 - head.Count)).ToArray());
                    moved += k;
                }
                // The stream's header, unless the flags (2: `send -e`'s later subvolumes) said none.
                bool headerless = (BinaryPrimitives.ReadUInt32LittleEndian(arg.AsSpan(24)) & 2) != 0;
                if (moved > 0 && !headerless) Assert.Equal("btrfs-stream\0", Encoding.ASCII.GetString([.. head]));
            }
            else
            {
                r.Dispose();
                byte[] stream = rng.Next(6) switch
                {
                    0 => full[..rng.Next(0, full.Length)],
                    1 => Damaged(full, rng),
                    2 => RandomBytes(rng),
                    3 => inc,
                    _ => full,
                };
                using var pipe = new FileStream(w, FileAccess.Write, 0);
                try { pipe.Write(stream); } catch (IOException) { /* the daemon stopped reading: its outcome says why */ }
            }
            // The outcome, asked for as the command does.
            byte[] ask = new byte[16376];
            BinaryPrimitives.WriteUInt64LittleEndian(ask, token);
            var until = DateTime.UtcNow.AddSeconds(60);
            while ((e = Ioctl(Abi.RootId, FuseBridge.IocDaemonSendOutcome, ask, out body)) == (int)Errno.EAGAIN && DateTime.UtcNow < until) Thread.Sleep(2);
            Assert.True(e == 0, $"{_last}: the outcome answered {(Errno)e}");
            var result = (Errno)BinaryPrimitives.ReadInt32LittleEndian(body);
            int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(4));
            string words = Encoding.UTF8.GetString(body, 64, len);
            // On a memory device nothing fails for real: an EIO, or an exception's type in the
            // words, is a failure the daemon did not expect.
            Assert.False(result == Errno.EIO || System.Text.RegularExpressions.Regex.IsMatch(words, @"^\w+Exception: "), $"{_last}: {result}: {words}");
            if (result == Errno.OK)
            {
                if (send) Assert.Equal(moved, BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(16)));
                if (send) sent++; else received++;
            }
            else Assert.True(len > 0, $"{_last}: {result} without a reason");
        }
        // A run in which nothing got through proves nothing.
        Assert.True(sent > 0 && received > 0 && refused > 0, $"sent {sent}, received {received}, refused {refused}");
        streams.StopAll(TimeSpan.FromSeconds(10));
        Assert.Equal(0, streams.Running);
        lock (log) Assert.True(log.Count == 0, string.Join("\n", log));
        TestFs.Ok(fs.Sync());
        Assert.Equal(canary, TestFs.ReadAll(fs, canaryIno));
        Assert.Empty(fs.VerifyReservations());
        fs.Dispose();
        Assert.True(fs.LeakedBytes == 0, string.Join("; ", fs.LeakReports));
        FsckAssert.Clean(dev);
    }

    private static byte[] Damaged(byte[] stream, Random rng)
    {
        var x = (byte[])stream.Clone();
        for (int k = rng.Next(1, 6); k > 0; k--) x[rng.Next(x.Length)] ^= (byte)(1 << rng.Next(8));
        return x;
    }

    private static byte[] RandomBytes(Random rng)
    {
        var x = new byte[rng.Next(0, 5000)];
        rng.NextBytes(x);
        if (x.Length > 20 && rng.Next(2) == 0) "btrfs-stream\0\u0001\0\0\0"u8.CopyTo(x);
        return x;
    }


    [DllImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    private static extern int Pipe2([Out] int[] fds, int flags);

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern int Statx(int dirfd, string path, int flags, uint mask, [Out] byte[] buf);

    /// <summary>A pipe (close-on-exec) and its inode (statx: stx_ino at byte 32), as the command
    /// makes one.</summary>
    private static (SafeFileHandle Read, SafeFileHandle Write, ulong Ino) Pipe()
    {
        var fds = new int[2];
        Assert.Equal(0, Pipe2(fds, 0x80000));
        var buf = new byte[256];
        Assert.Equal(0, Statx(fds[0], "", 0x1000, 0x100, buf));
        return (new SafeFileHandle(fds[0], true), new SafeFileHandle(fds[1], true), BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(32)));
    }
}

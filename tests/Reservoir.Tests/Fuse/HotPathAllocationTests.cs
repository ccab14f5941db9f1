using System.Buffers.Binary;
using Reservoir.Engine;
using Reservoir.Engine.Data;
using Reservoir.Engine.Tx;
using Reservoir.Fuse.Bridge;
using Reservoir.Fuse.Protocol;
using Reservoir.Fuse.Session;
using Xunit;
using static Reservoir.Tests.TestFs;
using static Reservoir.Tests.Fuse.BridgeFuzzTests;

namespace Reservoir.Tests.Fuse;

/// <summary>
/// The brief's rule for hot paths, no allocation per block, held where a request is most
/// frequent: a 4 KiB read of a cached page, an overwrite of a dirty one, getattr and a cached
/// lookup, in the engine and as FUSE requests through the bridge (decoding, engine call,
/// reply), with the file dirty (st_blocks then counts its pending data) and quotas on in a
/// snapshotted subvolume. Counted on the calling thread only, after a warm-up, so that the
/// flusher's and the JIT's work elsewhere does not count. Each of these allocated before:
/// Guard's closure in every inode lookup (104 bytes a call), a list per write chunk, a tree
/// path per directory lookup, the pending-bytes lists of a stat, the closures of the ACL and
/// privilege checks (up to 628 bytes a FUSE LOOKUP); `Reservoir.Bench --alloc` prints the
/// figures for these and for the paths that allocate by design (new pages, new inodes).
/// </summary>
public class HotPathAllocationTests : IDisposable
{
    private const int Calls = 2_000;
    private readonly Filesystem _fs;
    private readonly ulong _dir, _file;

    public HotPathAllocationTests()
    {
        var dopt = new DataOptions { WritebackIntervalMs = 0, DirtyPercent = 100, DirtyBackgroundPercent = 100 };
        _fs = Filesystem.Mount(NewDevice(128UL << 20), new MountOptions { CommitIntervalMs = 0 }, dopt);
        Ok(_fs.EnableQuota());
        Ok(_fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out var sv));
        _dir = sv.Ino;
        _file = CreateFile(_fs, _dir, "f", new byte[1 << 20]);
        Ok(_fs.Sync());
        Ok(_fs.CreateSnapshot(_dir, Filesystem.RootIno, "snap", readOnly: true, out _));
        // Dirty, over extents the snapshot shares: the pages are cached and reserved.
        Ok(_fs.Write(_file, 0, new byte[256 << 10], out _));
    }

    public void Dispose() => _fs.Dispose();

    /// <summary>Bytes the calling thread allocates per call of <paramref name="op"/>, after
    /// as many calls to warm up: the least of three rounds. An allocation per call shows in
    /// every round; a one-off does not fail the rule "nothing per block" (a full suite's CI run
    /// once measured 1.28 bytes a WRITE: some 2.5 KB allocated once in 2,000 calls, never
    /// again in isolation).</summary>
    private static double BytesPerCall(Action op)
    {
        for (int i = 0; i < Calls; i++) op();
        double least = double.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < Calls; i++) op();
            least = Math.Min(least, (GC.GetAllocatedBytesForCurrentThread() - before) / (double)Calls);
        }
        return least;
    }

    [Fact]
    public void EngineReadsOverwritesStatsAndLookupsAllocateNothing()
    {
        var block = new byte[4096];
        int k = 0;
        var name = "f"u8.ToArray();
        var costs = new Dictionary<string, double>
        {
            ["read"] = BytesPerCall(() => Ok(_fs.Read(_file, (ulong)(k++ % 64) * 4096, block, out _))),
            ["overwrite"] = BytesPerCall(() => Ok(_fs.Write(_file, (ulong)(k++ % 64) * 4096, block, out _))),
            ["getattr"] = BytesPerCall(() => Ok(_fs.GetAttr(_file, out _))),
            ["lookup"] = BytesPerCall(() => Ok(_fs.Lookup(_dir, name, out _))),
        };
        Assert.All(costs, c => Assert.True(c.Value < 1, $"{c.Key}: {c.Value:F0} bytes a call"));
    }

    [Fact]
    public void FuseReadsWritesGetattrsAndLookupsAllocateNothing()
    {
        var bridge = new FuseBridge(_fs, new FuseMountOptions(), _ => { });
        var reply = new byte[1 << 16];
        int Handle(byte[] msg)
        {
            int n = bridge.Handle(msg, reply);
            // Checked without Assert, which allocates on its own.
            if (BinaryPrimitives.ReadInt32LittleEndian(reply.AsSpan(4)) != 0) throw new Xunit.Sdk.XunitException($"request failed: {BinaryPrimitives.ReadInt32LittleEndian(reply.AsSpan(4))}");
            return n;
        }
        Handle(BridgeTests.Request(Opcode.Init, 1, 0, 0, 0, [.. U32(7), .. U32(Abi.KernelMinor), .. U32(128 << 10), .. U32(0)]));
        Handle(BridgeTests.Request(Opcode.Open, 2, _file, 0, 0, [.. U32(2), .. U32(0)]));
        ulong fh = BinaryPrimitives.ReadUInt64LittleEndian(reply.AsSpan(Abi.OutHeaderSize));
        // fuse_read_in / fuse_write_in: fh, offset, size, flags, lock_owner, flags, padding.
        var io = new byte[40];
        BinaryPrimitives.WriteUInt64LittleEndian(io, fh);
        BinaryPrimitives.WriteUInt64LittleEndian(io.AsSpan(8), 8192);
        BinaryPrimitives.WriteUInt32LittleEndian(io.AsSpan(16), 4096);
        var read = BridgeTests.Request(Opcode.Read, 3, _file, 0, 0, io);
        var write = BridgeTests.Request(Opcode.Write, 4, _file, 0, 0, [.. io, .. Enumerable.Repeat((byte)0x5A, 4096)]);
        var getattr = BridgeTests.Request(Opcode.Getattr, 5, _file, 0, 0, new byte[16]);
        var lookup = BridgeTests.Request(Opcode.Lookup, 6, _dir, 0, 0, [.. "f"u8, 0]);
        var costs = new Dictionary<string, double>
        {
            ["READ"] = BytesPerCall(() => Handle(read)),
            ["WRITE"] = BytesPerCall(() => Handle(write)),
            ["GETATTR"] = BytesPerCall(() => Handle(getattr)),
            ["LOOKUP"] = BytesPerCall(() => Handle(lookup)),
        };
        Assert.All(costs, c => Assert.True(c.Value < 1, $"{c.Key}: {c.Value:F0} bytes a call"));
        // And the replies are the real ones: the read returns the block the write put there.
        Assert.Equal(Abi.OutHeaderSize + 4096, Handle(read));
        Assert.All(reply.AsSpan(Abi.OutHeaderSize, 4096).ToArray(), b => Assert.Equal(0x5A, b));
    }
}

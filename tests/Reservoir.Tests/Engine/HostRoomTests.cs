using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Xunit;
using static Reservoir.Tests.TestFs;

namespace Reservoir.Tests.Engine;

/// <summary>
/// A sparse image on a host with less room than the image (SpaceManager.HostRoom.cs): the host
/// gives blocks at the first write and refuses when it has none left. Every write must then
/// be answered ENOSPC at write time, never accepted and lost at writeback; the filesystem keeps
/// taking changes, and space freed inside it is written again.
/// </summary>
public class HostRoomTests
{
    private const ulong Root = Filesystem.RootIno;

    /// <summary>
    /// A 64 MiB image whose host takes 24 MiB: files written until ENOSPC, each write and every
    /// fsync and sync either succeeding or ENOSPC at the call (the device never refuses a write,
    /// which failed the commit and stopped the filesystem before), every file kept reads back,
    /// after deleting one the same room is written again, no reservation is left, fsck clean.
    /// </summary>
    [Fact]
    public void AFullHostIsENOSPCAtTheWriteAndTheFilesystemGoesOn()
    {
        var inner = NewDevice(64UL << 20);
        var dev = new SmallHost(inner, 24UL << 20);
        var kept = new Dictionary<string, byte[]>();
        var rng = new Random(7);
        using (var fs = Mount(dev))
        {
            Errno last = Errno.OK;
            for (int i = 0; i < 64 && last == Errno.OK; i++)
            {
                var data = new byte[1 << 20];
                rng.NextBytes(data);
                Ok(fs.Create(Root, $"f{i}", 0x1A4, 0, 0, out var a));
                last = fs.Write(a.Ino, 0, data, out _);
                if (last == Errno.OK) last = fs.Fsync(a.Ino);
                if (last == Errno.OK) kept[$"f{i}"] = data;
                else Assert.Equal(Errno.ENOSPC, last);
            }
            Assert.Equal(Errno.ENOSPC, last);
            Assert.InRange(kept.Count, 8, 23); // the host's room, less the metadata's
            Ok(fs.Sync());
            Assert.Equal(0, dev.Refused);
            Assert.Null(fs.Fs.FailedReason);
            foreach (var (name, data) in kept)
            {
                Ok(fs.Lookup(Root, name, out var a));
                Assert.Equal(data, ReadAll(fs, a.Ino));
            }
            // Space freed inside the image is the host's room still: written again.
            var first = kept.Keys.First();
            Ok(fs.Unlink(Root, first));
            kept.Remove(first);
            Ok(fs.Sync());
            Ok(fs.Sync());
            var again = new byte[1 << 20];
            rng.NextBytes(again);
            Ok(fs.Create(Root, "again", 0x1A4, 0, 0, out var g));
            Ok(fs.Write(g.Ino, 0, again, out _));
            Ok(fs.Fsync(g.Ino));
            kept["again"] = again;
            Ok(fs.Sync());
            Assert.Equal(0, dev.Refused);
            Assert.Empty(fs.VerifyReservations());
        }
        FsckAssert.Clean(inner);
        using (var fs = Mount(dev))
            foreach (var (name, data) in kept)
            {
                Ok(fs.Lookup(Root, name, out var a));
                Assert.Equal(data, ReadAll(fs, a.Ino));
            }
    }

    /// <summary>
    /// A trim gives room back to the host, and what it punched must be asked for again before
    /// it is written: with the host's room then taken by others, a write into the filesystem
    /// (which has the free space) is ENOSPC at the call, nothing is refused at writeback and
    /// the filesystem goes on; once the host has room again, the same write succeeds.
    /// </summary>
    [Fact]
    public void TrimmedRoomIsAskedForAgainBeforeItIsWritten()
    {
        var inner = NewDevice(64UL << 20);
        var dev = new SmallHost(inner, 40UL << 20);
        using var fs = Mount(dev);
        var data = new byte[8 << 20];
        new Random(3).NextBytes(data);
        CreateFile(fs, Root, "a", data);
        Ok(fs.Unlink(Root, "a"));
        Ok(fs.Sync());
        ulong before = dev.HostBytes;
        Ok(fs.Trim(0, ulong.MaxValue, 0, out ulong trimmed));
        Assert.True(trimmed >= 8UL << 20, $"trimmed {trimmed}");
        Assert.True(dev.HostBytes <= before - (8UL << 20), $"host {before} -> {dev.HostBytes}");
        dev.Capacity = dev.HostBytes; // others take the room the trim gave back
        // The trim gave back metadata room too: the create may be the call that says so.
        var e = fs.Create(Root, "b", 0x1A4, 0, 0, out var b);
        if (e == Errno.OK) e = fs.Write(b.Ino, 0, data, out _);
        if (e == Errno.OK) e = fs.Fsync(b.Ino);
        Assert.Equal(Errno.ENOSPC, e);
        Ok(fs.Sync());
        Assert.Equal(0, dev.Refused);
        Assert.Null(fs.Fs.FailedReason);
        dev.Capacity = 40UL << 20;
        if (fs.Lookup(Root, "b", out b) != Errno.OK) Ok(fs.Create(Root, "b", 0x1A4, 0, 0, out b));
        Ok(fs.Truncate(b.Ino, 0));
        Ok(fs.Write(b.Ino, 0, data, out _));
        Ok(fs.Fsync(b.Ino));
        Ok(fs.Sync());
        Assert.Equal(0, dev.Refused);
        Assert.Equal(data, ReadAll(fs, b.Ino));
        Assert.Empty(fs.VerifyReservations());
    }

    /// <summary>A host of limited room over a memory device: 4 KiB blocks are the host's once
    /// written or allocated (MakeRoom), until discarded; a write that needs more blocks than the
    /// host has left is refused as a full host refuses pwrite (ENOSPC, an I/O error here).
    /// The first MiB (the superblock), which mkfs wrote before the host was put under the
    /// image, is the host's from the start, as on a real host, where nothing punches it.</summary>
    private sealed class SmallHost(MemoryBlockDevice inner, ulong capacity) : IBlockDevice
    {
        private const ulong Block = 4096;
        private readonly object _lock = new(); // guards _held and capacity
        private readonly HashSet<ulong> _held = [.. Enumerable.Range(0, (int)(Reservoir.Format.FormatConstants.ReservedPrefix / Block)).Select(b => (ulong)b)];
        public int Refused;

        /// <summary>What the host may give in all (lowered: others took the rest).</summary>
        public ulong Capacity { get { lock (_lock) return capacity; } set { lock (_lock) capacity = value; } }
        public ulong HostBytes { get { lock (_lock) return (ulong)_held.Count * Block; } }
        public ulong Size => inner.Size;
        public bool ReadOnly => inner.ReadOnly;
        public void Read(ulong offset, Span<byte> buffer) => inner.Read(offset, buffer);

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (Take(offset, (ulong)data.Length) != Errno.OK)
            {
                Interlocked.Increment(ref Refused);
                throw new DeviceIOException("write failed: No space left on device (errno 28)", offset);
            }
            inner.Write(offset, data);
        }

        public void Flush() => inner.Flush();

        public ulong Discard(ulong offset, ulong length)
        {
            lock (_lock)
                for (ulong b = (offset + Block - 1) / Block; (b + 1) * Block <= offset + length; b++) _held.Remove(b);
            return inner.Discard(offset, length);
        }

        public bool HasRoom(ulong offset, ulong length)
        {
            lock (_lock)
                for (ulong b = offset / Block; b * Block < offset + length; b++)
                    if (!_held.Contains(b)) return false;
            return true;
        }

        public Errno MakeRoom(ulong offset, ulong length) => Take(offset, length);

        private Errno Take(ulong offset, ulong length)
        {
            lock (_lock)
            {
                ulong first = offset / Block, end = (offset + length + Block - 1) / Block, need = 0;
                for (ulong b = first; b < end; b++) if (!_held.Contains(b)) need++;
                if (((ulong)_held.Count + need) * Block > capacity) return Errno.ENOSPC;
                for (ulong b = first; b < end; b++) _held.Add(b);
                return Errno.OK;
            }
        }

        public void Dispose() { }
    }
}

using Reservoir.Common;

namespace Reservoir.Device;

/// <summary>
/// A device that remembers which writes have not been flushed, so a test can "cut the power"
/// at any write or flush and get back an image in which each unflushed write either reached the
/// disk or did not, independently (which models reordering), optionally torn at 512-byte
/// sectors. A discard is an unflushed change like a write: the range reads zeros at once, and
/// after a power cut it was applied whole or not at all, as a drive may apply a discard early
/// or late. After <see cref="CutAfterOps"/> operations the device dies: every later call throws.
/// Also injects IO errors on chosen operations (<see cref="FailWhen"/>).
/// </summary>
public sealed class CrashSimDevice : IBlockDevice
{
    private readonly MemoryBlockDevice _durable;
    private readonly MemoryBlockDevice _current;
    /// <summary>Unflushed writes, and discards (Data null, Length bytes), in order.</summary>
    private readonly List<(ulong Offset, byte[]? Data, ulong Length)> _pending = new();
    private readonly object _lock = new(); // guards _pending, counters and the two images
    public ulong Size => _durable.Size;
    public bool ReadOnly => false;

    /// <summary>Writes and flushes seen so far (the "cut points").</summary>
    public long Ops { get; private set; }
    public long Writes { get; private set; }
    public long Flushes { get; private set; }
    /// <summary>When Ops reaches this number the device dies before performing the operation.</summary>
    public long CutAfterOps { get; set; } = long.MaxValue;
    public bool Dead { get; private set; }
    /// <summary>The next flush cuts the power instead (the device dies before flushing).</summary>
    public bool CutAtNextFlush { get; set; }
    /// <summary>Return true to fail an operation with EIO: (isWrite, offset, length).</summary>
    public Func<bool, ulong, int, bool>? FailWhen { get; set; }

    public CrashSimDevice(ulong size) : this(new MemoryBlockDevice(size)) { }

    public CrashSimDevice(MemoryBlockDevice initial)
    {
        _durable = initial.Clone();
        _current = initial.Clone();
    }

    public void Read(ulong offset, Span<byte> buffer)
    {
        lock (_lock)
        {
            if (Dead) throw new DeviceIOException("power cut", offset);
            if (FailWhen?.Invoke(false, offset, buffer.Length) == true) throw new DeviceIOException("injected read error", offset);
            _current.Read(offset, buffer);
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            Tick(offset);
            if (FailWhen?.Invoke(true, offset, data.Length) == true) throw new DeviceIOException("injected write error", offset);
            Writes++;
            _current.Write(offset, data);
            _pending.Add((offset, data.ToArray(), (ulong)data.Length));
        }
    }

    public ulong Discard(ulong offset, ulong length)
    {
        lock (_lock)
        {
            Tick(offset);
            Writes++;
            ulong n = _current.Discard(offset, length);
            _pending.Add((offset, null, n));
            return n;
        }
    }

    public bool CanResize => true;

    /// <summary>A change of size is an operation (a cut point) made durable at once, as an image
    /// file's resize is (ftruncate and fsync). What a shrink cuts is gone from both images, and
    /// unflushed writes and discards there are dropped (or clipped).</summary>
    public void Resize(ulong newSize)
    {
        lock (_lock)
        {
            Tick(newSize);
            _durable.Resize(newSize);
            _current.Resize(newSize);
            for (int i = _pending.Count - 1; i >= 0; i--)
            {
                var (off, d, n) = _pending[i];
                if (off >= newSize) _pending.RemoveAt(i);
                else if (off + n > newSize) _pending[i] = (off, d?[..(int)(newSize - off)], newSize - off);
            }
        }
    }

    private static void Apply(MemoryBlockDevice img, ulong offset, byte[]? data, ulong length)
    {
        if (data == null) img.Discard(offset, length);
        else img.Write(offset, data);
    }

    public void Flush()
    {
        lock (_lock)
        {
            Tick(ulong.MaxValue);
            if (CutAtNextFlush)
            {
                Dead = true;
                throw new DeviceIOException("power cut", ulong.MaxValue);
            }
            Flushes++;
            foreach (var (off, d, n) in _pending) Apply(_durable, off, d, n);
            _pending.Clear();
        }
    }

    private void Tick(ulong offset)
    {
        if (Dead) throw new DeviceIOException("power cut", offset);
        if (Ops >= CutAfterOps)
        {
            Dead = true;
            throw new DeviceIOException("power cut", offset);
        }
        Ops++;
    }

    /// <summary>The image as it would be after a power cut now: flushed writes, plus each
    /// unflushed write kept with probability 1/2 (whole or, if <paramref name="tear"/>, cut at a
    /// random 512-byte boundary).</summary>
    public MemoryBlockDevice ImageAfterPowerCut(Random rng, bool tear = false)
    {
        lock (_lock)
        {
            var img = _durable.Clone();
            foreach (var (off, d, n) in _pending)
            {
                if (rng.Next(2) == 0) continue;
                if (d == null) { img.Discard(off, n); continue; }
                int len = d.Length;
                if (tear && len > 512 && rng.Next(4) == 0) len = rng.Next(1, len / 512) * 512;
                img.Write(off, d.AsSpan(0, len));
            }
            return img;
        }
    }

    /// <summary>The image after a power cut that kept exactly the unflushed writes
    /// <paramref name="keep"/> chooses, by (offset, length): to build a given torn state.</summary>
    public MemoryBlockDevice ImageAfterPowerCut(Func<ulong, int, bool> keep)
    {
        lock (_lock)
        {
            var img = _durable.Clone();
            foreach (var (off, d, n) in _pending)
                if (keep(off, (int)Math.Min(n, int.MaxValue))) Apply(img, off, d, n);
            return img;
        }
    }

    /// <summary>What a power cut that loses every unflushed write would leave: the durable image.</summary>
    public MemoryBlockDevice DurableImage()
    {
        lock (_lock) return _durable.Clone();
    }

    /// <summary>The image with every write applied, as if the power stayed on.</summary>
    public MemoryBlockDevice ImageNow()
    {
        lock (_lock) return _current.Clone();
    }

    public int PendingWrites { get { lock (_lock) return _pending.Count; } }

    public void Dispose() { }
}

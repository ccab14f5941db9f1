using System.Buffers.Binary;

namespace Reservoir.Format;

/// <summary>12 bytes on disk: i64 seconds since the epoch, u32 nanoseconds.</summary>
public readonly record struct Timespec(long Sec, uint Nsec) : IComparable<Timespec>
{
    /// <summary>Earlier first: by seconds, then nanoseconds.</summary>
    public int CompareTo(Timespec other) => Sec != other.Sec ? Sec.CompareTo(other.Sec) : Nsec.CompareTo(other.Nsec);

    public const int Size = 12;

    public static Timespec Read(ReadOnlySpan<byte> s) =>
        new(BinaryPrimitives.ReadInt64LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[8..]));

    public void Write(Span<byte> s)
    {
        BinaryPrimitives.WriteInt64LittleEndian(s, Sec);
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], Nsec);
    }

    public static Timespec Now()
    {
        long ticks = DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks;
        return new Timespec(ticks / TimeSpan.TicksPerSecond, (uint)(ticks % TimeSpan.TicksPerSecond * 100));
    }

    public DateTime ToDateTime() => DateTime.UnixEpoch.AddTicks(Sec * TimeSpan.TicksPerSecond + Nsec / 100);
}

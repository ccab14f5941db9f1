namespace Reservoir.Common;

/// <summary>
/// A uuid as text the way btrfs-progs and RFC 4122 write it: its 16 stored bytes in order.
/// (.NET's Guid.ToString reads the first three fields little-endian, so the same bytes would
/// print differently, and a subvolume received from btrfs would not show the uuid `btrfs
/// subvolume show` gives its source.)
/// </summary>
public static class UuidText
{
    public static string Of(Guid stored)
    {
        Span<byte> b = stackalloc byte[16];
        stored.TryWriteBytes(b);
        return new Guid(b, bigEndian: true).ToString();
    }

    /// <summary><see cref="Of"/>, or "-" for the zero uuid (none), as btrfs-progs prints it.</summary>
    public static string OrDash(Guid stored) => stored == Guid.Empty ? "-" : Of(stored);

    public static string? OrNull(Guid stored) => stored == Guid.Empty ? null : Of(stored);

    /// <summary>The stored form of a uuid written as <see cref="Of"/> writes it; false for text
    /// that is no uuid.</summary>
    public static bool TryParse(string text, out Guid stored)
    {
        stored = Guid.Empty;
        if (!Guid.TryParse(text, out var g)) return false;
        Span<byte> b = stackalloc byte[16];
        g.TryWriteBytes(b, bigEndian: true, out _);
        stored = new Guid(b);
        return true;
    }
}

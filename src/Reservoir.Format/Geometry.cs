namespace Reservoir.Format;

/// <summary>
/// How the device is cut into block group slots (SPEC.md §1): after the first MiB, slot i
/// starts at 1 MiB + i·G and is min(G, end − start) long; a slot shorter than four nodes is
/// never used.
/// </summary>
public static class Geometry
{
    public const ulong MinGroupSize = 1UL << 20, MaxGroupSize = 1UL << 30;

    /// <summary>The group size mkfs chooses for a filesystem of <paramref name="totalBytes"/>
    /// (and a mount derives when the superblock has no GROUP_SIZE feature): the largest power
    /// of two ≤ an eighth of the space after the first MiB, from 1 MiB to 1 GiB, at least 16
    /// nodes.</summary>
    public static ulong DerivedGroupSize(ulong totalBytes, int nodeSize)
    {
        ulong usable = totalBytes > FormatConstants.ReservedPrefix ? totalBytes - FormatConstants.ReservedPrefix : 0;
        ulong g = MinGroupSize;
        while (g * 2 <= usable / 8 && g < MaxGroupSize) g *= 2;
        return Math.Max(g, 16UL * (ulong)nodeSize);
    }

    /// <summary>A stored group size (GROUP_SIZE): a power of two from 1 MiB (and 16 nodes)
    /// to 1 GiB.</summary>
    public static bool ValidGroupSize(ulong g, int nodeSize) =>
        g >= Math.Max(MinGroupSize, 16UL * (ulong)nodeSize) && g <= MaxGroupSize && (g & (g - 1)) == 0;

    /// <summary>Whether a slot of <paramref name="len"/> bytes can hold a group.</summary>
    public static bool UsableSlot(ulong len, int nodeSize) => len >= 4UL * (ulong)nodeSize;
}

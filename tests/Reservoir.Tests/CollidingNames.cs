using Reservoir.Format.Items;

namespace Reservoir.Tests;

/// <summary>
/// Names whose hash (<see cref="NameHash"/>: CRC32C seeded as btrfs's name hash) is one chosen
/// value, as someone filling a directory's or an inode's hash chain on purpose would make them:
/// a prefix, then four bytes that steer the CRC to the target (CRC is linear, so the bytes are
/// found by running the register backwards from the target). Names holding '/' or NUL are
/// passed over.
/// </summary>
internal static class CollidingNames
{
    private const uint Poly = 0x82F63B78; // CRC32C, reflected
    private static readonly uint[] Table = BuildTable();
    private static readonly byte[] IndexOfTop = BuildIndexOfTop();

    public static List<byte[]> Make(int count, ulong hash, string prefix = "c")
    {
        var names = new List<byte[]>();
        for (int k = 0; names.Count < count; k++)
        {
            var name = Forge(System.Text.Encoding.ASCII.GetBytes($"{prefix}{k:D6}"), (uint)hash);
            if (Array.IndexOf(name, (byte)'/') >= 0 || Array.IndexOf(name, (byte)0) >= 0) continue;
            if (NameHash.Of(name) != hash) throw new InvalidOperationException("forged name misses its hash");
            names.Add(name);
        }
        return names;
    }

    private static byte[] Forge(byte[] prefix, uint hash)
    {
        uint state = Run(~0xFFFFFFFEu, prefix), goal = ~hash;
        // Backwards from the goal: each step's table index is fixed by the register's top byte.
        var idx = new byte[4];
        uint s = goal;
        for (int i = 3; i >= 0; i--)
        {
            idx[i] = IndexOfTop[s >> 24];
            s = (s ^ Table[idx[i]]) << 8;
        }
        var name = new byte[prefix.Length + 4];
        prefix.CopyTo(name, 0);
        for (int i = 0; i < 4; i++)
        {
            byte b = (byte)((state ^ idx[i]) & 0xFF);
            name[prefix.Length + i] = b;
            state = Table[(state ^ b) & 0xFF] ^ (state >> 8);
        }
        return name;
    }

    private static uint Run(uint state, ReadOnlySpan<byte> data)
    {
        foreach (var b in data) state = Table[(state ^ b) & 0xFF] ^ (state >> 8);
        return state;
    }

    private static uint[] BuildTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ Poly : c >> 1;
            t[n] = c;
        }
        return t;
    }

    private static byte[] BuildIndexOfTop()
    {
        var r = new byte[256];
        for (int i = 0; i < 256; i++) r[Table[i] >> 24] = (byte)i;
        return r;
    }
}

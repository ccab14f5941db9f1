using System.Globalization;

namespace Reservoir.Common;

public static class Units
{
    /// <summary>Parses "4096", "64K", "16M", "2G", "1T", "1P", "1E" (binary multiples).</summary>
    public static bool TryParseSize(string text, out ulong bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text)) return false;
        text = text.Trim();
        ulong mult = 1;
        char last = char.ToUpperInvariant(text[^1]);
        if (last == 'B' && text.Length > 1 && char.IsLetter(text[^2])) { text = text[..^1]; last = char.ToUpperInvariant(text[^1]); }
        switch (last)
        {
            case 'K': mult = 1UL << 10; break;
            case 'M': mult = 1UL << 20; break;
            case 'G': mult = 1UL << 30; break;
            case 'T': mult = 1UL << 40; break;
            case 'P': mult = 1UL << 50; break;
            case 'E': mult = 1UL << 60; break;
        }
        if (mult != 1) text = text[..^1];
        if (!ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n)) return false;
        if (n > ulong.MaxValue / mult) return false;
        bytes = n * mult;
        return true;
    }

    public static string Human(ulong bytes)
    {
        string[] u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = bytes; int i = 0;
        while (v >= 1024 && i < u.Length - 1) { v /= 1024; i++; }
        return i == 0 ? $"{bytes}B" : v.ToString(v >= 100 ? "0" : v >= 10 ? "0.0" : "0.00", CultureInfo.InvariantCulture) + u[i];
    }

    public static ulong AlignUp(ulong v, ulong a) => (v + a - 1) / a * a;
    public static ulong AlignDown(ulong v, ulong a) => v / a * a;
}

namespace Reservoir.Cli.Commands;

/// <summary>btrfs-progs' <c>--sort=key,-key,+key</c>: rows compared key by key in the order
/// given, each ascending unless preceded by '-', then by a tie-break (the listing's own order).</summary>
internal static class SortSpec
{
    public static Comparison<T> Parse<T>(string? spec, IReadOnlyDictionary<string, Comparison<T>> keys, Comparison<T> tieBreak)
    {
        var order = new List<(Comparison<T> Compare, bool Descending)>();
        if (!string.IsNullOrEmpty(spec))
            foreach (var raw in spec.Split(','))
            {
                string name = raw.TrimStart('+', '-');
                if (!keys.TryGetValue(name, out var compare))
                    throw new ArgumentException($"--sort: unknown key '{name}' ({string.Join(", ", keys.Keys)})");
                order.Add((compare, raw.StartsWith('-')));
            }
        return (a, b) =>
        {
            foreach (var (compare, descending) in order)
            {
                int c = compare(a, b);
                if (c != 0) return descending ? -c : c;
            }
            return tieBreak(a, b);
        };
    }
}

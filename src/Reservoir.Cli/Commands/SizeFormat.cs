using System.CommandLine;
using System.Globalization;

namespace Reservoir.Cli.Commands;

/// <summary>
/// How btrfs-progs prints sizes (its pretty_size_mode), so that `reservoir qgroup show` reads
/// like `btrfs qgroup show`: human-readable with base 1024 by default ("5.02MiB", "0.00B"),
/// <c>--si</c> for base 1000 ("5.26MB"), <c>--raw</c> for bytes, and <c>--kbytes</c> …
/// <c>--tbytes</c> for one fixed unit in either base.
/// </summary>
internal sealed class SizeFormat
{
    private static readonly string[] Iec = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    private static readonly string[] Si = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];

    private readonly bool _raw, _si;
    private readonly int _fixedUnit; // 0: the largest unit below the value; 1…4: KiB…TiB

    private SizeFormat(bool raw, bool si, int fixedUnit) => (_raw, _si, _fixedUnit) = (raw, si, fixedUnit);

    /// <summary>btrfs-progs' default: base 1024, the largest unit below the value.</summary>
    public static readonly SizeFormat Human = new(false, false, 0);

    /// <summary>Bytes, as --raw prints them.</summary>
    public static readonly SizeFormat Raw = new(true, false, 0);

    public string Format(ulong bytes)
    {
        if (_raw) return bytes.ToString(CultureInfo.InvariantCulture);
        var units = _si ? Si : Iec;
        double b = _si ? 1000 : 1024, v = bytes;
        int i = 0;
        if (_fixedUnit > 0) for (; i < _fixedUnit; i++) v /= b;
        else for (; v >= b && i < units.Length - 1; i++) v /= b;
        // Two decimals always, as btrfs-progs prints them ("%.2f").
        return v.ToString("0.00", CultureInfo.InvariantCulture) + units[i];
    }

    /// <summary>The unit options of btrfs-progs' size-printing commands, added to a command.</summary>
    /// <param name="shortUnits">Also the short forms `filesystem usage` and `df` have: -k, -m,
    /// -g, -t for the units and -H for human-readable with base 1000 (qgroup show has none).</param>
    public sealed class Options(bool shortUnits = false)
    {
        public readonly Option<bool> Raw = new("--raw") { Description = "Print raw byte counts" };
        public readonly Option<bool> Human = new("--human-readable", "-h") { Description = "Human-friendly sizes, base 1024 (the default); --help for help" };
        public readonly Option<bool> IecBase = new("--iec") { Description = "Use 1024 as a base (KiB, MiB, GiB, TiB)" };
        public readonly Option<bool> SiBase = shortUnits ? new("--si", "-H") { Description = "Use 1000 as a base (kB, MB, GB, TB)" } : new("--si") { Description = "Use 1000 as a base (kB, MB, GB, TB)" };
        public readonly Option<bool>[] Units = shortUnits
            ?
            [
                new("--kbytes", "-k") { Description = "Sizes in KiB, or kB with --si" },
                new("--mbytes", "-m") { Description = "Sizes in MiB, or MB with --si" },
                new("--gbytes", "-g") { Description = "Sizes in GiB, or GB with --si" },
                new("--tbytes", "-t") { Description = "Sizes in TiB, or TB with --si" },
            ]
            :
            [
                new("--kbytes") { Description = "Sizes in KiB, or kB with --si" },
                new("--mbytes") { Description = "Sizes in MiB, or MB with --si" },
                new("--gbytes") { Description = "Sizes in GiB, or GB with --si" },
                new("--tbytes") { Description = "Sizes in TiB, or TB with --si" },
            ];

        public void AddTo(Command cmd)
        {
            cmd.Options.Add(Raw);
            cmd.Options.Add(Human);
            cmd.Options.Add(IecBase);
            cmd.Options.Add(SiBase);
            foreach (var u in Units) cmd.Options.Add(u);
        }

        /// <summary>The format asked for; a clear error for two that contradict each other.</summary>
        public SizeFormat Read(ParseResult pr)
        {
            int unit = 0;
            for (int i = 0; i < Units.Length; i++)
                if (pr.GetValue(Units[i]))
                {
                    if (unit != 0) throw new ArgumentException("only one of --kbytes, --mbytes, --gbytes and --tbytes may be given");
                    unit = i + 1;
                }
            bool raw = pr.GetValue(Raw), si = pr.GetValue(SiBase);
            if (si && pr.GetValue(IecBase)) throw new ArgumentException("--si and --iec contradict each other");
            if (raw && (unit != 0 || si || pr.GetValue(IecBase) || pr.GetValue(Human)))
                throw new ArgumentException("--raw prints bytes: it takes no other unit option");
            return new SizeFormat(raw, si, unit);
        }
    }
}

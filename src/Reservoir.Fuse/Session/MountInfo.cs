using System.Text;

namespace Reservoir.Fuse.Session;

/// <summary>
/// One line of /proc/self/mountinfo (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
/// [OPTIONAL…] - FSTYPE SOURCE SUPEROPTIONS". Paths come unescaped (the kernel writes space, tab,
/// newline and backslash as \040, \011, \012, \134).
/// </summary>
public sealed record MountInfo(int Id, int ParentId, string MountPoint, string FsType, string Source)
{
    /// <summary>A Reservoir mount: the main one (fuseblk.reservoir as root, else fuse.reservoir)
    /// or a subvolume's own (always fuse.reservoir).</summary>
    public bool IsReservoir => FsType is "fuse.reservoir" or "fuseblk.reservoir";

    /// <summary>This process's mount table, in mount order (a later mount on the same point is on top).</summary>
    public static List<MountInfo> Read()
    {
        var list = new List<MountInfo>();
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
            if (Parse(line) is { } m) list.Add(m);
        return list;
    }

    /// <summary>The mount on top at <paramref name="mountPoint"/> (an absolute path without a
    /// trailing slash), or null.</summary>
    public static MountInfo? At(string mountPoint) => At(Read(), mountPoint);

    public static MountInfo? At(List<MountInfo> table, string mountPoint) => table.LastOrDefault(m => m.MountPoint == mountPoint);

    internal static MountInfo? Parse(string line)
    {
        var f = line.Split(' ');
        if (f.Length < 10) return null;
        int dash = Array.IndexOf(f, "-", 6);
        if (dash < 0 || dash + 2 >= f.Length) return null;
        if (!int.TryParse(f[0], out int id) || !int.TryParse(f[1], out int parent)) return null;
        return new MountInfo(id, parent, Unescape(f[4]), Unescape(f[dash + 1]), Unescape(f[dash + 2]));
    }

    private static string Unescape(string s)
    {
        if (s.IndexOf('\\') < 0) return s;
        // Only space, tab, newline and backslash are escaped: each one ASCII character.
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) && IsOctal(s[i + 3]))
            {
                sb.Append((char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
                i += 3;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private static bool IsOctal(char c) => c is >= '0' and <= '7';
}

using System.Text;

namespace Reservoir.Tests.Model;

/// <summary>
/// A reference model of a POSIX namespace: plain objects, no persistence, obviously correct.
/// Tests apply the same operations to it and to the engine and compare.
/// </summary>
internal sealed class MNode
{
    public ulong Ino;
    public char Kind; // 'f' file, 'd' dir, 'l' symlink, 'p' fifo
    public byte[] Data = [];
    public string Target = "";
    public uint Perm = 0x1A4;
    public readonly SortedDictionary<string, MNode> Children = new(StringComparer.Ordinal);
    public readonly SortedDictionary<string, byte[]> Xattrs = new(StringComparer.Ordinal);
    public int Links;
    public MNode? Parent; // directories only

    public bool IsDir => Kind == 'd';
}

internal sealed class ModelFs
{
    public MNode Root { get; } = new() { Kind = 'd', Ino = 256, Links = 2, Perm = 0x1ED };

    public IEnumerable<MNode> AllDirs()
    {
        var st = new Stack<MNode>();
        st.Push(Root);
        while (st.Count > 0)
        {
            var d = st.Pop();
            yield return d;
            foreach (var c in d.Children.Values) if (c.IsDir) st.Push(c);
        }
    }

    public static bool IsAncestor(MNode a, MNode b)
    {
        for (var x = b; x != null; x = x.Parent) if (x == a) return true;
        return false;
    }

    public static uint ExpectedNlink(MNode n) => n.IsDir ? 2u + (uint)n.Children.Values.Count(c => c.IsDir) : (uint)n.Links;

    public static string Describe(MNode n) => n.Kind switch
    {
        'f' => $"file {n.Data.Length}B",
        'l' => $"link->{n.Target}",
        'd' => $"dir[{string.Join(",", n.Children.Keys)}]",
        _ => "fifo",
    };

    public static byte[] B(string s) => Encoding.UTF8.GetBytes(s);
}

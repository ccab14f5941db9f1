using System.Reflection;
using System.Text.RegularExpressions;
using Xunit;

namespace Reservoir.Tests.Architecture;

/// <summary>
/// Dependencies point down only: format → device → engine → API → front ends (ARCHITECTURE.md).
/// Assemblies are checked by their references; the engine's folders by their `using`
/// directives and qualified names, in the order Tree, Alloc → Tx → Inodes → facade → Check.
/// </summary>
public class LayerTests
{
    private static readonly Dictionary<string, int> AssemblyLayer = new()
    {
        ["Reservoir.Common"] = 0,
        ["Reservoir.Format"] = 1,
        ["Reservoir.Device"] = 1,
        ["Reservoir.Engine"] = 2,
        ["Reservoir.Api"] = 3,
        ["Reservoir.Fuse"] = 3,
        ["reservoir"] = 4,
    };

    [Fact]
    public void AssembliesReferenceOnlyLowerLayers()
    {
        var problems = new List<string>();
        foreach (var (name, layer) in AssemblyLayer)
        {
            var asm = Assembly.Load(name);
            foreach (var r in asm.GetReferencedAssemblies())
            {
                if (!AssemblyLayer.TryGetValue(r.Name!, out int other)) continue;
                // Same-layer siblings (Format, Device) stay independent of each other.
                if (other >= layer) problems.Add($"{name} (layer {layer}) references {r.Name} (layer {other})");
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }


    private static int EngineLayer(string folder) => folder switch
    {
        "Tree" or "Alloc" or "Quota" or "Util" => 0,
        "Tx" => 1,
        "Inodes" => 2,
        "Data" => 3,
        "" => 4,
        "Check" => 5,
        _ => throw new InvalidOperationException($"engine folder '{folder}' has no layer: add it to ARCHITECTURE.md and this test"),
    };

    internal static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d != null && !File.Exists(Path.Combine(d.FullName, "Reservoir.slnx"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    [Fact]
    public void EngineFoldersReferenceOnlyLowerFolders()
    {
        string root = Path.Combine(RepoRoot(), "src", "Reservoir.Engine");
        var refRe = new Regex(@"Reservoir\.Engine\.(Tree|Alloc|Quota|Tx|Inodes|Data|Check|Util)\b");
        var facadeRe = new Regex(@"\b(Filesystem|InodeAttr|SetAttrRequest)\b");
        var problems = new List<string>();
        foreach (var file in Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(root, file);
            if (rel.StartsWith("obj") || rel.StartsWith("bin")) continue;
            string folder = rel.Contains(Path.DirectorySeparatorChar) ? rel[..rel.IndexOf(Path.DirectorySeparatorChar)] : "";
            int layer = EngineLayer(folder);
            var text = File.ReadAllText(file);
            foreach (Match m in refRe.Matches(text))
            {
                int other = EngineLayer(m.Groups[1].Value);
                if (other > layer) problems.Add($"{rel} (layer {layer}) uses Reservoir.Engine.{m.Groups[1].Value} (layer {other})");
            }
            if (layer < 4)
            {
                var code = string.Join("\n", text.Split('\n').Where(l => !l.TrimStart().StartsWith("//")));
                if (facadeRe.IsMatch(code)) problems.Add($"{rel} (layer {layer}) uses the engine facade");
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void TheTestCanFail()
    {
        // The rule above would flag an upward reference written in a lower folder.
        var refRe = new Regex(@"Reservoir\.Engine\.(Tree|Alloc|Tx|Inodes|Check|Util)\b");
        var m = refRe.Match("using Reservoir.Engine.Inodes;");
        Assert.True(m.Success && EngineLayer(m.Groups[1].Value) > EngineLayer("Tree"));
    }
}

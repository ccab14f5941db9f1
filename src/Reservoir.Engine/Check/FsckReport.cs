namespace Reservoir.Engine.Check;

public enum FindingKind
{
    /// <summary>A counter that can be recomputed from the trees (repairable).</summary>
    Counter,
    /// <summary>Structure or references are wrong (not repairable here).</summary>
    Structure,
    /// <summary>Informational: a damaged superblock copy, an orphan awaiting deletion.</summary>
    Notice,
}

public sealed record FsckFinding(FindingKind Kind, string Where, string Message)
{
    public bool Repairable => Kind == FindingKind.Counter;
    public override string ToString() => $"{Where}: {Message}";
}

/// <summary>What fsck found and did. Exit codes follow fsck(8): 0 clean, 1 errors corrected,
/// 4 errors left uncorrected, 8 operational error.</summary>
public sealed class FsckReport
{
    public List<FsckFinding> Findings { get; } = new();
    public int Repaired { get; set; }
    public string? OperationalError { get; set; }
    public long TreeBlocks, Inodes, Directories, DataExtents, DataBytes, Items;
    public ulong Generation;

    public IEnumerable<FsckFinding> Errors => Findings.Where(f => f.Kind != FindingKind.Notice);
    public bool Clean => OperationalError == null && !Errors.Any();

    public int ExitCode => OperationalError != null ? 8
        : Errors.Any() ? (Repaired > 0 && Repaired >= Errors.Count() ? 1 : 4)
        : 0;

    public void Add(FindingKind k, string where, string msg) => Findings.Add(new FsckFinding(k, where, msg));
}

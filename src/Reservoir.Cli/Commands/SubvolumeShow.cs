namespace Reservoir.Cli.Commands;

/// <summary>
/// What `reservoir subvolume show` prints, gathered on an unmounted image or through a mount,
/// printed as btrfs-progs prints `btrfs subvolume show`: the path, then tab-aligned fields,
/// the snapshots taken of it (by their parent uuid) and its quota group. The received uuid
/// and send transid are those `receive` recorded (the sent subvolume's uuid and ctransid).
/// <paramref name="Path"/> is empty for the top level; its uuid and creation time may be
/// unknown (online). Uuids are printed as btrfs-progs prints them (<see cref="Common.UuidText"/>).
/// </summary>
internal sealed record SubvolumeShow(
    ulong Id, string Path, Guid? Uuid, Guid ParentUuid, DateTimeOffset? Created, ulong Generation, ulong Otransid,
    ulong ParentId, bool ReadOnly, List<string> Snapshots,
    (ulong Id, ulong Referenced, ulong Exclusive, ulong MaxReferenced, ulong MaxExclusive)? Group,
    Guid ReceivedUuid = default, ulong Stransid = 0)
{
    private string Name => Id == 5 ? "<FS_TREE>" : System.IO.Path.GetFileName(Path);

    public void Print(TextWriter o, SizeFormat sizes)
    {
        o.WriteLine(Id == 5 ? "/" : Path);
        o.WriteLine($"\tName: \t\t\t{Name}");
        if (Uuid is { } u) o.WriteLine($"\tUUID: \t\t\t{Common.UuidText.Of(u)}");
        o.WriteLine($"\tParent UUID: \t\t{Common.UuidText.OrDash(ParentUuid)}");
        o.WriteLine($"\tReceived UUID: \t\t{Common.UuidText.OrDash(ReceivedUuid)}");
        if (Created is { } c)
        {
            // btrfs-progs prints the offset as +hhmm (strftime's %z).
            var local = c.ToLocalTime();
            var off = local.Offset;
            o.WriteLine($"\tCreation time: \t\t{local:yyyy-MM-dd HH:mm:ss} {(off < TimeSpan.Zero ? '-' : '+')}{Math.Abs(off.Hours):00}{Math.Abs(off.Minutes):00}");
        }
        o.WriteLine($"\tSubvolume ID: \t\t{Id}");
        if (Id != 5 || Generation != 0)
        {
            o.WriteLine($"\tGeneration: \t\t{Generation}");
            o.WriteLine($"\tGen at creation: \t{Otransid}");
            o.WriteLine($"\tParent ID: \t\t{ParentId}");
            o.WriteLine($"\tTop level ID: \t\t{ParentId}");
            o.WriteLine($"\tFlags: \t\t\t{(ReadOnly ? "readonly" : "-")}");
            o.WriteLine($"\tSend transid: \t\t{Stransid}");
        }
        o.WriteLine("\tSnapshot(s):");
        foreach (var s in Snapshots) o.WriteLine($"\t\t\t\t{s}");
        if (Group is { } g)
        {
            o.WriteLine($"\tQuota group:\t\t0/{Id}");
            o.WriteLine($"\t  Limit referenced:\t{(g.MaxReferenced == ulong.MaxValue ? "-" : sizes.Format(g.MaxReferenced))}");
            o.WriteLine($"\t  Limit exclusive:\t{(g.MaxExclusive == ulong.MaxValue ? "-" : sizes.Format(g.MaxExclusive))}");
            o.WriteLine($"\t  Usage referenced:\t{sizes.Format(g.Referenced)}");
            o.WriteLine($"\t  Usage exclusive:\t{sizes.Format(g.Exclusive)}");
        }
    }

    public object ToJson() => new
    {
        name = Name, path = Path, id = Id, parent = ParentId, top_level = ParentId,
        uuid = Uuid is { } u ? Common.UuidText.Of(u) : null, parent_uuid = Common.UuidText.OrNull(ParentUuid),
        received_uuid = Common.UuidText.OrNull(ReceivedUuid), send_transid = Stransid,
        generation = Generation, gen_at_creation = Otransid,
        creation_time = Created?.ToString("yyyy-MM-dd HH:mm:ss"), @readonly = ReadOnly,
        snapshots = Snapshots,
        qgroup = Group is { } g ? new
        {
            id = $"0/{Id}", referenced = g.Referenced, exclusive = g.Exclusive,
            max_referenced = g.MaxReferenced == ulong.MaxValue ? (ulong?)null : g.MaxReferenced,
            max_exclusive = g.MaxExclusive == ulong.MaxValue ? (ulong?)null : g.MaxExclusive,
        } : null,
    };
}

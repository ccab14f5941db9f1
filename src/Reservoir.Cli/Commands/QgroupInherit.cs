using System.CommandLine;
using Reservoir.Common;
using Reservoir.Engine.Inodes;
using Reservoir.Format.Items;

namespace Reservoir.Cli.Commands;

/// <summary>
/// btrfs-progs' `-i QGROUPID` of `subvolume create` and `subvolume snapshot`: the new
/// subvolume's level-0 qgroup joins each group given, as `qgroup assign` would right after
/// (a subvolume's group joining is worked out from its own extents: cheap for a new subvolume
/// or a snapshot, docs/SNAPSHOTS.md §3, "Relations"). The groups are checked before anything
/// is made (quotas on, each group there, of level 1 or above), so a wrong id makes no subvolume.
/// </summary>
internal sealed class QgroupInherit
{
    public static Option<string[]> Option() => new("-i")
    {
        Description = "Add the new subvolume's qgroup to this qgroup (level/id, e.g. 1/100); may be repeated",
        Arity = ArgumentArity.ZeroOrMore,
        HelpName = "qgroupid",
    };

    private readonly ulong[] _groups;

    private QgroupInherit(ulong[] groups) => _groups = groups;

    public bool Any => _groups.Length > 0;

    /// <summary>Parses the ids given; null (after saying why) when one is not a group a
    /// subvolume can join.</summary>
    public static QgroupInherit? Parse(CliContext ctx, string verb, string[]? given)
    {
        var ids = new List<ulong>();
        foreach (var s in given ?? [])
        {
            if (!QuotaCommands.TryParseQgroup(s, out ulong id))
            {
                ctx.Err.WriteLine($"reservoir subvolume {verb}: -i {s}: not a qgroup id (level/id, e.g. 1/100)");
                return null;
            }
            if (QgroupId.Level(id) == 0)
            {
                ctx.Err.WriteLine($"reservoir subvolume {verb}: -i {s}: a level-0 qgroup is a subvolume's own; give a group of level 1 or above");
                return null;
            }
            ids.Add(id);
        }
        return new QgroupInherit([.. ids.Distinct()]);
    }

    /// <summary>Before making anything: quotas on and every group there. Null when fine, else why not.</summary>
    public string? CheckOnline(string dir)
    {
        if (!Any) return null;
        var e = OnlineSubvolume.Qgroups(dir, out var groups);
        if (e == Errno.ENOTCONN) return "-i: quotas are off (reservoir quota enable)";
        if (e != Errno.OK) return $"-i: {e.Describe()}";
        return Missing(groups.Select(g => g.Id));
    }

    public string? CheckOffline(ReservoirFileSystem fs)
    {
        if (!Any) return null;
        if (!fs.Engine.QuotaEnabled) return "-i: quotas are off (reservoir quota enable)";
        return Missing(fs.Engine.Qgroups().Select(g => g.Id));
    }

    private string? Missing(IEnumerable<ulong> have)
    {
        var set = have.ToHashSet();
        foreach (var g in _groups)
            if (!set.Contains(g)) return $"-i {QgroupId.Show(g)}: no such qgroup (reservoir qgroup create {QgroupId.Show(g)})";
        return null;
    }

    /// <summary>The subvolume just made at <paramref name="path"/> on a mount joins the groups.</summary>
    public Errno JoinOnline(string path)
    {
        if (!Any) return Errno.OK;
        if (OnlineSubvolume.SubvolumeIdOf(path) is not { } id) return Errno.ENOENT;
        foreach (var g in _groups)
        {
            // EEXIST: a snapshot joins its source's groups by itself.
            var e = OnlineSubvolume.QuotaCtl(path, OnlineSubvolume.QuotaOp.Assign, QgroupId.Of(0, id), g);
            if (e is not (Errno.OK or Errno.EEXIST)) return e;
        }
        return Errno.OK;
    }

    /// <summary>The same in an image: throws IOException with the reason.</summary>
    public void JoinOffline(ReservoirFileSystem fs, string path)
    {
        if (!Any) return;
        var e = fs.Posix.Stat(path, out var attr);
        if (e != Errno.OK) throw new IOException($"{path}: {e.Describe()}");
        ulong id = NodeIds.Decode(attr.Ino).TreeId;
        foreach (var g in _groups)
        {
            e = fs.Engine.AssignQgroup(QgroupId.Of(0, id), g);
            if (e is not (Errno.OK or Errno.EEXIST)) throw new IOException($"made, but joining qgroup {QgroupId.Show(g)} failed: {e.Describe()}");
        }
    }
}

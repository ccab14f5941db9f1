using System.Text.Json;
using Reservoir.Cli;
using Reservoir.Cli.Commands;
using Reservoir.Common;
using Xunit;

namespace Reservoir.Tests.Cli;

/// <summary>Subvolumes, snapshots, quotas and qgroups on unmounted images, as btrfs-progs has the commands.</summary>
public sealed partial class CliTests
{
    [Fact]
    public void QuotaCommandsEnableLimitShowAndEnforce()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("qgroup", "limit", "2M", Img).Code);
        var src = Path.Combine(_dir, "big");
        File.WriteAllBytes(src, new byte[3 << 20]);
        var r = Run("cp", Img, src, ":/big");
        Assert.Equal(1, r.Code);
        Assert.Contains("disk quota exceeded", r.Err);
        Assert.Contains("/big", r.Err);
        var show = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        var g = show.RootElement[0];
        Assert.Equal("0/5", g.GetProperty("qgroupid").GetString());
        Assert.Equal(2L << 20, g.GetProperty("max_referenced").GetInt64());
        Assert.True(g.GetProperty("referenced").GetInt64() <= 2L << 20);
        Assert.Equal(0, Run("fsck", Img).Code);
        var status = Run("quota", "status", Img).Out;
        Assert.StartsWith($"Quotas on {Img}:\n  Enabled:                 yes\n", status);
        Assert.Contains("  Total count:             1\n  Level 0:                 1\n", status); // the top level's group
        var json = JsonDocument.Parse(Run("quota", "status", Img, "--format", "json").Out).RootElement;
        Assert.Equal((true, 1, 1), (json.GetProperty("enabled").GetBoolean(), json.GetProperty("total_count").GetInt32(), json.GetProperty("level0").GetInt32()));
        Assert.Contains("every qgroup equals the recount", Run("quota", "rescan", Img).Out);
        Assert.Equal("no rescan operation in progress\n", Run("quota", "rescan", "-s", Img).Out);
        Assert.Equal(1, Run("qgroup", "limit", "lots", Img).Code);
    }

    [Fact]
    public void SubvolumeCommandsCreateListShowLimitDeleteAndSync()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("quota", "enable", Img).Code);
        var c = Run("subvolume", "create", Img, "/home", "/srv");
        Assert.Equal((0, "Create subvolume '/home'\nCreate subvolume '/srv'\n"), (c.Code, c.Out));
        var dup = Run("subvolume", "create", Img, "/home");
        Assert.Equal(1, dup.Code);
        Assert.Contains("EEXIST", dup.Err);
        var list = Run("subvolume", "list", Img);
        Assert.Equal("ID 256 gen", list.Out[..10]);
        Assert.Contains("top level 5 path home\n", list.Out);
        Assert.Contains("ID 257", list.Out);
        var json = JsonDocument.Parse(Run("subvolume", "list", Img, "--format", "json").Out);
        Assert.Equal("srv", json.RootElement[1].GetProperty("path").GetString());
        var show = Run("subvolume", "show", Img, "/home");
        Assert.Contains("Subvolume ID: \t\t256", show.Out);
        Assert.Contains("Quota group:\t\t0/256", show.Out);
        Assert.Equal(0, Run("subvolume", "show", Img, "/").Code); // the top level shows too
        Assert.Equal(0, Run("qgroup", "limit", "1M", Img, "/home").Code);
        Assert.Matches(@"0/256 .* 1\.00MiB +none +home\n", Run("qgroup", "show", "-re", Img).Out);
        // As btrfs-progs: by id (-r) and uuid (-u) instead of the path, the image alone being
        // its top level, and the group's numbers in the units asked for.
        string byPath = Run("subvolume", "show", Img, "/home").Out;
        Assert.Equal(byPath, Run("subvolume", "show", Img, "-r", "256").Out);
        string uuid = System.Text.RegularExpressions.Regex.Match(show.Out, @"\tUUID: \t+([0-9a-f-]{36})\n").Groups[1].Value;
        Assert.Equal(byPath, Run("subvolume", "show", Img, "-u", uuid).Out);
        Assert.StartsWith("/\n\tName: \t\t\t<FS_TREE>\n", Run("subvolume", "show", Img).Out);
        Assert.Contains("\t  Limit referenced:\t1048576\n", Run("subvolume", "show", Img, "/home", "-b").Out);
        Assert.Contains("\t  Limit referenced:\t1.05MB\n", Run("subvolume", "show", Img, "/home", "-H").Out);
        Assert.Contains("\t  Limit referenced:\t1024.00KiB\n", Run("subvolume", "show", Img, "/home", "-k").Out);
        var noId = Run("subvolume", "show", Img, "-r", "999");
        Assert.Equal((1, "reservoir subvolume show: no subvolume has id 999\n"), (noId.Code, noId.Err));
        Assert.Equal(2, Run("subvolume", "show", Img, "-u", "not-a-uuid").Code);
        Assert.Equal(2, Run("subvolume", "show", Img, "-r", "256", "-u", uuid).Code);
        // A snapshot into an existing directory lands inside it under the source's name, as
        // btrfs-progs puts it (and prints it: "snaps//home").
        Run("mkdir", Img, "/snaps");
        var into = Run("subvolume", "snapshot", Img, "/home", "/snaps/");
        Assert.Equal((0, "Create a snapshot of '/home' in '/snaps//home'\n"), (into.Code, into.Out));
        Assert.Contains("path snaps/home\n", Run("subvolume", "list", Img).Out);
        Assert.Equal(0, Run("subvolume", "delete", Img, "/snaps/home").Code);
        // set-default by path, offline (IMAGE PATH), and not by a path that is no subvolume.
        Assert.Equal(0, Run("subvolume", "set-default", Img, "/srv").Code);
        Assert.StartsWith("ID 257", Run("subvolume", "get-default", Img).Out);
        Run("mkdir", Img, "/plain");
        var plain = Run("subvolume", "set-default", Img, "/plain");
        Assert.Equal((1, "reservoir subvolume set-default: /plain: not a subvolume\n"), (plain.Code, plain.Err));
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        Assert.Equal(0, Run("property", "set", Img, "/srv", "ro", "true").Code);
        Assert.Equal("ro=true\n", Run("property", "get", Img, "/srv").Out);
        // "/" is the filesystem as well (btrfs's get on a mount's root): ro and label.
        Assert.Equal(0, Run("property", "set", Img, "/", "label", "tag").Code);
        Assert.Equal("ro=false\nlabel=tag\n", Run("property", "get", Img, "/").Out);
        var noLabel = Run("property", "get", Img, "/srv", "label");
        Assert.Equal((1, "reservoir property get: object is not compatible with property: label\n"), (noLabel.Code, noLabel.Err));
        Assert.Equal("ro                  read-only status of a subvolume\n", Run("property", "list", Img, "/srv").Out);
        Assert.Equal(1, Run("property", "get", Img, "/nothere").Code);
        Assert.Equal(0, Run("subvolume", "set-default", "256", Img).Code);
        Assert.StartsWith("ID 256", Run("subvolume", "get-default", Img).Out);
        Assert.Equal(1, Run("subvolume", "delete", Img, "/home").Code); // the default
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        Assert.Equal(0, Run("subvolume", "delete", Img, "/home").Code);
        Assert.Equal(0, Run("subvolume", "sync", Img).Code);
        Assert.DoesNotContain("path home", Run("subvolume", "list", Img).Out);
        Assert.DoesNotContain("0/256", Run("qgroup", "show", Img).Out);
        // btrfs scripts' clear-stale after a deletion: the group went with its subvolume, so
        // nothing is stale (silent success, as btrfs-progs with nothing to clear).
        Assert.Equal((0, "", ""), Run("qgroup", "clear-stale", Img));
        Assert.Contains("Device size:", Run("filesystem", "usage", Img).Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`qgroup show` reads as btrfs-progs' does: limits only with -r/-e (bundled as
    /// -re), the Path column, two decimals in each unit system, --raw, a fixed unit, --sort,
    /// and contradicting unit options refused. The expected sizes are worked out from the 3 MiB
    /// written (3,145,728 bytes: 3.00MiB, 3.15MB, 3072.00KiB).</summary>
    [Fact]
    public void QgroupShowPrintsLikeBtrfsProgs()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/home", "/srv").Code);
        var src = Path.Combine(_dir, "three");
        File.WriteAllBytes(src, new byte[3 << 20]);
        Assert.Equal(0, Run("cp", Img, src, ":/home/f").Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "/home").Code);
        var plain = Run("qgroup", "show", Img).Out.Split('\n');
        Assert.Matches(@"^Qgroupid +Referenced +Exclusive +Path$", plain[0]);
        Assert.Matches(@"^-------- +---------- +--------- +----$", plain[1]);
        Assert.Matches(@"^0/5 +0\.00B +0\.00B +<toplevel>$", plain[2]);
        Assert.Matches(@"^0/256 +3\.00MiB +3\.00MiB +home$", plain[3]);
        Assert.Matches(@"^0/257 +0\.00B +0\.00B +srv$", plain[4]);
        Assert.DoesNotContain("10.00MiB", string.Join('\n', plain)); // limits only with -r
        var re = Run("qgroup", "show", "-re", Img).Out;
        Assert.Matches(@"Qgroupid +Referenced +Exclusive +Max referenced +Max exclusive +Path\n", re);
        Assert.Matches(@"0/256 +3\.00MiB +3\.00MiB +10\.00MiB +none +home\n", re);
        Assert.Matches(@"0/256 +3\.15MB +3\.15MB +home\n", Run("qgroup", "show", "--si", Img).Out);
        Assert.Equal(string.Join('\n', plain), Run("qgroup", "show", "-h", Img).Out); // human-readable, not help (--help is)
        Assert.Contains("Usage:", Run("qgroup", "show", "--help").Out);
        Assert.Matches(@"0/256 +3145728 +3145728 +home\n", Run("qgroup", "show", "--raw", Img).Out);
        Assert.Matches(@"0/256 +3072\.00KiB +3072\.00KiB +home\n", Run("qgroup", "show", "--kbytes", Img).Out);
        var sorted = Run("qgroup", "show", "--sort=-rfer,path", Img).Out.Split('\n');
        Assert.StartsWith("0/256", sorted[2]);
        Assert.StartsWith("0/257", sorted[4]); // 0 bytes like 0/5, and "srv" sorts after "<toplevel>"
        var json = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        Assert.Equal("<toplevel>", json.RootElement[0].GetProperty("path").GetString());
        // -f: the group of the subvolume holding the path; -F: and the groups above it.
        Assert.Equal(0, Run("qgroup", "create", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "0/256", "1/100", Img).Code);
        string Ids(params string[] args) => string.Join(" ", Run(["qgroup", "show", .. args]).Out.Split('\n').Skip(2).Where(l => l.Length > 0).Select(l => l.Split(' ')[0]));
        Assert.Equal("0/256", Ids("-f", Img, "/home/f"));
        Assert.Equal("0/256 1/100", Ids("-F", Img, "/home"));
        Assert.Equal("0/5", Ids("-F", Img));
        var bad = Run("qgroup", "show", "--raw", "--si", Img);
        Assert.Equal(1, bad.Code);
        Assert.Contains("--raw", bad.Err);
        Assert.Equal(1, Run("qgroup", "show", "--sort=size", Img).Code);
    }

    /// <summary>`subvolume create|snapshot -i QGROUPID` (btrfs-progs'): the new subvolume's group
    /// joins each group given, with its numbers (a snapshot of a member already is one); a
    /// missing group, a level-0 id or quotas off are refused before anything is made.</summary>
    [Fact]
    public void SubvolumeCreateAndSnapshotJoinGroupsWithDashI()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "-q").Code);
        var off = Run("subvolume", "create", Img, "/a", "-i", "1/1");
        Assert.Equal(1, off.Code);
        Assert.Contains("quotas are off", off.Err);
        Assert.Equal(0, Run("quota", "enable", Img).Code);
        var missing = Run("subvolume", "create", Img, "/a", "-i", "1/1");
        Assert.Equal(1, missing.Code);
        Assert.Contains("-i 1/1: no such qgroup", missing.Err);
        Assert.Equal(1, Run("subvolume", "create", Img, "/a", "-i", "0/5").Code);
        Assert.Equal(1, Run("subvolume", "create", Img, "/a", "-i", "one").Code);
        Assert.DoesNotContain(" a\n", Run("subvolume", "list", Img).Out); // nothing was made
        Assert.Equal(0, Run("qgroup", "create", "1/1", Img).Code);
        Assert.Equal(0, Run("qgroup", "create", "1/2", Img).Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a", "-i", "1/1").Code);
        var src = Path.Combine(_dir, "one");
        File.WriteAllBytes(src, new byte[1 << 20]);
        Assert.Equal(0, Run("cp", Img, src, ":/a/f").Code);
        Assert.Equal(0, Run("subvolume", "snapshot", Img, "/a", "/b", "-i", "1/1", "-i", "1/2").Code);
        var groups = JsonDocument.Parse(Run("qgroup", "show", "-pc", Img, "--format", "json").Out).RootElement.EnumerateArray()
            .ToDictionary(g => g.GetProperty("qgroupid").GetString()!, g => g);
        string Parents(string id) => string.Join(",", groups[id].GetProperty("parents").EnumerateArray().Select(p => p.GetString()));
        Assert.Equal("1/1", Parents("0/256"));
        Assert.Equal("1/1,1/2", Parents("0/257"));
        // 1/1 holds a and b, which share the file: referenced and exclusive 1 MiB; 1/2 holds b
        // alone, which shares it with a outside: referenced 1 MiB, exclusive 0.
        Assert.Equal((1L << 20, 1L << 20), (groups["1/1"].GetProperty("referenced").GetInt64(), groups["1/1"].GetProperty("exclusive").GetInt64()));
        Assert.Equal((1L << 20, 0L), (groups["1/2"].GetProperty("referenced").GetInt64(), groups["1/2"].GetProperty("exclusive").GetInt64()));
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`qgroup limit` as btrfs-progs takes it (`[-e] SIZE [QGROUPID] PATH`) as well as
    /// image first: each limit set keeps the other, and an exclusive limit refuses a write.</summary>
    [Fact]
    public void QgroupLimitTakesBtrfsProgsOrderAndExclusiveLimits()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M", "--quota", "-q").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a").Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "/a").Code);        // image first
        Assert.Equal(0, Run("qgroup", "limit", "-e", "2M", "0/256", Img).Code); // btrfs-progs' order
        (long? Rfer, long? Excl) Limits()
        {
            var g = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out).RootElement
                .EnumerateArray().Single(x => x.GetProperty("qgroupid").GetString() == "0/256");
            long? L(string name) => g.GetProperty(name).ValueKind == JsonValueKind.Null ? null : g.GetProperty(name).GetInt64();
            return (L("max_referenced"), L("max_exclusive"));
        }
        Assert.Equal((10L << 20, 2L << 20), Limits());
        var src = Path.Combine(_dir, "three");
        File.WriteAllBytes(src, new byte[3 << 20]);
        var r = Run("cp", Img, src, ":/a/f");                                  // 3 MiB, all its own
        Assert.Equal(1, r.Code);
        Assert.Contains("disk quota exceeded", r.Err);
        Assert.Equal(0, Run("qgroup", "limit", "none", "0/256", Img).Code);    // referenced only
        Assert.Equal(((long?)null, 2L << 20), Limits());
        Assert.Equal(0, Run("qgroup", "limit", "-e", "none", Img, "0/256").Code);
        Assert.Equal(((long?)null, (long?)null), Limits());
        Assert.Equal(0, Run("cp", Img, src, ":/a/g").Code);
        var bad = Run("qgroup", "limit", "1M", "x/9", Img);
        Assert.Equal(1, bad.Code);
        Assert.Contains("not a qgroup id", bad.Err);
        var none = Run("qgroup", "limit", "1M", "9/9", Img);
        Assert.Equal(1, none.Code);
        Assert.Contains("9/9: no such qgroup", none.Err);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    /// <summary>`subvolume create|snapshot|delete --format json` say what they did as JSON: the
    /// paths with the ids of the subvolumes made (what a script wants next), the snapshot's
    /// source and read-only flag, each deletion and its commit; the ids are those `subvolume
    /// list` gives.</summary>
    [Fact]
    public void SubvolumeCreateSnapshotAndDeleteSayWhatTheyDidInJson()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        var made = JsonDocument.Parse(Run("subvolume", "create", Img, "/a", "/b", "--format", "json").Out).RootElement;
        Assert.Equal(2, made.GetArrayLength());
        Assert.Equal(("/a", 256UL), (made[0].GetProperty("path").GetString(), made[0].GetProperty("id").GetUInt64()));
        Assert.Equal(("/b", 257UL), (made[1].GetProperty("path").GetString(), made[1].GetProperty("id").GetUInt64()));
        var snap = JsonDocument.Parse(Run("subvolume", "snapshot", "-r", Img, "/a", "/s", "--format", "json").Out).RootElement;
        Assert.Equal(("/a", "/s", true), (snap.GetProperty("source").GetString(), snap.GetProperty("path").GetString(), snap.GetProperty("read_only").GetBoolean()));
        Assert.Contains($"ID {snap.GetProperty("id").GetUInt64()} gen", Run("subvolume", "list", Img).Out.Split('\n').Single(l => l.EndsWith(" path s", StringComparison.Ordinal)));
        var gone = JsonDocument.Parse(Run("subvolume", "delete", Img, "/b", "--format", "json").Out).RootElement;
        Assert.Equal(("/b", true), (gone[0].GetProperty("path").GetString(), gone[0].GetProperty("commit").GetBoolean()));
        var byId = JsonDocument.Parse(Run("subvolume", "delete", "-i", "256", Img, "--format", "json").Out).RootElement;
        Assert.Equal(256UL, byId[0].GetProperty("subvolid").GetUInt64());
        Assert.Single(Run("subvolume", "list", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // the snapshot
    }

    /// <summary>`subvolume delete` says why it refuses, in btrfs-progs' words, where the errno
    /// alone puzzled ("invalid argument" for a plain directory), and deletes nothing.</summary>
    [Fact]
    public void SubvolumeDeleteSaysWhyItRefuses()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("mkdir", Img, "/plain").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/s", "/s/inner").Code);
        var plain = Run("subvolume", "delete", Img, "/plain");
        Assert.Equal(1, plain.Code);
        Assert.Contains("/plain: not a subvolume", plain.Err);
        var nested = Run("subvolume", "delete", Img, "/s");
        Assert.Equal(1, nested.Code);
        Assert.Contains("it holds subvolumes: delete those first", nested.Err);
        Assert.Equal(0, Run("subvolume", "set-default", "257", Img).Code);
        var dflt = Run("subvolume", "delete", Img, "/s/inner");
        Assert.Equal(1, dflt.Code);
        Assert.Contains("the default subvolume", dflt.Err);
        Assert.Equal(["plain", "s"], Run("ls", Img, "/").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        // By id (-i), as btrfs-progs: the same refusals, then the nested one wherever it is.
        var top = Run("subvolume", "delete", "-i", "5", Img);
        Assert.Equal(1, top.Code);
        Assert.Contains("the top-level subvolume (5) cannot be deleted", top.Err);
        Assert.Contains("no subvolume has that id", Run("subvolume", "delete", "-i", "999", Img).Err);
        Assert.Contains("it holds subvolumes", Run("subvolume", "delete", "--subvolid", "256", Img).Err);
        Assert.Equal(2, Run("subvolume", "delete", "-i", "257", Img, "/s").Code); // one target with -i
        Assert.Equal(2, Run("subvolume", "delete", "-c", "-C", Img, "/s").Code);
        Assert.Equal(0, Run("subvolume", "set-default", "5", Img).Code);
        var byId = Run("subvolume", "delete", "-i", "257", Img);
        Assert.True(byId.Code == 0, byId.Err);
        Assert.Equal("Delete subvolume (commit): subvolid=257\n", byId.Out);
        var byPath = Run("subvolume", "delete", "-c", Img, "/s");
        Assert.Equal("Delete subvolume (commit): '/s'\n", byPath.Out);
        Assert.Equal("", Run("subvolume", "list", Img).Out);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    [Fact]
    public void QgroupHierarchyCommands()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        // btrfs-progs' scripts' options: simple quotas (-s) get full accounting, said so; a
        // relation change's --rescan / --no-rescan (none is ever needed) are taken.
        var simple = Run("quota", "enable", "-s", Img);
        Assert.Equal((0, "reservoir quota enable: note: -s: full accounting enabled (its commit costs what simple quotas' would; exclusive numbers are kept)\n"), (simple.Code, simple.Err));
        Assert.Contains("Mode:                    qgroup (full accounting)", Run("quota", "status", Img).Out);
        Assert.Equal(0, Run("subvolume", "create", Img, "/a", "/b").Code);
        Assert.Equal(0, Run("qgroup", "create", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "--no-rescan", "0/256", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "assign", "--rescan", "0/257", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "limit", "10M", Img, "1/100").Code);
        var wrong = Run("qgroup", "assign", "1/100", "0/256", Img);
        Assert.Equal(1, wrong.Code);
        Assert.Contains("higher level", wrong.Err);
        Assert.Contains("members", Run("qgroup", "destroy", "1/100", Img).Err);
        Assert.Equal(1, Run("qgroup", "create", "x", Img).Code);
        var show = Run("qgroup", "show", "-p", "-c", "-r", Img).Out;
        Assert.Contains("0/256", show);
        Assert.Matches(@"1/100 .*10\.00MiB .* 0/256,0/257 +<2 member qgroups>", show);
        var json = JsonDocument.Parse(Run("qgroup", "show", Img, "--format", "json").Out);
        Assert.Contains(json.RootElement.EnumerateArray(), g => g.GetProperty("qgroupid").GetString() == "1/100" && g.GetProperty("children").GetArrayLength() == 2);
        Assert.Equal(0, Run("qgroup", "remove", "0/256", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "remove", "0/257", "1/100", Img).Code);
        Assert.Equal(0, Run("qgroup", "destroy", "1/100", Img).Code);
        Assert.Equal(0, Run("fsck", Img).Code);
    }

    [Fact]
    public void SubvolumeSnapshotOnAnImage()
    {
        Assert.Equal(0, Run("mkfs", Img, "--size", "64M").Code);
        Assert.Equal(0, Run("subvolume", "create", Img, "/sv").Code);
        var s = Run("subvolume", "snapshot", Img, "/sv", "/snap");
        Assert.Equal((0, "Create a snapshot of '/sv' in '/snap'\n"), (s.Code, s.Out));
        var r = Run("subvolume", "snapshot", "-r", Img, "/", "/top-ro");
        Assert.Equal((0, "Create a readonly snapshot of '/' in '/top-ro'\n"), (r.Code, r.Out));
        var show = Run("subvolume", "show", Img, "/top-ro");
        Assert.Contains("Flags: \t\t\treadonly", show.Out);
        Assert.DoesNotContain("Parent UUID: \t\t-", show.Out); // a snapshot names its source
        Assert.Contains("\tSnapshot(s):\n\t\t\t\tsnap\n", Run("subvolume", "show", Img, "/sv").Out); // its snapshots, by parent uuid
        Assert.Contains("\tSnapshot(s):\n\t\t\t\ttop-ro\n", Run("subvolume", "show", Img, "/").Out);
        var notSv = Run("subvolume", "snapshot", Img, "/sv/missing", "/x");
        Assert.Equal(1, notSv.Code);
        Assert.Contains("/x", notSv.Err);
        // A directory as DEST takes the snapshot inside under the source's name, as btrfs-progs
        // does: refused where that name is taken.
        Assert.Equal(0, Run("mkdir", Img, "/d").Code);
        Assert.Equal(0, Run("mkdir", Img, "/d/sv").Code);
        var taken = Run("subvolume", "snapshot", Img, "/sv", "/d");
        Assert.Equal(1, taken.Code);
        Assert.Contains("/d/sv", taken.Err);
        Assert.Equal(3, Run("subvolume", "list", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        // list's btrfs-progs options: snapshots only (with cgen and otime), read-only only,
        // uuids (a snapshot's parent_uuid is its source's uuid), a table, a sort.
        var snaps = Run("subvolume", "list", "-s", Img).Out;
        Assert.Matches(@"^ID 257 gen \d+ cgen \d+ top level 5 otime \d{4}-\d\d-\d\d \d\d:\d\d:\d\d path snap\nID 258 .* path top-ro\n$", snaps);
        Assert.Matches(@"^ID 258 gen \d+ top level 5 path top-ro\n$", Run("subvolume", "list", "-r", Img).Out);
        var uuids = Run("subvolume", "list", "-uq", Img).Out.Split('\n');
        var svUuid = System.Text.RegularExpressions.Regex.Match(uuids[0], @"parent_uuid - +uuid ([0-9a-f-]{36}) path sv$").Groups[1].Value;
        Assert.NotEmpty(svUuid);
        Assert.Matches($@"^ID 257 .* parent_uuid {svUuid} uuid [0-9a-f-]{{36}} path snap$", uuids[1]);
        Assert.StartsWith("ID\tgen\ttop level\tpath\t\n--\t---\t---------\t----\t\n256\t", Run("subvolume", "list", "-t", Img).Out);
        Assert.Equal(["258", "257", "256"], Run("subvolume", "list", "--sort=-rootid", Img).Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[1]));
        Assert.Equal(0, Run("fsck", Img).Code);
    }
}

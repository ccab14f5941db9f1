using Reservoir.Common;

namespace Reservoir.Fuse.Session;

/// <summary>
/// Options given with -o, as mount(8) and mount.fuse3 pass them: generic mount flags become MS_*
/// flags, FUSE options go to the kernel, Reservoir's own configure the engine, and the
/// helper-only ones (auto, noauto, user, nofail, _netdev…) are ignored.
/// </summary>
public sealed class FuseMountOptions
{
    public bool ReadOnly { get; set; }
    public bool AllowOther { get; set; }
    /// <summary>default_permissions: the kernel checks permissions from the attributes it has
    /// cached (and must fetch a directory's again after every change in it). Without it the
    /// daemon checks them (Bridge/FuseBridge.Permissions.cs), the default.</summary>
    public bool DefaultPermissions { get; set; }
    /// <summary>noatime (also the kernel's MS_NOATIME), relatime (the default), strictatime:
    /// the engine keeps atime (FUSE leaves it to the filesystem).</summary>
    public bool NoAtime { get; set; }
    public bool StrictAtime { get; set; }
    /// <summary>discard, discard=sync: every commit punches what it freed out of the image;
    /// discard=async: a worker does it after the commit (the engine's MountOptions.Discard);
    /// nodiscard (the default): fstrim does it when run.</summary>
    public Engine.Tx.DiscardMode Discard { get; set; }
    public bool NoDirAtime { get; set; }
    public bool NoExec { get; set; }
    public bool Suid { get; set; }
    public bool Dev { get; set; }
    /// <summary>The mount's source as mount tables show it (fsname=); empty: the image's path,
    /// as fuse2fs shows its device, so df and findmnt say which image is mounted.</summary>
    public string FsName { get; set; } = "";
    public int CommitSeconds { get; set; } = 30;
    /// <summary>fsync through the fsync log (SPEC.md §9); notreelog (btrfs's name for the same
    /// switch) makes every fsync commit.</summary>
    public bool FsyncLog { get; set; } = true;
    public int Threads { get; set; } = Math.Clamp(Environment.ProcessorCount, 2, 8);
    /// <summary>A request in flight this long is said in the log (<see cref="RequestWatch"/>).</summary>
    public TimeSpan SlowRequestAfter { get; set; } = TimeSpan.FromMinutes(1);
    public double AttrTimeoutSeconds { get; set; } = 1.0;
    /// <summary>cache=SIZE: the daemon's page cache budget (DataOptions.PageCacheBytes; 256 MiB
    /// when not given), at least <see cref="MinCacheBytes"/>. What the daemon's memory grows to
    /// under load is mostly this (bench/daemon-memory.sh); the kernel caches what it reads
    /// through the mount besides.</summary>
    public long? CacheBytes { get; set; }
    public const long MinCacheBytes = 1L << 20;
    public bool Debug { get; set; }
    /// <summary>As root the image is mounted as a fuseblk mount over a loop device, so that
    /// sync(1) reaches the daemon (<see cref="LoopDevice"/>); nofuseblk mounts it as a plain
    /// fuse mount (then only fsync and `sync PATH` make data durable).</summary>
    public bool FuseBlk { get; set; } = true;
    /// <summary>subvol=PATH: mount the subvolume at this path (from the top-level root).</summary>
    public string? Subvol { get; set; }
    /// <summary>subvolid=ID: mount the subvolume with this id (5 is the top level).</summary>
    public ulong? SubvolId { get; set; }

    /// <summary>user_subvol_rm_allowed (btrfs's option): a user other than root and the image's
    /// owner may delete a subvolume (`subvolume delete`) where rmdir(2) would let them remove a
    /// directory in its place, and they may write and search its root, as on btrfs. Without it
    /// only root and the image's owner delete subvolumes through the mount (an empty one goes
    /// with rmdir as any directory does).</summary>
    public bool UserSubvolRmAllowed { get; set; }

    /// <summary>submounts: every subvolume below the root is mounted on its directory as a mount
    /// of its own, so each shows its own st_dev (<see cref="SubvolumeMounts"/>).</summary>
    public bool Submounts { get; set; }

    /// <summary>dedicated=N, with submounts: how many subvolumes' mounts get request threads of
    /// their own (blocking reads, as the main mount's); the rest share one set of threads
    /// through epoll, which answers a request in about twice the time.</summary>
    public int DedicatedSubmounts { get; set; } = 16;

    /// <summary>Not an -o option: set by the program serving the mount, which knows the send
    /// format, so that sends and receives through the mount are written and applied by the
    /// daemon from the engine (<see cref="Bridge.DaemonStreamService"/>; shared with the
    /// subvolumes' own mounts); null: they walk the files.</summary>
    public Bridge.DaemonStreamService? Streams { get; set; }

    /// <summary>st_ino shows an inode's number within its subvolume (as btrfs shows it), not the
    /// node id that is unique across subvolumes; set with submounts, where every subvolume has
    /// its own st_dev.</summary>
    public bool LocalInodeNumbers { get; set; }

    /// <summary>Set on the options of a subvolume's own mount (<see cref="ForSubmount"/>).</summary>
    public bool IsSubmount { get; private set; }

    /// <summary>The options of subvolume <paramref name="id"/>'s own mount: these, on that
    /// subvolume, as a plain fuse mount (a loop device stands for the whole image, once).</summary>
    public FuseMountOptions ForSubmount(ulong id)
    {
        var o = (FuseMountOptions)MemberwiseClone();
        o.Subvol = null;
        o.SubvolId = id;
        o.FuseBlk = false;
        o.Submounts = false;
        o.IsSubmount = true;
        return o;
    }

    private static readonly HashSet<string> Ignored = ["auto", "noauto", "user", "nouser", "users", "nofail", "_netdev", "defaults", "rw", "async", "exec", "atime"];

    /// <summary>An option <see cref="Parse"/> refused, with what it takes when it is a known
    /// option given a value it does not take (the ranges of the cases above).</summary>
    public static string Explain(string refused) => refused.Split('=')[0] switch
    {
        "cache" => $"{refused} (cache takes a size of at least 1M, such as 64M)",
        "commit" => $"{refused} (commit takes seconds, 0 or more)",
        "threads" => $"{refused} (threads takes 1 to 64)",
        "attr_timeout" => $"{refused} (attr_timeout takes seconds, 0 or more)",
        "dedicated" => $"{refused} (dedicated takes 0 to 4096)",
        "discard" => $"{refused} (discard takes sync or async)",
        "subvolid" => $"{refused} (subvolid takes a subvolume id)",
        "subvol" => $"{refused} (subvol takes a path)",
        _ => refused,
    };

    /// <summary>Parses a comma-separated option list; returns the unknown options (an error).</summary>
    public List<string> Parse(string? opts)
    {
        var unknown = new List<string>();
        if (string.IsNullOrEmpty(opts)) return unknown;
        foreach (var raw in opts.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var (k, v) = raw.IndexOf('=') is int i and >= 0 ? (raw[..i], raw[(i + 1)..]) : (raw, "");
            switch (k)
            {
                case "ro": ReadOnly = true; break;
                case "allow_other": AllowOther = true; break;
                case "default_permissions": DefaultPermissions = true; break;
                case "noatime": NoAtime = true; StrictAtime = false; break;
                case "relatime": NoAtime = StrictAtime = false; break;
                case "strictatime": StrictAtime = true; NoAtime = false; break;
                case "nodiratime": NoDirAtime = true; break;
                case "discard" when v is "" or "sync": Discard = Engine.Tx.DiscardMode.Sync; break;
                case "discard" when v == "async": Discard = Engine.Tx.DiscardMode.Async; break;
                case "nodiscard": Discard = Engine.Tx.DiscardMode.Off; break;
                case "diratime": NoDirAtime = false; break;
                case "noexec": NoExec = true; break;
                case "suid": Suid = true; break;
                case "nosuid": Suid = false; break;
                case "dev": Dev = true; break;
                case "nodev": Dev = false; break;
                case "fsname": FsName = v; break;
                case "subtype": break;
                case "commit" when int.TryParse(v, out int c) && c >= 0: CommitSeconds = c; break;
                case "threads" when int.TryParse(v, out int t) && t >= 1 && t <= 64: Threads = t; break;
                case "cache" when Units.TryParseSize(v, out ulong cb) && cb >= MinCacheBytes && cb <= long.MaxValue: CacheBytes = (long)cb; break;
                case "attr_timeout" when double.TryParse(v, System.Globalization.CultureInfo.InvariantCulture, out double a) && a >= 0: AttrTimeoutSeconds = a; break;
                case "debug": Debug = true; break;
                case "nofuseblk": FuseBlk = false; break;
                case "fuseblk": FuseBlk = true; break;
                case "notreelog": FsyncLog = false; break;
                case "treelog": FsyncLog = true; break;
                case "user_subvol_rm_allowed": UserSubvolRmAllowed = true; break;
                case "submounts": Submounts = LocalInodeNumbers = true; break;
                case "nosubmounts": Submounts = LocalInodeNumbers = false; break;
                case "dedicated" when int.TryParse(v, out int d) && d >= 0 && d <= 4096: DedicatedSubmounts = d; break;
                case "subvol" when v.Length > 0: Subvol = v; break;
                case "subvolid" when ulong.TryParse(v, out ulong id) && id > 0: SubvolId = id; break;
                default:
                    if (!Ignored.Contains(k)) unknown.Add(raw);
                    break;
            }
        }
        return unknown;
    }

    /// <summary>The engine's options these ask for (commit interval, fsync log, atime, discard).</summary>
    public Engine.Tx.MountOptions EngineOptions(Action<string>? log = null) => new()
    {
        ReadOnly = ReadOnly, CommitIntervalMs = CommitSeconds * 1000, FsyncLog = FsyncLog, Log = log,
        Atime = NoAtime ? Engine.Tx.AtimeMode.NoAtime : StrictAtime ? Engine.Tx.AtimeMode.StrictAtime : Engine.Tx.AtimeMode.Relatime,
        NoDirAtime = NoDirAtime, Discard = Discard,
    };

    /// <summary>The engine's data-path options these ask for (the page cache budget).</summary>
    public Engine.Data.DataOptions DataOptions()
    {
        var d = new Engine.Data.DataOptions();
        if (CacheBytes is { } c) d.PageCacheBytes = c;
        return d;
    }

    public ulong MountFlags()
    {
        ulong f = 0;
        if (ReadOnly) f |= Libc.MS_RDONLY;
        if (!Suid) f |= Libc.MS_NOSUID;
        if (!Dev) f |= Libc.MS_NODEV;
        if (NoAtime) f |= Libc.MS_NOATIME;
        if (NoExec) f |= Libc.MS_NOEXEC;
        return f;
    }
}

namespace Reservoir.Fuse.Session;

/// <summary>
/// `reservoir umount DIR`, which install.sh's umount(8) helpers (umount.fuse.reservoir,
/// umount.fuseblk.reservoir) run: unmounts a Reservoir mount together with the mounts its
/// daemon made for its subvolumes (-o submounts), deepest first, so that `umount /mnt` works as
/// it does on btrfs, where subvolumes are not mounts; the kernel refuses to unmount a mount
/// with mounts below it (EBUSY).
///
/// A subvolume's mount is told by what the daemon gives it: type fuse.reservoir and the main
/// mount's source (the image, or the loop device of a fuseblk mount), mounted on a directory
/// of the main mount or of another such mount. Two daemons never share a source (an image is
/// mounted once: the daemon holds its lock). Any other mount below, a tmpfs on a directory of
/// the image say, makes the whole unmount refuse before anything is taken down, as umount does
/// on any filesystem: nothing is left half unmounted for a mount the user forgot.
/// </summary>
public static class MountTreeUnmount
{
    /// <summary>Unmounts <paramref name="dir"/> (a mount point, or an image file: where it is
    /// mounted) and its subvolumes' mounts; lazily
    /// (MNT_DETACH: the tree goes from the namespace now, each mount ends when no longer used) with
    /// <paramref name="lazy"/>. Returns null, or what went wrong.</summary>
    public static string? Unmount(string dir, bool lazy)
    {
        string mp = Path.GetFullPath(dir);
        if (mp.Length > 1) mp = mp.TrimEnd('/');
        var table = MountInfo.Read();
        var top = File.Exists(mp) ? MountOfImage(table, mp) : MountInfo.At(table, mp);
        if (top == null) return $"{mp}: not mounted";
        if (!top.IsReservoir) return $"{mp}: not a Reservoir mount (it is {top.FsType})";
        string? helper = Libc.Geteuid() == 0 ? null : Fusermount.Find() ?? throw new IOException("unmounting as an ordinary user needs fusermount3 (apt-get install fuse3)");
        // Detaching the top detaches everything below it with it.
        if (lazy) return UnmountOne(top.MountPoint, helper, lazy: true);
        var (ours, foreign) = Below(table, top);
        if (foreign.Count > 0)
            return $"{mp}: target is busy: {string.Join(", ", foreign.Select(m => $"{m.MountPoint} ({m.FsType})"))} is mounted inside it; unmount that first, or use -l";
        // Deepest first; of two on one directory, the later (on top) first.
        // Whether a mount is in use shows only when it is unmounted (a mount with mounts below
        // counts as in use until they go), so a busy one can stop this half way: the mounts
        // below it are gone by then, and their subvolumes are reached through the mount above,
        // as without -o submounts. Running it again, once the user has let go, finishes it.
        int done = 0;
        foreach (var m in ours.OrderByDescending(m => m.MountPoint.Count(c => c == '/')).ThenByDescending(m => m.Id))
        {
            if (UnmountOne(m.MountPoint, helper, lazy: false) is { } why)
            {
                // A daemon that died cannot answer the walks to the directories below its
                // mount: the tree can only be detached.
                if (why.Contains("not connected", StringComparison.OrdinalIgnoreCase))
                    return UnmountOne(top.MountPoint, helper, lazy: true);
                return done == 0 ? why : $"{why}; {done} subvolume mount(s) below it were unmounted, their files are reached through {top.MountPoint}";
            }
            done++;
        }
        if (UnmountOne(top.MountPoint, helper, lazy: false) is { } failed)
            return done == 0 ? failed : $"{failed}; its {done} subvolume mount(s) were unmounted, their files are reached through it";
        WaitForImage(top.Source, TimeSpan.FromSeconds(30));
        return null;
    }

    /// <summary>
    /// Returns once the daemon has let go of the image <paramref name="source"/> names (when it
    /// names a file: a plain fuse mount's), so that a mount or a copy of the image right after
    /// the unmount finds it committed and free, as a fuseblk mount's unmount already does (the
    /// daemon commits and closes at FUSE_DESTROY, which umount(2) waits for; a plain fuse mount
    /// gets no DESTROY). The daemon holds the image's flock until it has closed it; a shared
    /// lock is taken and dropped at once to see whether it still does.
    /// </summary>
    private static void WaitForImage(string source, TimeSpan timeout)
    {
        if (!source.StartsWith('/') || !File.Exists(source)) return;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.Elapsed < timeout)
        {
            try
            {
                using var h = File.OpenHandle(source, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                return;
            }
            catch (IOException) { Thread.Sleep(10); }
            catch (UnauthorizedAccessException) { return; } // not ours to look at: nothing to wait for
        }
    }

    /// <summary>Where the image <paramref name="image"/> is mounted (as `umount disk.img` finds
    /// a kernel filesystem by its device): the Reservoir mount whose source is the image, or the
    /// loop device backed by it (a fuseblk mount's), and not one of its subvolumes' mounts
    /// below it.</summary>
    internal static MountInfo? MountOfImage(List<MountInfo> table, string image)
    {
        var byId = table.ToDictionary(m => m.Id);
        bool IsImage(MountInfo m) => m.IsReservoir && (m.Source == image || LoopBackingFile(m.Source) == image);
        return table.LastOrDefault(m => IsImage(m) && !(byId.TryGetValue(m.ParentId, out var p) && p.Source == m.Source && p.IsReservoir));
    }

    /// <summary>The file behind /dev/loopN, from sysfs; null for anything else.</summary>
    private static string? LoopBackingFile(string device)
    {
        if (!device.StartsWith("/dev/loop", StringComparison.Ordinal)) return null;
        string f = $"/sys/block/{Path.GetFileName(device)}/loop/backing_file";
        try { return File.Exists(f) ? File.ReadAllText(f).Trim() : null; }
        catch (IOException) { return null; }
    }

    /// <summary>The mounts below <paramref name="top"/>: those its daemon made for subvolumes,
    /// and any other.</summary>
    internal static (List<MountInfo> Ours, List<MountInfo> Foreign) Below(List<MountInfo> table, MountInfo top)
    {
        var children = table.ToLookup(m => m.ParentId);
        var ours = new List<MountInfo>();
        var foreign = new List<MountInfo>();
        var queue = new Queue<(MountInfo Mount, bool UnderOurs)>();
        foreach (var c in children[top.Id]) queue.Enqueue((c, true));
        while (queue.TryDequeue(out var e))
        {
            var (m, underOurs) = e;
            if (m.Id == top.Id) continue; // a table with a cycle is no reason to loop
            bool isOurs = underOurs && m.FsType == "fuse.reservoir" && m.Source == top.Source;
            (isOurs ? ours : foreign).Add(m);
            foreach (var c in children[m.Id]) queue.Enqueue((c, isOurs));
        }
        return (ours, foreign);
    }

    private static string? UnmountOne(string mountPoint, string? helper, bool lazy)
    {
        if (helper != null)
            return Fusermount.Unmount(helper, mountPoint, lazy, out string err) ? null : $"{mountPoint}: {(err.Length > 0 ? err : "fusermount3 failed")}";
        if (Libc.Umount2(mountPoint, lazy ? Libc.MNT_DETACH : 0) == 0) return null;
        int e = Libc.Errno;
        return $"{mountPoint}: {e switch
        {
            Libc.EBUSY => "target is busy (a process has a file or its working directory there: fuser -vm shows which)",
            Libc.ENOTCONN => "transport endpoint is not connected (the daemon is gone)",
            Libc.EPERM => "permission denied",
            Libc.EINVAL => "not mounted",
            _ => $"umount2 failed: errno {e}",
        }}";
    }
}

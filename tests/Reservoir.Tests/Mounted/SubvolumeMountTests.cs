using System.Text.Json;
using Reservoir.Common;
using Reservoir.Device;
using Reservoir.Engine;
using Reservoir.Engine.Check;
using Xunit;

namespace Reservoir.Tests.Mounted;

/// <summary>Subvolumes, snapshots and quota groups administered through a real FUSE mount with
/// the command line, as btrfs-progs on a btrfs mount: made, snapshotted, listed, deleted (by path
/// and by id, with files of them open), synced, limited; then unmount and fsck.</summary>
public class SubvolumeMountTests
{
    /// <summary>
    /// Subvolumes through the mount: they look like directories, inode numbers stay unique
    /// across them (FUSE gives every file the mount's st_dev), hard links across answer EXDEV
    /// and mv falls back to copying, rmdir deletes an empty one; then a mount with subvol=
    /// shows the subvolume as its root, and a bad subvol= fails before anything is mounted.
    /// </summary>
    [Fact]
    public void SubvolumesThroughTheMount()
    {
        var m = new MountedImage();
        try
        {
            TestFs.Ok(m.Fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out _));
            TestFs.Ok(m.Fs.CreateSubvolume(Filesystem.RootIno, "empty", 0, 0, out _));
            m.Run("mkdir top && echo one > top/f && echo two > sv/f && test \"$(cat sv/f)\" = two");
            Assert.Equal("4", m.Run("stat -c %i top/f sv/f sv . | sort -u | wc -l").Trim());
            var ln = MountedImage.Sh("ln sv/f hard 2>&1", m.Dir);
            Assert.NotEqual(0, ln.Code);
            Assert.Contains("cross-device", ln.Out);
            m.Run("mv sv/f moved && test \"$(cat moved)\" = two && test ! -e sv/f && echo three > sv/g");
            m.Run("rmdir empty && test ! -e empty");
            // mv renames a subvolume within its parent (it got EXDEV and copied it into a plain
            // directory, deleting the subvolume): the same tree, by its node id's upper bits.
            string tree = "awk '{print int($1/1099511627776)}'";
            string before = m.Run($"stat -c %i sv | {tree}").Trim();
            m.Run("mkdir -p top/in && mv sv top/in/renamed && mv top/in/renamed sv");
            Assert.Equal(before, m.Run($"stat -c %i sv | {tree}").Trim());
            // renameat2(RENAME_EXCHANGE) trades a subvolume's entry with a plain directory's, as
            // on btrfs, and back; a plain name does not cross subvolumes (EXDEV, 18).
            const string Exchange = "import ctypes,sys; libc=ctypes.CDLL(None,use_errno=True); r=libc.renameat2(-100,sys.argv[1].encode(),-100,sys.argv[2].encode(),2); sys.exit(0 if r==0 else ctypes.get_errno())";
            m.Run($"python3 -c \"{Exchange}\" sv top/in && test \"$(cat top/in/g)\" = three && test ! -e sv/g");
            Assert.Equal(before, m.Run($"stat -c %i top/in | {tree}").Trim());
            Assert.Equal("0", m.Run($"stat -c %i sv | {tree}").Trim());
            Assert.Equal(18, MountedImage.Sh($"python3 -c \"{Exchange}\" sv top/in/g", m.Dir).Code);
            m.Run($"python3 -c \"{Exchange}\" top/in sv && test \"$(cat sv/g)\" = three && test -d top/in && test ! -e top/in/g");
            Assert.Equal(before, m.Run($"stat -c %i sv | {tree}").Trim());
            Assert.NotEqual("0", before);
            var rm = MountedImage.Sh("rmdir sv 2>&1", m.Dir);
            Assert.NotEqual(0, rm.Code); // not empty
            Assert.Equal("sv", m.Run("ls -d */ | grep -v top | tr -d /").Trim());
            // Online: btrfs's SUBVOL_CREATE and SNAP_DESTROY ioctls on the parent directory
            // (what `reservoir subvolume create|delete PATH` sends); any other ioctl is ENOTTY.
            const string Ioctl = "import fcntl,os,sys; fd=os.open('.',os.O_RDONLY|os.O_DIRECTORY); b=bytearray(4096); n=sys.argv[2].encode(); b[8:8+len(n)]=n; fcntl.ioctl(fd,int(sys.argv[1],16),b)";
            // The kernel has "online" cached as missing, and the root's link count: the daemon
            // invalidates both, so the change shows at once (no waiting out the cache).
            var links = int.Parse(m.Run("test ! -e online && stat -c %h .").Trim());
            m.Run($"python3 -c \"{Ioctl}\" 5000940E online && test -d online && echo x > online/f");
            Assert.Equal(links + 1, int.Parse(m.Run("stat -c %h .").Trim()));
            Assert.NotEqual("0", m.Run("stat -c %i online | awk '{print int($1/1099511627776)}'").Trim()); // a tree of its own
            // Reservoir's list ioctl (what `reservoir subvolume list /mnt` sends): sv and online.
            Assert.Equal("2 sv online", m.Run("python3 -c \"import fcntl,os,struct; fd=os.open('.',os.O_RDONLY|os.O_DIRECTORY); b=bytearray(16376); fcntl.ioctl(fd,0xFFF85201,b); n=struct.unpack_from('<I',b,0)[0]; p=8; names=[]\nfor i in range(n):\n  l=struct.unpack_from('<H',b,p+33)[0]; names.append(b[p+35:p+35+l].decode()); p+=35+l+64\nprint(n,' '.join(names))\"").Trim());
            m.Run($"stat online >/dev/null && python3 -c \"{Ioctl}\" 5000940F online && test ! -e online");
            // Reservoir's read-only ioctl on a subvolume's root (`reservoir property set PATH ro true`).
            const string SetRo = "import fcntl,os,sys; fd=os.open(sys.argv[1],os.O_RDONLY|os.O_DIRECTORY); fcntl.ioctl(fd,0x40085202,int(sys.argv[2]).to_bytes(8,'little'))";
            m.Run($"python3 -c \"{SetRo}\" sv 1 && ! touch sv/ro 2>/dev/null && python3 -c \"{SetRo}\" sv 0 && touch sv/ro && rm sv/ro");
            // Reservoir's snapshot ioctl (`reservoir subvolume snapshot [-r] SRC DEST`): the
            // source named by its st_ino, then flags (1 = read-only), then the name.
            const string Snap = "import fcntl,os,sys; fd=os.open('.',os.O_RDONLY|os.O_DIRECTORY); b=bytearray(4096); b[0:8]=os.stat(sys.argv[1]).st_ino.to_bytes(8,'little'); b[8:16]=int(sys.argv[2]).to_bytes(8,'little'); n=sys.argv[3].encode(); b[16:16+len(n)]=n; fcntl.ioctl(fd,0x50005205,b)";
            m.Run($"python3 -c \"{Snap}\" sv 1 snap-ro && test \"$(cat snap-ro/g)\" = three && ! touch snap-ro/x 2>/dev/null");
            // Opening for writing in a read-only snapshot is refused at open, as on btrfs (not
            // at writeback of a mapped page, where the error would surface only at msync).
            Assert.Contains("Read-only file system", MountedImage.Sh("python3 -c \"open('snap-ro/g','r+')\" 2>&1", m.Dir).Out);
            m.Run($"python3 -c \"{Snap}\" sv 0 snap-rw && echo four > snap-rw/g && test \"$(cat sv/g)\" = three && test \"$(cat snap-rw/g)\" = four");
            Assert.NotEqual(0, MountedImage.Sh($"python3 -c \"{Snap}\" top 0 nope 2>&1", m.Dir).Code); // top is a directory, not a subvolume
            m.Run($"python3 -c \"{Ioctl}\" 5000940F snap-ro && python3 -c \"{Ioctl}\" 5000940F snap-rw && test ! -e snap-ro && test ! -e snap-rw");
            // Reservoir's qgroup list ioctl: quotas are off on this image, which it says as btrfs does (ENOTCONN).
            var q = MountedImage.Sh("python3 -c \"import fcntl,os; fd=os.open('.',os.O_RDONLY|os.O_DIRECTORY); fcntl.ioctl(fd,0xFFF85203,bytearray(16376))\" 2>&1", m.Dir);
            Assert.NotEqual(0, q.Code);
            Assert.Contains("not connected", q.Out);
            TestFs.Ok(m.Fs.EnableQuota());
            var q2 = m.Run("python3 -c \"import fcntl,os,struct; fd=os.open('.',os.O_RDONLY|os.O_DIRECTORY); b=bytearray(16376); fcntl.ioctl(fd,0xFFF85203,b); n=struct.unpack_from('<I',b,0)[0]; print(n, ' '.join(str(struct.unpack_from('<Q',b,8+48*i)[0] & 0xFFFFFFFFFFFF) for i in range(n)))\"").Trim();
            Assert.Equal("2 5 256", q2); // 0/5 and 0/256 (sv)
            var bad = MountedImage.Sh($"python3 -c \"{Ioctl}\" 5000947F x 2>&1", m.Dir);
            Assert.NotEqual(0, bad.Code);
            Assert.Contains("Inappropriate ioctl", bad.Out);
        }
        finally { m.Unmount(); }
        using (var dev = FileBlockDevice.Open(m.Image, readOnly: true))
        {
            var report = Fsck.Run(dev);
            Assert.True(report.Clean, string.Join("\n", report.Errors.Take(20)));
        }
        using (var dev = FileBlockDevice.Open(m.Image))
        using (var fs = Reservoir.Engine.Filesystem.Mount(dev, new() { CommitIntervalMs = 0 }))
        {
            var bad = Assert.Throws<FsException>(() => Reservoir.Fuse.Session.FuseSession.Mount(fs, m.Image, m.Dir, new Reservoir.Fuse.Session.FuseMountOptions { Subvol = "top" }));
            Assert.Contains("not a subvolume", bad.Message);
            Assert.NotEqual(0, MountedImage.Sh($"mountpoint -q {m.Dir}", "/").Code);
            using var s = Reservoir.Fuse.Session.FuseSession.Mount(fs, m.Image, m.Dir, new Reservoir.Fuse.Session.FuseMountOptions { Subvol = "/sv" });
            Assert.Equal("g", MountedImage.Sh("ls", m.Dir).Out.Trim());
            Assert.Equal("three", MountedImage.Sh("cat g", m.Dir).Out.Trim());
        }
        m.Dispose();
    }

    /// <summary>
    /// A shell whose working directory is inside a subvolume that another command deletes: the
    /// kernel still has the directory's node id and sends creates and lookups with it. Each
    /// must fail with ENOENT ("No such file or directory"), the daemon must not fail, and the
    /// space comes back in full; unmount, fsck clean. (Whether such a request comes while the
    /// tree is still being dropped depends on timing here; the engine's
    /// SubvolumeDeletionTests.NothingReachesADeletedSubvolumeWhileItsTreeIsDropped holds the drop and
    /// pins that case.)
    /// </summary>
    [Fact]
    public void AShellInsideADeletedSubvolumeChangesNothing()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        var m = new MountedImage(size: 256UL << 20, quota: true);
        try
        {
            m.Run("sync");
            TestFs.Ok(m.Fs.StatFs(out var before));
            // The working directory made last: its items are the tree's last, dropped last.
            m.Run($"{cli} subvolume create sv >/dev/null && mkdir sv/e && cd sv/e && seq 1 2000 | xargs -n 1000 touch && cd ../.. && " +
                "mkdir sv/d && for i in $(seq 1 50); do head -c 100000 /dev/urandom > sv/d/f$i; done && sync");
            var r = MountedImage.Sh("cd sv/d && " +
                $"{cli} subvolume delete ../../sv >/dev/null && " +
                "{ touch x 2>&1; mkdir y 2>&1; echo data > f1 2>&1; ls 2>&1; cat f2 >/dev/null 2>&1 && echo read-f2; true; }", m.Dir);
            Assert.Equal(0, r.Code);
            // touch, mkdir, ls and the redirection each: No such file or directory.
            Assert.True(r.Out.Split('\n').Count(l => l.Contains("No such file or directory")) == 4, r.Out);
            Assert.DoesNotContain("read-f2", r.Out);
            Assert.False(Directory.Exists(Path.Combine(m.Dir, "sv")));
            m.Run($"{cli} subvolume sync . && sync");
            Assert.Null(m.Fs.Fs.FailedReason);
            TestFs.Ok(m.Fs.StatFs(out var after));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
            Assert.Empty(m.Fs.VerifyReservations());
        }
        finally { m.Unmount(); }
        MountTests.ImageIsClean(m);
        Assert.Equal(0, m.Fs.LeakedBytes);
    }

    /// <summary>
    /// A subvolume deleted while a shell holds a file of it open, as on btrfs: the deletion
    /// goes through, `subvolume sync` waits (saying so) until the file is closed and then ends
    /// with the space back, and meanwhile `quota disable` is refused with the reason, not left
    /// hanging. (A sync that waited inside the daemon for a close that never came held a request
    /// thread for ever: the bridge fuzzer's three threads hung that way.)
    /// </summary>
    [Fact]
    public void SubvolumeSyncWaitsForAFileOfADeletedSubvolumeToBeClosed()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        string err = Path.Combine(Path.GetTempPath(), $"sync-{Guid.NewGuid():N}.err");
        var m = new MountedImage(size: 256UL << 20, quota: true);
        try
        {
            m.Run("sync");
            TestFs.Ok(m.Fs.StatFs(out var before));
            m.Run($"{cli} subvolume create sv >/dev/null && head -c 5000000 /dev/urandom > sv/f && sync");
            var r = MountedImage.Sh(
                "exec 3<sv/f && " +
                $"{cli} subvolume delete sv >/dev/null && {cli} subvolume list -d . && " +
                $"{{ {cli} quota disable . 2>&1; echo disable=$?; }} && " +
                // (Not the shell's descriptor 3 in the sync: it would wait for itself.)
                $"{{ {cli} subvolume sync . 2>{err} 3<&- & }} && pid=$! && sleep 3 && " +
                "{ kill -0 $pid && echo still-waiting; true; } && " +
                "head -c 10 <&3 | wc -c && exec 3<&- && " +
                "wait $pid; echo sync=$?", m.Dir, timeoutSec: 120);
            Assert.Equal(0, r.Code);
            Assert.Contains("until files of it are closed", r.Out);
            Assert.Contains("disable=1", r.Out);
            Assert.Contains("still-waiting", r.Out);
            Assert.Contains("\n10\n", "\n" + r.Out); // the open file still read after the deletion
            Assert.Contains("sync=0", r.Out);
            // What list -d and sync print, as btrfs-progs: the deleted one until it is dropped.
            Assert.Matches(@"(?m)^ID 256 gen \d+ top level 0 path DELETED$", r.Out);
            Assert.Contains("Waiting for 1 subvolume\n", r.Out);
            Assert.Contains("Subvolume id 256 is gone (1/1)\n", r.Out);
            Assert.Equal("", m.Run($"{cli} subvolume list -d ."));
            Assert.Contains("waiting for files of deleted subvolumes to be closed", File.ReadAllText(err));
            Assert.False(Directory.Exists(Path.Combine(m.Dir, "sv")));
            m.Run("sync");
            TestFs.Ok(m.Fs.StatFs(out var after));
            Assert.Equal(before.BlocksFree, after.BlocksFree);
            Assert.True(m.Fs.QuotaEnabled);
            Assert.Empty(m.Fs.VerifyReservations());
        }
        finally { m.Unmount(); File.Delete(err); }
        MountTests.ImageIsClean(m);
        Assert.Equal(0, m.Fs.LeakedBytes);
    }

    /// <summary>
    /// `subvolume delete` through a mount with btrfs-progs' options and words: "(no-commit)" by
    /// default, "(commit)" after -C and at the end of -c (each a commit of the daemon's), -i by
    /// id wherever the subvolume is linked; `subvolume sync PATH ID` waits for that one, not
    /// for another held by an open file.
    /// </summary>
    [Fact]
    public void SubvolumeDeleteTakesBtrfsProgsOptionsOnTheMount()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        var m = new MountedImage(size: 256UL << 20, quota: true);
        try
        {
            m.Run($"for s in a b c d e; do {cli} subvolume create $s >/dev/null; done; {cli} subvolume create a/n >/dev/null; echo x > e/f");
            string ids = m.Run($"{cli} subvolume list .");
            Assert.Contains("ID 261 gen", ids);
            Assert.Contains("path a/n", ids);
            // list's path filters and generation filters, as btrfs-progs': -o those directly in
            // the path's subvolume, -a all with the others marked, -G/-C N, +N, -N.
            Assert.Matches(@"^ID 261 gen \d+ top level 256 path a/n\n$", m.Run($"{cli} subvolume list -o a"));
            Assert.Equal(5, MountTests.Lines(m.Run($"{cli} subvolume list -o .")).Length);
            var everything = m.Run($"{cli} subvolume list -a .");
            Assert.Contains("top level 256 path <FS_TREE>/a/n\n", everything);
            Assert.Contains("top level 5 path b\n", everything);
            Assert.Equal("", m.Run($"{cli} subvolume list -G 0 ."));
            Assert.Equal(6, MountTests.Lines(m.Run($"{cli} subvolume list -G +1 -C -1000000 .")).Length);
            long commits = m.Fs.Fs.Stats.Commits;
            string outp = m.Run($"{cli} subvolume delete b && {cli} subvolume delete -c c d && {cli} subvolume delete -C -i 261 . && " +
                // A file of e held open by the shell: its drop waits; a sync of 256's id does not.
                // (If it waited for e, it would wait for ever: this shell closes the file after.)
                $"exec 3<e/f && {cli} subvolume delete e && {cli} subvolume delete -i 256 . && {cli} subvolume sync . 256 3<&- && exec 3<&-", timeoutSec: 60);
            // -c once at its end, -C once: two commits at least (the daemon's own may add more).
            Assert.True(m.Fs.Fs.Stats.Commits - commits >= 2, $"{m.Fs.Fs.Stats.Commits - commits} commits");
            Assert.Equal(
                $"Delete subvolume (no-commit): '{m.Dir}/b'\n" +
                $"Delete subvolume (no-commit): '{m.Dir}/c'\n" +
                $"Delete subvolume (commit): '{m.Dir}/d'\n" +
                "Delete subvolume (commit): subvolid=261\n" +
                $"Delete subvolume (no-commit): '{m.Dir}/e'\n" +
                "Delete subvolume (no-commit): subvolid=256\n" +
                "Waiting for 1 subvolume\nSubvolume id 256 is gone (1/1)\n", outp);
            var refused = MountedImage.Sh($"{cli} subvolume delete -i 5 .", m.Dir);
            Assert.Equal(1, refused.Code);
            Assert.Contains("the top-level subvolume (5) cannot be deleted", refused.Out);
            // The mount's root by path: its delete ioctl would go to the directory above, not
            // Reservoir's, which must not be taken for "not on a mounted Reservoir".
            var root = MountedImage.Sh($"{cli} subvolume delete . 2>&1", m.Dir);
            Assert.Equal((1, "reservoir subvolume delete: .: the root of its mount: delete it from a mount of the subvolume holding it, or by id (-i ID) on a mount of the image (the top level, 5, is never deleted)\n"), root);
            m.Run($"{cli} subvolume sync . 260 && {cli} subvolume sync .");
            Assert.Equal("", m.Run($"{cli} subvolume list ."));
            Assert.Empty(Directory.GetFileSystemEntries(m.Dir));
            Assert.Empty(m.Fs.VerifyReservations());
        }
        finally { m.Unmount(); }
        MountTests.ImageIsClean(m);
    }

    /// <summary>
    /// `subvolume find-new` through the mount, run as the NixOS "erase your darlings" scripts
    /// run btrfs's (the marker of a blank snapshot, then the paths from field 17 of every line
    /// but the last): exactly the files written after the snapshot; its lines as btrfs-progs
    /// prints them, the same offline on the image; "not a subvolume" for a plain directory.
    /// And `subvolume show -r ID | -u UUID` from any path, `subvolume set-default` by the
    /// subvolume's path (btrfs's one-argument form), online and offline, and `filesystem sync`.
    /// </summary>
    [Fact]
    public void FindNewShowByIdAndSetDefaultByPathAsBtrfsProgs()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        var m = new MountedImage(size: 256UL << 20);
        string lines;
        try
        {
            m.Run($"{cli} subvolume create root && mkdir -p root/etc && echo a > root/etc/keep && sync && {cli} subvolume snapshot -r root root-blank");
            string diff = m.Run($"OLD=$({cli} subvolume find-new root-blank 9999999); OLD=${{OLD#transid marker was }}; " +
                "echo x > root/etc/new && mkdir -p root/var/log && head -c 300000 /dev/urandom > root/var/log/z && ln -s ../etc/new root/var/l && " +
                $"{cli} subvolume find-new root \"$OLD\" | sed '$d' | cut -f17- -d' ' | sort | uniq");
            Assert.Equal("etc/new\nvar/l\nvar/log/z\n", diff);
            // filesystem sync: what was written is committed before the command returns.
            m.Run("head -c 100000 /dev/urandom > root/unsynced");
            long commits = Interlocked.Read(ref m.Fs.Stats.Commits);
            Assert.Equal("", m.Run($"{cli} filesystem sync root"));
            Assert.True(Interlocked.Read(ref m.Fs.Stats.Commits) > commits);
            lines = m.Run($"{cli} subvolume find-new root 0");
            Assert.Matches(@"^inode \d+ file offset 0 len 4096 disk start \d+ offset 0 gen \d+ flags NONE etc/keep\n", lines);
            Assert.Matches(@"\ninode \d+ file offset 0 len 10 disk start 0 offset 0 gen \d+ flags INLINE var/l\n", lines);
            Assert.Matches(@"\ntransid marker was \d+\n$", lines);
            var plain = MountedImage.Sh($"{cli} subvolume find-new root/etc 0 2>&1", m.Dir);
            Assert.Equal(1, plain.Code);
            Assert.Contains("root/etc: not a subvolume", plain.Out);
            // show by id and by uuid, from any path of the mount, as by the subvolume's path.
            string byPath = m.Run($"{cli} subvolume show root");
            Assert.Equal(byPath, m.Run($"{cli} subvolume show -r 256 root-blank"));
            string uuid = System.Text.RegularExpressions.Regex.Match(byPath, @"\tUUID: \t+([0-9a-f-]{36})\n").Groups[1].Value;
            Assert.Equal(byPath, m.Run($"{cli} subvolume show --uuid {uuid} root/etc"));
            // A snapshot into an existing directory: inside it, under the source's name.
            Assert.Equal("Create a readonly snapshot of 'root' in 'snaps//root'\n", m.Run($"mkdir snaps && {cli} subvolume snapshot -r root snaps/"));
            Assert.Matches(@"^ID \d+ gen \d+ top level 5 path snaps/root\n$", m.Run($"{cli} subvolume list . | grep snaps/"));
            // set-default by path: the subvolume's, not a directory's.
            m.Run($"{cli} subvolume set-default root");
            Assert.Matches(@"^ID 256 gen \d+ top level 5 path root\n$", m.Run($"{cli} subvolume get-default ."));
            var dir = MountedImage.Sh($"{cli} subvolume set-default root/etc 2>&1", m.Dir);
            Assert.Equal(1, dir.Code);
            Assert.Contains("not a subvolume", dir.Out);
            m.Run($"{cli} subvolume set-default 5 .");
        }
        finally { m.Unmount(); }
        Assert.Equal((0, ""), MountedImage.Sh($"{cli} filesystem sync {m.Image} 2>&1", m.Dir));
        // Offline, on the image: the same lines (nothing changed since).
        Assert.Equal(lines, MountedImage.Sh($"{cli} subvolume find-new {m.Image} root 0", m.Dir).Out);
        Assert.Equal(0, MountedImage.Sh($"{cli} subvolume set-default {m.Image} root-blank", m.Dir).Code);
        Assert.Matches(@"^ID 257 gen \d+ top level 5 path root-blank\n$", MountedImage.Sh($"{cli} subvolume get-default {m.Image}", m.Dir).Out);
        MountTests.ImageIsClean(m);
        m.Dispose();
    }

    /// <summary>
    /// btrfs's user_subvol_rm_allowed: with it, a user deletes a subvolume where rmdir(2) would
    /// let them remove a directory in its place and they may write and search its root (a
    /// writable snapshot of theirs full of files: yes; a read-only one: EROFS, as on btrfs;
    /// root's 755 subvolume: EACCES; someone else's in a sticky directory: EPERM); without
    /// it, only root and the image's owner delete subvolumes through the mount.
    /// </summary>
    [Fact]
    public void UserSubvolRmAllowedLetsAUserDeleteWhatRmdirWould()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        string asUser = "setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp DOTNET_CLI_HOME=/tmp ";
        var m = new MountedImage(size: 256UL << 20, allowOther: true, options: "user_subvol_rm_allowed");
        try
        {
            m.Run($"chmod 755 .. && chmod 777 . && {cli} subvolume create rootsv && mkdir t && chmod 1777 t && {cli} subvolume create t/rs && chmod 777 t/rs");
            m.Run($"{asUser} {cli} subvolume create u1 && {asUser} sh -c 'echo data > u1/f && mkdir u1/d && echo more > u1/d/g' && " +
                $"{asUser} {cli} subvolume snapshot -r u1 u1-ro && {asUser} {cli} subvolume snapshot u1 u1-rw");
            Assert.Equal("Delete subvolume (no-commit): '" + Path.Combine(m.Dir, "u1-rw") + "'\n", m.Run($"{asUser} {cli} subvolume delete u1-rw"));
            var ro = MountedImage.Sh($"{asUser} {cli} subvolume delete u1-ro 2>&1", m.Dir);
            Assert.Equal(1, ro.Code);
            Assert.Contains("read-only", ro.Out, StringComparison.OrdinalIgnoreCase);
            var others = MountedImage.Sh($"{asUser} {cli} subvolume delete rootsv 2>&1", m.Dir);
            Assert.Equal(1, others.Code);
            Assert.Contains("ermission denied", others.Out);
            var sticky = MountedImage.Sh($"{asUser} {cli} subvolume delete t/rs 2>&1", m.Dir);
            Assert.Equal(1, sticky.Code);
            Assert.Contains("user_subvol_rm_allowed", sticky.Out); // EPERM, said as such
            m.Run($"{asUser} {cli} subvolume delete u1");
            Assert.Equal("rootsv\nt\nu1-ro\n", m.Run("ls"));
            Assert.Equal("rs\n", m.Run("ls t"));
            m.Run($"{cli} subvolume sync .");
        }
        finally { m.Unmount(); }
        MountTests.ImageIsClean(m);
        m.Dispose();

        var plain = new MountedImage(size: 256UL << 20, allowOther: true);
        try
        {
            plain.Run($"chmod 755 .. && chmod 777 . && {asUser} {cli} subvolume create mine");
            var refused = MountedImage.Sh($"{asUser} {cli} subvolume delete mine 2>&1", plain.Dir);
            Assert.Equal(1, refused.Code);
            Assert.Contains("only root", refused.Out);
            Assert.True(Directory.Exists(Path.Combine(plain.Dir, "mine")));
        }
        finally { plain.Unmount(); }
        plain.Dispose();
    }

    /// <summary>
    /// `property get|set|list` on the mount, answering what btrfs-progs answers on a kernel
    /// btrfs (recorded from `btrfs property` on a loop device): the mount's root has ro and
    /// label, a subvolume ro, a plain directory nothing (and succeeds); a property the object
    /// has not is "not compatible" and fails, an unknown one fails; `-t` keeps to one type;
    /// what set changes, get and the filesystem show (a read-only subvolume refuses a create).
    /// </summary>
    [Fact]
    public void PropertiesOnTheMountAnswerAsBtrfsProgs()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        using var m = new MountedImage();
        TestFs.Ok(m.Fs.CreateSubvolume(Filesystem.RootIno, "sv", 0, 0, out _));
        m.Run("mkdir d");
        Assert.Equal("ro=false\nlabel=\n", m.Run($"{cli} property get ."));
        Assert.Equal("ro=false\n", m.Run($"{cli} property get sv"));
        Assert.Equal((0, ""), MountedImage.Sh($"{cli} property get d 2>&1", m.Dir));
        var notRo = MountedImage.Sh($"{cli} property get d ro 2>&1", m.Dir);
        Assert.Equal((1, "reservoir property get: object is not compatible with property: ro\n"), (notRo.Code, notRo.Out));
        var notLabel = MountedImage.Sh($"{cli} property get sv label 2>&1", m.Dir);
        Assert.Equal((1, "reservoir property get: object is not compatible with property: label\n"), (notLabel.Code, notLabel.Out));
        Assert.Equal(1, MountedImage.Sh($"{cli} property get sv bogus", m.Dir).Code);
        Assert.Equal("ro                  read-only status of a subvolume\nlabel               label of the filesystem\n", m.Run($"{cli} property list ."));
        Assert.Equal("ro                  read-only status of a subvolume\n", m.Run($"{cli} property list -t s ."));
        m.Run($"{cli} property set sv ro true && {cli} property set . label hello");
        Assert.Equal("ro=true\n", m.Run($"{cli} property get -t subvol sv"));
        Assert.Equal("label=hello\n", m.Run($"{cli} property get -t f ."));
        var json = JsonDocument.Parse(m.Run($"{cli} property get . --format json")).RootElement;
        Assert.Equal((false, "hello"), (json.GetProperty("ro").GetBoolean(), json.GetProperty("label").GetString()));
        Assert.Equal("hello", JsonDocument.Parse(m.Run($"{cli} filesystem label . --format json")).RootElement.GetProperty("label").GetString());
        Assert.NotEqual(0, MountedImage.Sh("touch sv/x", m.Dir).Code);
        Assert.Equal("hello", m.Fs.Label);
        m.Run($"{cli} property set sv ro false && touch sv/x");
    }

    /// <summary>
    /// The quota and subvolume administration commands on a mounted filesystem (online, as
    /// btrfs-progs' on a mount point): quota enable, a level-1 group with a member and a limit
    /// that a program then runs into, show with parents and children, destroy refused while it
    /// has members, set-default and get-default, sync, quota disable (after which the limit no longer holds),
    /// status; then unmount and fsck clean.
    /// </summary>
    [Fact]
    public void QuotaAndSubvolumeCommandsWorkOnTheMount()
    {
        string cli = $"dotnet {Path.Combine(AppContext.BaseDirectory, "reservoir.dll")}";
        var m = new MountedImage(size: 256UL << 20);
        try
        {
            Assert.Equal($"Quotas on .:\n  Enabled:                 no\n", m.Run($"{cli} quota status ."));
            Assert.Equal(1, MountedImage.Sh($"{cli} quota status --is-enabled .", m.Dir).Code);
            m.Run($"{cli} quota enable . && {cli} subvolume create sv && {cli} qgroup create 1/1 . && {cli} qgroup assign 0/256 1/1 . && {cli} qgroup limit 1M . 1/1");
            // As btrfs-progs prints it: the top level's and sv's level-0 groups, and 1/1.
            Assert.Equal("Quotas on .:\n  Enabled:                 yes\n  Mode:                    qgroup (full accounting)\n  Inconsistent:            no\n" +
                "  Override limits:         no\n  Total count:             3\n  Level 0:                 2\n", m.Run($"{cli} quota status ."));
            Assert.Equal(0, MountedImage.Sh($"{cli} quota status --is-enabled .", m.Dir).Code);
            Assert.Contains("quota rescan finished", m.Run($"{cli} quota rescan ."));
            var show = m.Run($"{cli} qgroup show -p -c -r .");
            Assert.Matches(@"0/256 .* 1/1 ", show);
            Assert.Matches(@"1/1 .*1\.00MiB.* 0/256 +<1 member qgroup>", show);
            Assert.Matches(@"0/256 .* sv\n", show); // the Path column, through the mount
            Assert.Equal("0/256 1/1", string.Join(" ", m.Run($"{cli} qgroup show -F sv").Split('\n').Skip(2).Where(l => l.Length > 0).Select(l => l.Split(' ')[0])));
            var dd = MountedImage.Sh("dd if=/dev/urandom of=sv/f bs=1M count=3 conv=fsync 2>&1", m.Dir);
            Assert.NotEqual(0, dd.Code);
            Assert.Contains("Disk quota exceeded", dd.Out);
            // btrfs-progs' order and an exclusive limit on a subvolume's group, through the
            // mount: the referenced limit set before stays.
            m.Run($"{cli} qgroup limit none 1/1 . && {cli} qgroup limit 8M sv && {cli} qgroup limit -e 2M 0/256 .");
            Assert.Matches(@"0/256 .* 8\.00MiB +2\.00MiB ", m.Run($"{cli} qgroup show -re ."));
            var excl = MountedImage.Sh("dd if=/dev/urandom of=sv/g bs=1M count=3 conv=fsync 2>&1", m.Dir);
            Assert.NotEqual(0, excl.Code);
            Assert.Contains("Disk quota exceeded", excl.Out);
            m.Run($"{cli} qgroup limit -e none 0/256 . && {cli} qgroup limit none sv && {cli} qgroup limit 1M 1/1 . && rm -f sv/g");
            // subvolume show through the mount: its snapshots (by their parent uuid) and its
            // quota group, as btrfs-progs prints them.
            var made = JsonDocument.Parse(m.Run($"{cli} subvolume snapshot -r sv sv-ro --format json")).RootElement;
            Assert.Equal(("sv-ro", true), (made.GetProperty("path").GetString(), made.GetProperty("read_only").GetBoolean()));
            Assert.Matches($@"ID {made.GetProperty("id").GetUInt64()} gen \d+ top level 5 path sv-ro\n", m.Run($"{cli} subvolume list ."));
            var shown = m.Run($"{cli} subvolume show sv");
            Assert.Matches(@"\tSnapshot\(s\):\n\t\t\t\tsv-ro\n\tQuota group:\t\t0/256\n", shown);
            Assert.Contains("\t  Limit referenced:\t-\n", shown); // the limit is on 1/1, not on 0/256
            Assert.Matches(@"\tParent UUID: \t\t[0-9a-f-]{36}\n", m.Run($"{cli} subvolume show sv-ro"));
            m.Run($"{cli} subvolume delete sv-ro");
            // Its group went with it: btrfs scripts' clear-stale finds nothing, silently.
            Assert.Equal((0, ""), MountedImage.Sh($"{cli} qgroup clear-stale . 2>&1", m.Dir));
            // -i through the mount: the snapshot's group joins 1/1 (it also has sv's) and 1/2.
            m.Run($"{cli} qgroup create 1/2 . && {cli} subvolume snapshot sv sv-t -i 1/1 -i 1/2");
            Assert.Matches(@"0/\d+ .* 1/1,1/2 +sv-t\n", m.Run($"{cli} qgroup show -p ."));
            var refused = MountedImage.Sh($"{cli} subvolume create sv-u -i 1/9 2>&1", m.Dir);
            Assert.NotEqual(0, refused.Code);
            Assert.Contains("-i 1/9: no such qgroup", refused.Out);
            Assert.False(Directory.Exists(Path.Combine(m.Dir, "sv-u")));
            m.Run($"{cli} subvolume delete sv-t");
            // filesystem usage through the mount: its df line is what statfs says at the top
            // (after the cleaner has given sv-ro's blocks back, so nothing moves in between).
            m.Run($"{cli} subvolume sync .");
            var usage = JsonDocument.Parse(m.Run($"{cli} filesystem usage --format json ."));
            Assert.Equal(ulong.Parse(m.Run("df -B1 --output=avail . | tail -1").Trim()), usage.RootElement.GetProperty("free_statfs_df").GetUInt64());
            Assert.Equal(256UL << 20, usage.RootElement.GetProperty("device_size").GetUInt64());
            // The per-kind rows name the device as btrfs-progs does: the mount's source.
            string source = m.Run($"findmnt -n -o SOURCE --target {m.Dir}").Trim();
            Assert.Matches(@"Data,single: Size:[0-9.]+MiB, Used:[0-9.]+MiB \([0-9.]+%\)\n   " + System.Text.RegularExpressions.Regex.Escape(source) + "\t", m.Run($"{cli} filesystem usage ."));
            Assert.Matches(@"\n 1 " + System.Text.RegularExpressions.Regex.Escape(source) + @" +[0-9.]+MiB", m.Run($"{cli} filesystem usage -T ."));
            var busy = MountedImage.Sh($"{cli} qgroup destroy 1/1 . 2>&1", m.Dir);
            Assert.NotEqual(0, busy.Code);
            Assert.Contains("still has members", busy.Out);
            m.Run($"{cli} qgroup remove 0/256 1/1 . && {cli} qgroup destroy 1/1 .");
            Assert.DoesNotContain("1/1", m.Run($"{cli} qgroup show --format json ."));
            var none = MountedImage.Sh($"{cli} subvolume set-default 999 . 2>&1", m.Dir);
            Assert.NotEqual(0, none.Code);
            Assert.Contains("no subvolume 999", none.Out);
            Assert.Equal("ID 5 (FS_TREE)\n", m.Run($"{cli} subvolume get-default ."));
            m.Run($"{cli} subvolume set-default 256 . && {cli} subvolume sync . && {cli} quota disable . && {cli} quota disable .");
            Assert.Matches(@"^ID 256 gen \d+ top level 5 path sv\n$", m.Run($"{cli} subvolume get-default ."));
            Assert.Contains("Enabled:                 no", m.Run($"{cli} quota status ."));
            m.Run("rm -f sv/f && dd if=/dev/urandom of=sv/g bs=1M count=3 conv=fsync status=none"); // no limit any more
        }
        finally { m.Unmount(); }
        Assert.Equal(256UL, m.Fs.DefaultSubvolume);
        Assert.False(m.Fs.QuotaEnabled);
        using (var dev = FileBlockDevice.Open(m.Image, readOnly: true))
        {
            var report = Fsck.Run(dev);
            Assert.True(report.Clean, string.Join("\n", report.Errors.Take(20)));
        }
        m.Dispose();
    }
}

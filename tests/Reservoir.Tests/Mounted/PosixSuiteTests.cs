using Xunit;
using Xunit.Abstractions;

namespace Reservoir.Tests.Mounted;

/// <summary>
/// POSIX namespace rules through the mount, checked against the kernel's ext4 on a loop device:
/// the same script runs on both and must give the same answers (exit status of every step).
/// </summary>
public class PosixSuiteTests(ITestOutputHelper log)
{
    /// <summary>Each line prints "name status" for one rule.</summary>
    private const string Suite = """
        t() { name=$1; shift; ( eval "$@" ) >/dev/null 2>&1; echo "$name $?"; }
        t mkdir_new 'mkdir a'
        t mkdir_exists 'mkdir a'
        t rmdir_missing 'rmdir nope'
        t file_create 'echo x > a/f'
        t rmdir_nonempty 'rmdir a'
        t unlink_dir 'unlink a'
        t rm_file_as_dir 'rmdir a/f'
        t mkdir_under_file 'mkdir a/f/x'
        t rename_into_self 'mv a a/sub'
        t mkdir_b 'mkdir b && mkdir b/c'
        t rename_dir_over_nonempty 'mv a b'
        t rename_dir_over_empty 'mkdir e && mv e b/c'
        t rename_file_over_dir 'mv a/f b'
        t rename_dir_over_file 'mkdir d2 && echo y > f2 && mv d2 f2'
        t link_dir 'ln a a2'
        t hardlink_count 'ln a/f a/g && test $(stat -c %h a/f) = 2'
        t rename_same_inode 'mv a/f a/g && test -e a/f'
        t noreplace 'touch r1 r2 && mv -n r1 r2; test -e r1'
        t exchange 'echo 1 > x1 && echo 2 > x2 && (command -v renameat2_test >/dev/null || true)'
        t symlink_loop 'ln -s l1 l2 && ln -s l2 l1 && cat l1'
        t symlink_dangling 'ln -s nowhere dl && test -L dl && ! test -e dl'
        t long_name 'touch $(printf "n%.0s" $(seq 256))'
        t max_name 'touch $(printf "m%.0s" $(seq 255))'
        t dot_dotdot 'test $(stat -c %i a/.) = $(stat -c %i a) && test $(stat -c %i a/..) = $(stat -c %i .)'
        t dir_nlink 'mkdir n && mkdir n/1 n/2 && test $(stat -c %h n) = 4'
        t chmod_ok 'touch cm && chmod 640 cm && test $(stat -c %a cm) = 640'
        t truncate_grow 'echo -n abc > tr && truncate -s 10 tr && test $(stat -c %s tr) = 10 && test "$(head -c 3 tr)" = abc'
        t truncate_shrink 'truncate -s 1 tr && test "$(cat tr)" = a'
        t append 'echo -n 1 > ap && echo -n 2 >> ap && test "$(cat ap)" = 12'
        t mknod_fifo 'mkfifo ff && test -p ff'
        t readdir_count 'mkdir many && for i in $(seq 300); do touch many/$i; done && test $(ls many | wc -l) = 300'
        t rm_rf 'rm -rf many && ! test -e many'
        t utime 'touch -d "2001-02-03 04:05:06.123456789" ut && test "$(stat -c %y ut)" = "2001-02-03 04:05:06.123456789 +0000"'
        t mtime_changes 'touch -d 2000-01-01 mt && echo z > mt && test $(stat -c %Y mt) -gt 946684800'
        t seek_hole 'truncate -s 1M sh && echo x >> sh && python3 -c "import os;f=os.open(\"sh\",os.O_RDONLY);print(os.lseek(f,0,os.SEEK_DATA))" | grep -q 1048576'
        """;

    /// <summary>
    /// Who loses set-user-ID, set-group-ID and file capabilities, and when: a write, a
    /// truncate or an O_TRUNC open by a caller without CAP_FSETID clears set-user-ID, and
    /// set-group-ID when the group may execute; root keeps them; chown clears them on files,
    /// not on directories; any write, truncate or chown drops security.capability. Each line
    /// prints "name mode" (or the number of capabilities left). The unprivileged steps run as
    /// uid 1000 through setpriv, with every capability dropped.
    /// </summary>
    private const string PrivilegeSuite = """
        U='setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all --bounding-set=-all'
        mkdir -m 1777 p && cd p || exit 1
        m() { echo "$1 $(stat -c %a "$1")"; }
        $U sh -c 'echo x > w1 && chmod 6755 w1 && echo y >> w1'; m w1
        $U sh -c 'echo x > w2 && chmod 6745 w2 && echo y >> w2'; m w2
        echo x > w3 && chmod 6755 w3 && echo y >> w3; m w3
        $U sh -c 'echo x > w4 && chmod 6755 w4 && truncate -s 0 w4'; m w4
        $U sh -c 'echo x > w5 && chmod 6755 w5 && echo z > w5'; m w5
        echo x > w6 && chmod 6755 w6 && chown 1000:1000 w6; m w6
        mkdir w7 && chmod 2755 w7 && chown 1000 w7; m w7
        echo x > w8 && chmod 6755 w8 && truncate -s 0 w8; m w8
        $U sh -c 'head -c 8192 /dev/zero > w9 && chmod 6755 w9 && dd if=/dev/zero of=w9 bs=4096 count=1 oflag=direct conv=notrunc 2>/dev/null'; m w9
        $U sh -c 'echo x > w10 && chmod 4755 w10 && echo y >> w10'; m w10
        $U sh -c 'echo x > w11 && chmod 6755 w11 && : >> w11'; m w11
        $U sh -c 'echo x > w12 && chmod 6755 w12 && fallocate -l 8192 w12'; m w12
        $U sh -c 'echo x > w13 && chmod 6755 w13 && fallocate -p -o 0 -l 4096 w13'; m w13
        $U sh -c 'head -c 8192 /dev/urandom > src13 && echo x > w14 && chmod 6755 w14 && python3 -c "import os; s=os.open(\"src13\", os.O_RDONLY); d=os.open(\"w14\", os.O_WRONLY); os.copy_file_range(s, d, 8192)"'; m w14
        $U sh -c 'echo x > w15 && chmod 6755 w15 && python3 -c "import mmap,os; f=os.open(\"w15\", os.O_RDWR); m=mmap.mmap(f, 2); m[0:1]=b\"y\"; m.flush()"'; m w15
        echo x > c1 && setcap cap_net_raw+ep c1 && echo y >> c1; echo "c1 $(getcap c1 | wc -l)"
        echo x > c2 && setcap cap_net_raw+ep c2 && chown 1000 c2; echo "c2 $(getcap c2 | wc -l)"
        echo x > c3 && setcap cap_net_raw+ep c3 && truncate -s 0 c3; echo "c3 $(getcap c3 | wc -l)"
        echo x > c4 && setcap cap_net_raw+ep c4 && chmod 700 c4; echo "c4 $(getcap c4 | wc -l)"
        """;

    private static string Results(string dir, string suite = Suite) => MountedImage.Sh(suite, dir, 120).Out;

    [Fact]
    public void NamespaceRulesMatchExt4() => SameAsExt4(Suite, 30);

    [Fact]
    public void PrivilegesAreDroppedAsOnExt4() => SameAsExt4(PrivilegeSuite, 15);

    private void SameAsExt4(string suite, int lines)
    {
        using var m = new MountedImage(size: 128UL << 20, allowOther: true);
        // The unprivileged steps must reach the mount (the temporary directory is private).
        MountedImage.Sh($"chmod 755 {Path.GetDirectoryName(m.Dir)}", "/");
        string ours = Results(m.Dir, suite);
        string ext4Root = Directory.CreateTempSubdirectory("ext4-ref-").FullName;
        string img = Path.Combine(ext4Root, "ext4.img"), mnt = Path.Combine(ext4Root, "mnt");
        Directory.CreateDirectory(mnt);
        var prep = MountedImage.Sh($"chmod 755 {ext4Root} && truncate -s 128M {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {mnt}", "/");
        Assert.True(prep.Code == 0, "could not make the ext4 reference mount: " + prep.Out);
        string theirs;
        try { theirs = Results(mnt, suite); }
        finally { MountedImage.Sh($"umount {mnt}; rm -rf {ext4Root}", "/"); }
        log.WriteLine(ours);
        var a = ours.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var b = theirs.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("lost+found")).ToArray();
        Assert.True(a.Length >= lines, "the suite did not run: " + ours);
        Assert.True(a.Length == b.Length, $"reservoir gave {a.Length} lines, ext4 {b.Length}:\n{ours}\n---\n{theirs}");
        var diffs = a.Zip(b).Where(p => p.First != p.Second).Select(p => $"reservoir: {p.First}   ext4: {p.Second}").ToList();
        Assert.True(diffs.Count == 0, string.Join("\n", diffs));
    }
}

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

    private static string Results(string dir) => MountedImage.Sh(Suite, dir, 120).Out;

    [Fact]
    public void NamespaceRulesMatchExt4()
    {
        using var m = new MountedImage(size: 128UL << 20);
        string ours = Results(m.Dir);
        string ext4Root = Directory.CreateTempSubdirectory("ext4-ref-").FullName;
        string img = Path.Combine(ext4Root, "ext4.img"), mnt = Path.Combine(ext4Root, "mnt");
        Directory.CreateDirectory(mnt);
        var prep = MountedImage.Sh($"truncate -s 128M {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {mnt}", "/");
        Assert.True(prep.Code == 0, "could not make the ext4 reference mount: " + prep.Out);
        string theirs;
        try { theirs = Results(mnt); }
        finally { MountedImage.Sh($"umount {mnt}; rm -rf {ext4Root}", "/"); }
        log.WriteLine(ours);
        var a = ours.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var b = theirs.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("lost+found")).ToArray();
        Assert.True(a.Length >= 30, "the suite did not run: " + ours);
        var diffs = a.Zip(b).Where(p => p.First != p.Second).Select(p => $"reservoir: {p.First}   ext4: {p.Second}").ToList();
        Assert.True(diffs.Count == 0, string.Join("\n", diffs));
    }
}

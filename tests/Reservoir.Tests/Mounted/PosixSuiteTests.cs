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
        t relatime 'echo x > rt && touch -a -d 2020-01-01 rt && cat rt >/dev/null && test $(stat -c %X rt) -gt 1577836800'
        t relatime_once 'a=$(stat -c %X.%x rt) && cat rt >/dev/null && test "$(stat -c %X.%x rt)" = "$a"'
        t dir_atime 'mkdir rd && touch -a -d 2020-01-01 rd && ls rd >/dev/null && test $(stat -c %X rd) -gt 1577836800'
        t birth_time 'touch bt && test $(stat -c %W bt) -gt 0 && touch -d 2001-01-01 bt && test $(stat -c %W bt) -gt 978307200 && test $(stat -c %Y bt) = 978307200'
        t statx_rdev 'mknod cdv c 4095 1048575 && test "$(stat -c %Hr:%Lr:%W cdv | cut -d: -f1,2)" = 4095:1048575'
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

    /// <summary>
    /// Who may do what, as the VFS decides for a kernel filesystem: mode bits by class (only the
    /// caller's own class counts), supplementary groups, search permission on every directory of
    /// a path (also after another user walked it), the sticky bit, ownership for chmod, chown
    /// and explicit times, write permission for "touch" and truncate, execute without read,
    /// set-group-ID directories and chmod's set-group-ID rule, user.* attributes, access(2).
    /// A runs as uid 1000 with no groups, B as uid 1001 in group 2000.
    /// </summary>
    private const string PermissionSuite = """
        A='setpriv --reuid=1000 --regid=1000 --clear-groups'
        B='setpriv --reuid=1001 --regid=1001 --groups=2000'
        t() { name=$1; shift; ( eval "$@" ) >/dev/null 2>&1; echo "$name $?"; }
        py() { python3 -c "$1"; }
        mkdir -m 755 top && cd top || exit 1
        mkdir -m 777 open open2 && mkdir -m 755 ro && touch ro/f && mkdir ro/d
        echo secret > s600 && chmod 600 s600 && echo x > r644 && chmod 644 r644 && echo x > w666 && chmod 666 w666
        t create_in_unwritable "$A touch f0"
        t create_in_open "$A touch open/a"
        t read_denied "$A cat s600"
        t read_allowed "$A cat r644"
        t write_denied "$A sh -c 'echo y >> r644'"
        t write_allowed "$A sh -c 'echo y >> w666'"
        t access_r "$A test -r r644"
        t access_w "$A test -w r644"
        t access_x "$A test -x r644"
        t access_r_denied "$A test -r s600"
        mkdir -m 700 priv && echo x > priv/f && chmod 644 priv/f
        t traverse_denied "$A cat priv/f"
        t list_denied "$A ls priv"
        t stat_denied "$A stat priv/f"
        t traverse_after_root "cat priv/f && $A cat priv/f"
        t stat_after_root "stat priv/f && $A stat priv/f"
        t cd_denied "$A sh -c 'cd priv'"
        t access_dir_x "$A test -x priv"
        mkdir -m 711 xonly && echo x > xonly/f && chmod 644 xonly/f
        t search_only_read "$A cat xonly/f"
        t search_only_list "$A ls xonly"
        mkdir -m 744 ronly && touch ronly/f
        t read_only_dir_stat "$A stat ronly/f"
        t read_only_dir_list "$A ls ronly"
        mkdir -m 770 grp && chgrp 2000 grp
        t group_create "$B touch grp/b"
        t nongroup_create "$A touch grp/a"
        echo x > g640 && chgrp 2000 g640 && chmod 640 g640
        t group_read "$B cat g640"
        t other_read_denied "$A cat g640"
        echo x > g604 && chgrp 2000 g604 && chmod 604 g604
        t group_bits_only "$B cat g604"
        t other_bits "$A cat g604"
        echo x > o044 && chown 1000 o044 && chmod 044 o044
        t owner_bits_only "$A cat o044"
        mkdir -m 1777 st && $A touch st/a st/a2 && $B touch st/b st/b2
        t sticky_unlink_other "$A rm -f st/b"
        t sticky_unlink_own "$A rm -f st/a"
        t sticky_rename_other "$A mv st/b st/c"
        t sticky_replace_other "$A mv st/a2 st/b2"
        t sticky_root "rm -f st/b"
        t sticky_dir_owner "chown 1001 st && $B rm -f st/a2"
        t unlink_unwritable "$A rm -f ro/f"
        t rmdir_unwritable "$A rmdir ro/d"
        t rename_out_of_unwritable "$A mv ro/f open/f"
        t rename_into_unwritable "$A touch open/g && $A mv open/g ro/g"
        mkdir open/rootdir
        t move_unwritable_dir "$A mv open/rootdir open2/"
        t rename_unwritable_dir_in_place "$A mv open/rootdir open/rootdir2"
        t link_into_unwritable "$A touch open/lk && $A ln open/lk ro/lk"
        t symlink_into_unwritable "$A ln -s x ro/s"
        t mkdir_into_unwritable "$A mkdir ro/m"
        t mkfifo_into_unwritable "$A mkfifo ro/p"
        t chmod_not_owner "$A chmod 777 r644"
        t chmod_owner "$A touch open/own && $A chmod 600 open/own"
        t chown_give_away "$A chown 1001 open/own"
        t chown_to_self "$A chown 1000 open/own"
        t chgrp_member "$B touch open/bf && $B chgrp 2000 open/bf"
        t chgrp_nonmember "$A chgrp 2000 open/own"
        t chmod_drops_sgid "$A touch open/sg && chgrp 2000 open/sg && $A chmod 2755 open/sg && test \$(stat -c %a open/sg) = 755"
        t chmod_keeps_sgid "$B touch open/sg2 && $B chgrp 2000 open/sg2 && $B chmod 2755 open/sg2 && test \$(stat -c %a open/sg2) = 2755"
        t utime_explicit_other "$A touch -d 2001-01-01 w666"
        t utime_explicit_own "$A touch -d 2001-01-01 open/own"
        t utime_now_writer "$A touch w666"
        t utime_now_reader "$A touch r644"
        t utime_atime_only_writer "$A touch -a w666"
        t truncate_reader "$A truncate -s 0 r644"
        t truncate_writer "$A truncate -s 0 w666"
        t open_trunc_reader "$A python3 -c \"import os; os.open('r644', os.O_RDONLY | os.O_TRUNC)\""
        t r644_kept "test -s r644"
        t ftruncate_after_chmod "$A python3 -c \"import os; f=os.open('open/ft', os.O_RDWR | os.O_CREAT, 0o644); os.write(f, b'abc'); os.chmod('open/ft', 0o400); os.ftruncate(f, 1)\""
        t create_mode_denies_creator "$A python3 -c \"import os; f=os.open('open/c444', os.O_WRONLY | os.O_CREAT, 0o444); os.write(f, b'x')\""
        cp /bin/true xbin && chmod 711 xbin && cp /bin/true xbin744 && chmod 744 xbin744 && cp /bin/true n644 && chmod 644 n644
        t exec_without_read "$A ./xbin"
        t exec_denied "$A ./xbin744"
        t exec_root_no_x "./n644"
        py "import os; os.setxattr('r644', 'user.a', b'1'); os.setxattr('s600', 'user.a', b'1')"
        t xattr_write_denied "$A python3 -c \"import os; os.setxattr('r644', 'user.b', b'1')\""
        t xattr_read_allowed "$A python3 -c \"import os; os.getxattr('r644', 'user.a')\""
        t xattr_read_denied "$A python3 -c \"import os; os.getxattr('s600', 'user.a')\""
        t xattr_remove_denied "$A python3 -c \"import os; os.removexattr('r644', 'user.a')\""
        t xattr_own "$A python3 -c \"import os; os.setxattr('open/own', 'user.c', b'1'); os.getxattr('open/own', 'user.c')\""
        mkdir -m 311 wx
        t opendir_denied "$A ls wx"
        mkdir -m 2777 sgd && chgrp 2000 sgd
        t sgid_file_group "$A touch sgd/f && test \$(stat -c %g sgd/f) = 2000"
        t sgid_dir_inherits "$A mkdir sgd/d && test \$(stat -c %g sgd/d) = 2000 && test -g sgd/d"
        t sgid_create_strip "$A python3 -c \"import os; os.close(os.open('sgd/s', os.O_CREAT | os.O_WRONLY, 0o2755))\" && test \$(stat -c %a sgd/s) = 755"
        mkdir -m 755 later && echo x > later/f && chmod 644 later/f
        # later/f is now cached for the entry timeout (1 s) unless the chmod expires it; the expiry
        # is sent after the chmod's reply, so the check waits up to 0.8 s for it to land (a
        # loaded machine took more than 0.2 s), still short of the timeout that would hide its loss
        t before_chmod "$A cat later/f"
        t after_chmod "chmod 700 later && for i in 1 2 3 4 5 6 7 8; do $A cat later/f || break; sleep 0.1; done; $A cat later/f"
        t after_chmod_back "chmod 755 later && $A cat later/f"
        """;

    /// <summary>
    /// Attribute names as ext4 answers them: the namespaces kept (user., trusted., security.,
    /// and the POSIX ACLs, <see cref="AclSuite"/>), EINVAL for a prefix alone, EOPNOTSUPP for
    /// any other name, the rest of system. included; names that are not UTF-8 kept byte for
    /// byte, listxattr showing what getxattr reads, and a value too big to keep ENOSPC (E2BIG
    /// past 64 KiB, from the kernel). Each line prints "name result".
    /// </summary>
    private const string XattrSuite = """
        touch f || exit 1
        cat > x.py <<'PY'
        import os, sys, errno
        def t(name, f):
            try: r = f(); print(name, "ok" if r is None else r)
            except OSError as e: print(name, errno.errorcode.get(e.errno, e.errno))
        t("user", lambda: os.setxattr("f", "user.a", b"1"))
        t("user_get", lambda: os.getxattr("f", "user.a").decode())
        t("trusted", lambda: os.setxattr("f", "trusted.a", b"1"))
        t("security", lambda: os.setxattr("f", "security.a", b"1"))
        t("system_other", lambda: os.setxattr("f", "system.a", b"1"))
        t("no_namespace", lambda: os.setxattr("f", "bogus.a", b"1"))
        t("no_dot", lambda: os.setxattr("f", "user", b"1"))
        t("prefix_alone", lambda: os.setxattr("f", "user.", b"1"))
        t("get_other", lambda: os.getxattr("f", "bogus.a"))
        t("get_prefix_alone", lambda: os.getxattr("f", "trusted."))
        t("remove_other", lambda: os.removexattr("f", "bogus.a"))
        t("remove_missing", lambda: os.removexattr("f", "user.missing"))
        t("not_utf8", lambda: os.setxattr("f", b"user.\xff\xfe", b"2"))
        t("not_utf8_get", lambda: os.getxattr("f", b"user.\xff\xfe").decode())
        t("list", lambda: " ".join(sorted(repr(os.fsencode(n)) for n in os.listxattr("f"))))
        t("name_255", lambda: os.setxattr("f", "user." + "n" * 250, b"1"))
        t("name_256", lambda: os.setxattr("f", "user." + "n" * 251, b"1"))
        t("value_64k", lambda: os.setxattr("f", "user.big", b"v" * 65536))
        t("value_past_64k", lambda: os.setxattr("f", "user.big", b"v" * 65537))
        PY
        python3 x.py
        """;

    /// <summary>
    /// POSIX ACLs as ext4 keeps and enforces them: setfacl and getfacl (numeric ids), the mode
    /// an access ACL sets (group bits from the mask), chmod rewriting the ACL, an ACL the mode
    /// says all of not stored, named users and groups granted and denied (as uid 1000, uid 1001
    /// in group 1000, and nobody), the mask limiting them, search denied on a directory,
    /// default ACLs inherited by files, directories (which keep them as their default) and
    /// fifos with the creating mode masked in and no umask, a symbolic link taking none,
    /// set-group-ID dropped when the owner outside the group sets an ACL, only the owner
    /// setting one, no default ACL on a file. Each line prints "name status" or a listing.
    /// </summary>
    private const string AclSuite = """
        U1='setpriv --reuid=1000 --regid=1000 --clear-groups'
        U2='setpriv --reuid=1001 --regid=1001 --groups=1000'
        N='setpriv --reuid=65534 --regid=65534 --clear-groups'
        t() { name=$1; shift; ( eval "$@" ) >/dev/null 2>&1; echo "$name $?"; }
        g() { echo "$1: $(getfacl -cpn "$2" 2>/dev/null | grep -v '^$' | tr '\n' ' ') mode=$(stat -c %a "$2")"; }
        has() { python3 -c "import os, sys; sys.exit(0 if 'system.posix_acl_access' in os.listxattr('$1', follow_symlinks=False) else 1)"; }
        umask 022
        chmod 755 .
        echo secret > f && chmod 644 f
        t setfacl_deny 'setfacl -m u:1000:--- f'
        g f f
        t u1000_read "$U1 cat f"
        t nobody_read "$N cat f"
        t setfacl_grant_w 'setfacl -m u:65534:rw f'
        g f2 f
        t nobody_write "$N sh -c 'echo x >> f'"
        t chmod_600 'chmod 600 f'
        g f3 f
        t nobody_write_after_chmod "$N sh -c 'echo y >> f'"
        t chmod_660 'chmod 660 f'
        g f4 f
        t setfacl_remove_all 'setfacl -b f'
        g f5 f
        t removed_all_stored 'has f'
        mkdir d && chmod 755 d
        t set_default 'setfacl -d -m u:1000:rwx,g::r-x,o::--- d'
        g d d
        echo "default: $(getfacl -cpnd d 2>/dev/null | tr '\n' ' ')"
        t create_in_d 'touch d/new'
        g new d/new
        t mkdir_in_d 'mkdir d/sub'
        g sub d/sub
        echo "sub default: $(getfacl -cpnd d/sub 2>/dev/null | tr '\n' ' ')"
        t u1000_write_new "$U1 sh -c 'echo z >> d/new'"
        t nobody_read_new "$N cat d/new"
        t mode_0600_in_d "python3 -c \"import os; os.close(os.open('d/p600', os.O_CREAT|os.O_WRONLY, 0o600))\""
        g p600 d/p600
        t mknod_fifo_in_d 'mkfifo -m 640 d/fifo'
        g fifo d/fifo
        t symlink_in_d 'ln -s new d/ln'
        t symlink_has_acl 'has d/ln'
        t umask_outside_d 'touch um && test $(stat -c %a um) = 644'
        t group_entry 'touch gf && chmod 640 gf && setfacl -m g:1000:rw gf'
        g gf gf
        t u1001_in_g1000_write "$U2 sh -c 'echo q >> gf'"
        t mask_limits 'setfacl -m m::r gf'
        g gf2 gf
        t u1001_write_masked "$U2 sh -c 'echo q >> gf'"
        t u1001_read_masked "$U2 cat gf"
        mkdir sd && chmod 755 sd && echo hi > sd/x
        t search_before "$U1 cat sd/x"
        t dir_deny_search 'setfacl -m u:1000:r-- sd'
        # sd/x is cached from the step before; setting the ACL expires it just after its reply
        # (as a chmod does, AccessSuite's after_chmod): wait up to 0.8 s for that to land, short
        # of the 1 s entry timeout that would hide its loss (the full test run failed here 1 in 1)
        t u1000_search "for i in 1 2 3 4 5 6 7 8; do $U1 cat sd/x || break; sleep 0.1; done; $U1 cat sd/x"
        t nobody_search "$N cat sd/x"
        t setgid_kill 'mkdir sg && chmod 2775 sg && chown 1000:0 sg && '"$U1"' setfacl -m u:65534:rwx sg'
        echo "sg mode=$(stat -c %a sg)"
        t not_owner_set "$N setfacl -m u:65534:rwx f"
        t default_on_file 'setfacl -d -m u:1000:rwx f'
        t equiv_acl 'touch eq && setfacl -m u::rw,g::r,o::r eq'
        t equiv_stored 'has eq'
        g eq eq
        t chmod_dir_default_kept 'chmod 700 d'
        echo "d default after chmod: $(getfacl -cpnd d 2>/dev/null | tr '\n' ' ')"
        """;

    /// <summary>
    /// open(O_TMPFILE) as ext4 answers it: a nameless file with link count 0 and the mode asked
    /// (umask applied), listed nowhere; linkat(AT_EMPTY_PATH) names it; one opened with O_EXCL
    /// cannot be named; one closed unnamed goes; a file is no directory to make one in.
    /// </summary>
    private const string TmpfileSuite = """
        umask 022
        cat > t.py <<'PY'
        import os, errno, ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        def link(fd, dst):
            if libc.linkat(fd, b"", -100, dst.encode(), 0x1000) != 0:
                e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
        os.mkdir("d")
        fd = os.open("d", os.O_TMPFILE | os.O_RDWR, 0o640)
        os.write(fd, b"tmpdata")
        st = os.fstat(fd)
        print("nlink", st.st_nlink, "mode", oct(st.st_mode & 0o777), "size", st.st_size)
        print("listed", sorted(os.listdir("d")))
        link(fd, "d/named")
        print("after_link", os.fstat(fd).st_nlink, open("d/named").read())
        os.close(fd)
        fd = os.open("d", os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
        try: link(fd, "d/excl"); print("excl ok")
        except OSError as e: print("excl", errno.errorcode[e.errno])
        os.close(fd)
        fd = os.open("d", os.O_TMPFILE | os.O_RDWR, 0o600)
        os.write(fd, b"x" * 100000)
        os.close(fd)
        print("listed", sorted(os.listdir("d")))
        try: os.open("d/named", os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e: print("on_a_file", errno.errorcode[e.errno])
        PY
        python3 t.py
        """;

    /// <summary>
    /// A file's names in one directory up to ext4's link limit (65,000; they outgrow one
    /// INODE_REF item after about 1,100 and go on in INODE_EXTREFs), then names renamed into
    /// that directory and renamed in place to longer ones, and the filesystem still writable.
    /// </summary>
    private const string NameLimitSuite = """
        cat > n.py <<'PY'
        import os, errno
        os.mkdir("d"); os.mkdir("a")
        open("d/f", "w").close()
        n = 0
        try:
            while True:
                os.link("d/f", "d/l%d" % n); n += 1
        except OSError as e:
            print("links", n, errno.errorcode[e.errno], os.stat("d/f").st_nlink)
        for i in range(n - 1000, n): os.unlink("d/l%d" % i)
        os.link("d/f", "a/x")
        os.rename("a/x", "d/y")
        os.rename("d/y", "d/" + "z" * 200)
        print("after", os.stat("d/f").st_nlink, len(os.listdir("d")), os.path.exists("d/l5"), os.path.exists("d/l64998"))
        open("after", "w").write("ok")
        print("still", open("after").read())
        PY
        python3 n.py
        """;

    /// <summary>
    /// overlayfs with its upper layer here (it refuses an upper layer without RENAME_WHITEOUT):
    /// a lower file changed and one deleted, a file made and renamed, a lower directory deleted
    /// and made again (opaque), an upper directory renamed; then what the merged view shows and
    /// what the upper layer holds (whiteouts, the opaque mark), and renameat2's whiteout itself.
    /// </summary>
    private const string OverlaySuite = """
        mkdir -p lower/d/sub lower/e upper work m && echo low > lower/a && echo low2 > lower/b && echo x > lower/d/sub/f
        mount -t overlay overlay -o lowerdir=$PWD/lower,upperdir=$PWD/upper,workdir=$PWD/work m || { echo "overlay mount refused"; exit 0; }
        echo new > m/c && rm m/b && echo mod >> m/a && rm -rf m/d && mkdir m/d && mv m/c m/c2 && mkdir m/n && mv m/n m/n2 && rm -rf m/e
        echo "merged $(ls m | tr '\n' ' ') a=$(cat m/a | tr '\n' ' ') d=$(ls -A m/d | wc -l)"
        umount m
        cat > w.py <<'PY'
        import os, stat, errno, ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for f in sorted(os.listdir("upper")):
            st = os.lstat("upper/" + f)
            try: opaque = os.getxattr("upper/" + f, "trusted.overlay.opaque", follow_symlinks=False)
            except OSError: opaque = b""
            print("upper", f, stat.filemode(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev), opaque)
        def rename2(a, b, flags):
            if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
                e = ctypes.get_errno(); return errno.errorcode[e]
            return "ok"
        open("wa", "w").close(); open("wb", "w").close()
        print("whiteout", rename2("wa", "wc", 4), stat.filemode(os.lstat("wa").st_mode), os.lstat("wa").st_rdev, os.lstat("wa").st_nlink)
        print("over", rename2("wb", "wc", 4), stat.filemode(os.lstat("wb").st_mode))
        print("exchange", rename2("wa", "wc", 2 | 4))
        PY
        python3 w.py
        """;

    /// <summary>
    /// chattr +C (no copy-on-write) and lsattr, as btrfs answers them (ext4 has no such flag):
    /// an empty file takes it and keeps it once written; a file with data keeps what it has and
    /// chattr still succeeds; a directory passes it to what is made in it; no-CoW data reads
    /// back after being overwritten in place.
    /// </summary>
    private const string NoCowSuite = """
        a() { echo "$1 $(lsattr -d "$1" 2>&1 | cut -c1-22)"; }
        touch f && chattr +C f; echo "set $?"; a f
        echo data > f && chattr -C f; echo "clear_with_data $?"; a f
        echo d > g && chattr +C g; echo "set_with_data $?"; a g
        mkdir db && chattr +C db; echo "dir $?"; a db
        touch db/x && mkdir db/sub && ln -s x db/l; a db/x; a db/sub
        head -c 1048576 /dev/urandom > db/x && cp db/x ref && dd if=/dev/urandom of=db/x bs=4096 count=16 seek=8 conv=notrunc 2>/dev/null && dd if=db/x of=ref bs=4096 count=16 skip=8 seek=8 conv=notrunc 2>/dev/null
        echo "overwritten $(cmp db/x ref && echo same)"
        chattr -C db; echo "dir_clear $?"; a db; touch db/y; a db/y
        """;

    /// <summary>What statfs says besides the space: no inode counts (inodes are made as space
    /// allows, as on btrfs: df -i shows none rather than an empty filesystem 7% full), 255-byte
    /// names, 4 KiB blocks.</summary>
    private const string StatfsSuite = """
        touch a b c
        stat -f -c 'inodes %c free %d namelen %l block %S' .
        df -i . | tail -1 | awk '{print "df -i", $2, $3, $4, $5}'
        """;

    private static string Results(string dir, string suite = Suite) => MountedImage.Sh(suite, dir, 120).Out;

    [Fact]
    public void NamespaceRulesMatchExt4() => SameAsKernelFs(Suite, 30);

    [Fact]
    public void PrivilegesAreDroppedAsOnExt4() => SameAsKernelFs(PrivilegeSuite, 15);

    [Fact]
    public void AttributeNamesAreAnsweredAsOnExt4() => SameAsKernelFs(XattrSuite, 19);

    [Fact]
    public void TmpfilesAreMadeAndNamedAsOnExt4() => SameAsKernelFs(TmpfileSuite, 6);

    [Fact]
    public void AFileTakesAsManyNamesInOneDirectoryAsOnExt4() => SameAsKernelFs(NameLimitSuite, 3);

    [Fact]
    public void OverlayfsRunsOnItAsOnExt4() => SameAsKernelFs(OverlaySuite, 10);

    [Fact]
    public void StatfsAnswersAsOnBtrfs() => SameAsKernelFs(StatfsSuite, 2, reference: "btrfs");

    [Fact]
    public void NoCowFlagsAreSetAndInheritedAsOnBtrfs() => SameAsKernelFs(NoCowSuite, 14, reference: "btrfs");

    /// <summary>The same whether the daemon checks (and enforces the ACLs itself) or the kernel
    /// does (<c>-o default_permissions</c>, with FUSE_POSIX_ACL).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AclsAreKeptAndEnforcedAsOnExt4(bool defaultPermissions) => SameAsKernelFs(AclSuite, 50, defaultPermissions);

    /// <summary>Runs the suite on a fresh Reservoir mount and on the kernel's
    /// <paramref name="reference"/> filesystem (ext4, or btrfs for what ext4 lacks) on a loop
    /// device, and compares the lines.</summary>
    private void SameAsKernelFs(string suite, int lines, bool defaultPermissions = false, string ext4Options = "", string reference = "ext4")
    {
        using var m = new MountedImage(size: 128UL << 20, allowOther: true, defaultPermissions: defaultPermissions);
        // The unprivileged steps must reach the mount (the temporary directory is private).
        MountedImage.Sh($"chmod 755 {Path.GetDirectoryName(m.Dir)}", "/");
        string ours = Results(m.Dir, suite);
        string ext4Root = Directory.CreateTempSubdirectory("ext4-ref-").FullName;
        string img = Path.Combine(ext4Root, "ext4.img"), mnt = Path.Combine(ext4Root, "mnt");
        Directory.CreateDirectory(mnt);
        string mkfs = reference == "btrfs" ? $"mkfs.btrfs -q -f {img}" : $"mkfs.ext4 -q -F {img}";
        var prep = MountedImage.Sh($"chmod 755 {ext4Root} && truncate -s 128M {img} && {mkfs} && mount -o loop{(ext4Options.Length > 0 ? "," + ext4Options : "")} {img} {mnt}", "/");
        Assert.True(prep.Code == 0, $"could not make the {reference} reference mount (mkfs.{reference} installed?): " + prep.Out);
        string theirs;
        try { theirs = Results(mnt, suite); }
        finally { MountedImage.Sh($"umount {mnt}; rm -rf {ext4Root}", "/"); }
        log.WriteLine(ours);
        var a = ours.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var b = theirs.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("lost+found")).ToArray();
        Assert.True(a.Length >= lines, "the suite did not run: " + ours);
        Assert.True(a.Length == b.Length, $"reservoir gave {a.Length} lines, {reference} {b.Length}:\n{ours}\n---\n{theirs}");
        var diffs = a.Zip(b).Where(p => p.First != p.Second).Select(p => $"reservoir: {p.First}   {reference}: {p.Second}").ToList();
        Assert.True(diffs.Count == 0, string.Join("\n", diffs));
    }
}

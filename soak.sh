#!/usr/bin/env bash
# The long tier of the proving tools (CI runs a short tier of each in ./test.sh). Each step
# stops the script on its first failure and prints what replays it.
# Usage: ./soak.sh [HOURS]   (default 1: each soak below runs that long; root for the mount part)
set -euo pipefail
cd "$(dirname "$0")"
h=${1:-1}
dotnet build src/Reservoir.Cli -c Release -nologo -v q
r=./reservoir
w=$(mktemp -d /var/tmp/reservoir-soak.XXXXXX)
echo "== work directory $w"
echo "== interleaving explorer: 500 seeds"
$r explore --seeds 500
echo "== power cuts: 50 random workloads and every ACE sequence of one and two operations"
$r powercut --seeds 50 --ace
echo "== image fuzzer: 500 images of each kind"
$r fuzz -n 500
echo "== FUSE request fuzzer: 64 seeds of 40,000 random and damaged requests (and 32 of three threads)"
BRIDGE_FUZZ_SEEDS=64 BRIDGE_FUZZ_REQUESTS=40000 ./test.sh --filter "FullyQualifiedName~BridgeFuzzTests"
echo "== stress in-process for ${h}h (4 workers, every operation, quota limit)"
$r stress "$w/inproc.img" -p 4 -s 2026 --time "${h}h" --size 4G --quota-limit 3G
# A stress run through the FUSE mount (mount options $1, for $2, seed $3), with the subvolumes it
# makes joining and leaving tenants' groups by hand meanwhile; then unmount, leaks, fsck.
mount_soak() {
  local m="$w/soak-$$-$3"   # the daemon logs to /run/reservoir-soak-$$-$3-PID.log
  truncate -s 4G "$w/mnt$3.img" && $r mkfs "$w/mnt$3.img" -q -f && mkdir -p "$m"
  $r quota enable "$w/mnt$3.img" && $r qgroup limit 3G "$w/mnt$3.img"
  for g in 1/1 1/2 2/1; do $r qgroup create $g "$w/mnt$3.img"; done
  $r qgroup assign 1/1 2/1 "$w/mnt$3.img" && $r qgroup limit 3G 2/1 "$w/mnt$3.img"
  $r mount "$w/mnt$3.img" "$m" ${1:+-o "$1"} && mkdir "$m/st"
  $r stress "$m/st" -p 4 -s "$3" --time "$2" & sp=$!
  moved=0
  while kill -0 $sp 2>/dev/null; do
    sleep 2
    # A subvolume the workload deletes meanwhile is refused: not counted.
    for id in $($r subvolume list "$m" 2>/dev/null | awk '{print $2}' | shuf -n 3); do
      g="1/$(( id % 2 + 1 ))"
      if $r qgroup assign "0/$id" "$g" "$m" >/dev/null 2>&1 || $r qgroup remove "0/$id" "$g" "$m" >/dev/null 2>&1; then moved=$((moved + 1)); fi
    done
  done
  rc=0; wait $sp || rc=$?
  echo "   $moved memberships made or ended during the run"
  $r umount "$m"   # with the subvolumes' mounts (-o submounts); returns with the image committed and closed
  if grep -h "RESERVATION LEAK" /run/reservoir-soak-$$-$3-*.log 2>/dev/null; then echo "leaks reported by the daemon"; exit 1; fi
  $r fsck -n "$w/mnt$3.img"
  [ "$rc" = 0 ] || exit "$rc"
}
# Rounds ($1) of: a stress run in a new directory of a subvolume on one mount, changes to what
# earlier rounds made (churn: appends, renames across directories, deletions, hard links,
# reflinked copies, a directory moved), a read-only snapshot, its send (incremental against the
# previous round's; stream versions 1 and 2 by turns) received on a second mount, and the
# received snapshot compared with its source: diff -r, find's type, mode, owner, size, link
# count, mtime and link target of every entry, and every xattr.
churn() { # DIR SEED: about one regular file in 20 of DIR changed, and two directories moved
  local i=0 d=0 f files dirs
  files=$(find "$1" -type f | sort | awk -v s="$2" 'BEGIN{srand(s)} rand() < 0.05')
  while read -r f; do
    [ -n "$f" ] || continue
    i=$((i + 1))
    case $((i % 5)) in
      0) echo "more $2" >> "$f" ;;
      1) mv "$f" "$1/moved-$2-$i" ;;
      2) rm -f "$f" ;;
      3) ln "$f" "$f.l$2" ;;
      4) cp --reflink=auto "$f" "$f.c$2" ;;
    esac 2>/dev/null || true
  done <<< "$files"
  dirs=$(find "$1" -mindepth 2 -type d | sort | awk -v s="$2" 'BEGIN{srand(s)} rand() < 0.5' | head -2)
  while read -r f; do
    [ -n "$f" ] && mv "$f" "$1/dir-$2-$(basename "$f")" 2>/dev/null && d=$((d + 1))
  done <<< "$dirs"
  echo "   churn of $(basename "$1"): $i files changed, $d directories moved"
}
send_soak() {
  local a="$w/send-a" b="$w/send-b" prev="" d
  canon() { (cd "$1" && find . -printf '%p %y %m %U %G %s %n %T@ %l\n' | sort && getfattr -R -h -d -m - . 2>/dev/null | awk '/^# file:/{f=$3; next} NF{print f" "$0}' | sort); }
  for x in a b; do truncate -s 4G "$w/send-$x.img" && $r mkfs "$w/send-$x.img" -q -f && mkdir -p "$w/send-$x" && $r mount "$w/send-$x.img" "$w/send-$x"; done
  $r subvolume create "$a/sv" >/dev/null && mkdir "$b/in"
  for n in $(seq "$1"); do
    mkdir "$a/sv/w$n" && $r stress "$a/sv/w$n" -p 4 -s "$((3000 + n))" -n 4000 -f whiteout=2 -f tmpfile=2 | tail -1
    [ "$n" = 1 ] || churn "$a/sv/w$((n - 1))" "$n"
    $r subvolume snapshot -r "$a/sv" "$a/s$n" >/dev/null
    # Odd rounds as version-1 streams, even as version 2 (holes punched, 128 KiB writes).
    $r send -q --proto $(( 2 - n % 2 )) ${prev:+-p "$a/$prev"} -f "$w/s$n.stream" "$a/s$n"
    $r receive -q -f "$w/s$n.stream" "$b/in"
    # (diff notes every FIFO and device it cannot compare: those lines are not differences)
    d=$(diff -r --no-dereference "$a/s$n" "$b/in/s$n" | grep -v -E ' is a (fifo|character special file) while file ' || true)
    [ -z "$d" ] || { echo "round $n: contents differ:"; echo "$d" | head; exit 1; }
    [ "$(canon "$a/s$n" | md5sum)" = "$(canon "$b/in/s$n" | md5sum)" ] || { echo "round $n: metadata or xattrs differ"; exit 1; }
    echo "   round $n: the same ($(stat -c %s "$w/s$n.stream") byte stream)"
    prev="s$n"
  done
  $r umount "$a" && $r umount "$b" && $r fsck -n "$w/send-a.img" && $r fsck -n "$w/send-b.img"
}
# Backups while the filesystem is busy: a stress run ($1) in a subvolume of a quota mount while
# rounds of snapshot -r, send -p (written by the daemon) and receive (applied by it) into another
# directory of the same mount go on, each received snapshot compared with its source; then
# unmount, leaks, fsck (which recounts every quota group).
busy_send_soak() {
  local m="$w/busy" prev="" n=0 d
  truncate -s 4G "$w/busy.img" && $r mkfs "$w/busy.img" -q -f && mkdir -p "$m"
  $r quota enable "$w/busy.img"
  $r mount "$w/busy.img" "$m" -o discard=async
  $r subvolume create "$m/work" >/dev/null && mkdir "$m/work/st" "$m/in"
  $r stress "$m/work/st" -p 4 -s 2029 --time "$1" -f punch=3 -f tmpfile=2 | tail -1 & sp=$!
  sleep 5
  while kill -0 $sp 2>/dev/null; do
    n=$((n + 1))
    $r subvolume snapshot -r "$m/work" "$m/s$n" >/dev/null
    $r send -q ${prev:+-p "$m/$prev"} -f "$w/busy.stream" "$m/s$n"
    $r receive -q -f "$w/busy.stream" "$m/in"
    d=$(diff -r --no-dereference "$m/s$n" "$m/in/s$n" | grep -v -E ' is a (fifo|character special file|block special file|socket) while file ' || true)
    [ -z "$d" ] || { echo "round $n: the received snapshot differs:"; echo "$d" | head; exit 1; }
    [ -z "$prev" ] || $r subvolume delete "$m/$prev" "$m/in/$prev" >/dev/null
    prev="s$n"
    sleep 3
  done
  wait $sp
  echo "   $n rounds of snapshot, send, receive and compare while the stress ran"
  $r umount "$m"
  if grep -h "RESERVATION LEAK" /run/reservoir-busy-*.log 2>/dev/null; then echo "leaks reported by the daemon"; exit 1; fi
  $r fsck -n "$w/busy.img"
}
if [ "$(id -u)" = 0 ] && [ -e /dev/fuse ]; then
  echo "== stress through the FUSE mount for ${h}h (every operation, subvolumes through the ioctls, quota limit,"
  echo "   and the subvolumes it makes joining and leaving tenants' groups by hand meanwhile)"
  mount_soak "" "${h}h" 2027
  echo "== the same with -o submounts (every subvolume a mount of its own) for $(( h * 15 ))m"
  mount_soak submounts "$(( h * 15 ))m" 2028
  echo "== send and receive between two mounts: $(( h * 12 )) rounds of stress, snapshot -r, send -p, receive,"
  echo "   each received snapshot compared with its source (contents, metadata, xattrs)"
  send_soak "$(( h * 12 ))"
  echo "== backups while busy for $(( h * 10 ))m: stress on a quota mount, and meanwhile rounds of snapshot -r,"
  echo "   send -p and receive on the same mount (by its daemon), each received snapshot compared"
  busy_send_soak "$(( h * 10 ))m"
else
  echo "== (the mount soak needs root and /dev/fuse: skipped)"
fi
rm -rf "$w"
echo "== all soaks passed"

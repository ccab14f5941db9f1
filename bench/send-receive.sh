#!/usr/bin/env bash
# send and receive on Reservoir (a FUSE mount of an image file) and on the kernel's btrfs (a
# loop device), in one sitting, on the same data: 1,000 files of 16 KiB and two of 128 MiB in a
# subvolume, snapshotted read-only. Timed, page cache dropped before each step:
#   full send       `send -f` of the snapshot to a stream file
#   full receive    `receive -f` of that stream into the same filesystem, then sync (Reservoir
#                   makes the received subvolume read-only only once its data is written back;
#                   btrfs returns with it in the page cache, so both are timed to durable)
#   incremental     after changing 20 small files and 1 MiB of one big file, `send -p` of a
#                   second snapshot against the first, and its receive onto the received first
# Prints seconds, stream MiB, and Reservoir's time as a ratio to btrfs's. Needs root.
# Usage: bench/send-receive.sh [ROUNDS]   (default 3; the median round is printed)
#        SMALL=N bench/send-receive.sh …   (N small files instead of 1,000: the incremental send's
#        cost should follow the 21 changed files, not N)
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SMALL=${SMALL:-1000}
. bench/peers.sh send-receive
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
one() { # kind -> "full-send full-receive inc-send inc-receive full-MiB inc-MiB"
  local kind=$1 img=$W/img m=$W/mnt
  rm -f "$img" "$W"/*.stream; truncate -s 2G "$img"
  local SV SNAP SEND RECV
  case $kind in
    reservoir) $R mkfs "$img" -q -f && $R mount "$img" "$m" || return 1
      SV="$R subvolume create"; SNAP="$R subvolume snapshot -r"; SEND="$R send -q"; RECV="$R receive -q" ;;
    btrfs) mkfs.btrfs -q -f "$img" >/dev/null && mount -o loop "$img" "$m" || return 1
      SV="btrfs -q subvolume create"; SNAP="btrfs -q subvolume snapshot -r"; SEND="btrfs send -q"; RECV="btrfs receive" ;;
  esac
  $SV "$m/sv" >/dev/null && mkdir "$m/sv/small" "$m/in"
  head -c 16M /dev/urandom > "$W/src16"
  for i in $(seq "$SMALL"); do dd if="$W/src16" of="$m/sv/small/f$i" bs=16K skip=$((i % 1000)) count=1 status=none; done
  head -c 128M /dev/urandom > "$m/sv/big1"; head -c 128M /dev/urandom > "$m/sv/big2"
  $SNAP "$m/sv" "$m/s1" >/dev/null
  local t0 t1 t2 t3 t4 t5 t6 t7
  drop; t0=$(now); $SEND -f "$W/full.stream" "$m/s1" >/dev/null 2>&1; t1=$(now)
  drop; t2=$(now); $RECV -f "$W/full.stream" "$m/in" >/dev/null 2>&1; sync; t3=$(now)
  for i in $(seq 20); do head -c 16K /dev/urandom > "$m/sv/small/f$((i * 37))"; done
  dd if=/dev/urandom of="$m/sv/big1" bs=1M count=1 seek=64 conv=notrunc status=none
  $SNAP "$m/sv" "$m/s2" >/dev/null
  drop; t4=$(now); $SEND -p "$m/s1" -f "$W/inc.stream" "$m/s2" >/dev/null 2>&1; t5=$(now)
  drop; t6=$(now); $RECV -f "$W/inc.stream" "$m/in" >/dev/null 2>&1; sync; t7=$(now)
  cmp -s "$m/s2/big1" "$m/in/s2/big1" && diff -rq "$m/s2/small" "$m/in/s2/small" >/dev/null || echo "warning: $kind received a different tree" >&2
  local fm im; fm=$(( $(stat -c %s "$W/full.stream") / 1048576 )); im=$(( $(stat -c %s "$W/inc.stream") / 1048576 ))
  if [ "$kind" = reservoir ]; then $R umount "$m"; else umount "$m"; fi
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "$t3 - $t2" | bc -l) $(echo "$t5 - $t4" | bc -l) $(echo "$t7 - $t6" | bc -l) $fm $im"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The fixed cost in Reservoir's times: starting the reservoir command (the .NET runtime).
start=$(for i in 1 2 3; do t0=$(now); $R --version >/dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; done | median)
declare -A res
for kind in reservoir btrfs; do
  rows=()
  for r in $(seq "$ROUNDS"); do rows+=("$(one $kind)"); done
  for col in 1 2 3 4 5 6; do res[$kind,$col]=$(printf '%s\n' "${rows[@]}" | awk -v c=$col '{print $c}' | median); done
done
printf '%-16s %12s %12s %10s\n' step reservoir btrfs ratio
names=("full send" "full receive" "incr. send" "incr. receive")
for col in 1 2 3 4; do
  printf '%-16s %11.2fs %11.2fs %10.2f\n' "${names[$((col-1))]}" "${res[reservoir,$col]}" "${res[btrfs,$col]}" "$(echo "${res[reservoir,$col]} / ${res[btrfs,$col]}" | bc -l)"
done
printf '%-16s %10s MiB %8s MiB\n' "full stream" "${res[reservoir,5]}" "${res[btrfs,5]}"
printf '%-16s %10s MiB %8s MiB\n' "incr. stream" "${res[reservoir,6]}" "${res[btrfs,6]}"
printf 'reservoir command start: %.2fs (in each of its times)\n' "$start"

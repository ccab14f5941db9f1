#!/usr/bin/env bash
# What `subvolume find-new` costs on Reservoir (through the mount) and on the kernel's btrfs, in
# one sitting: a subvolume of FILES files of 4 KiB in 100 directories is written and synced, the
# marker taken, then CHANGED files rewritten; find-new from the marker + 1 (what changed) and from 0
# (everything) are timed, best of 3, each as a ratio to btrfs's, with the lines each printed
# (the same count on both: one per extent). `true` through the same CLI is timed too: the
# .NET start that every `reservoir` command pays and btrfs-progs (C) does not.
# Usage: bench/find-new.sh [FILES] [CHANGED]   (defaults 20000 and 10)
set -uo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-20000}
CHANGED=${2:-10}
. bench/peers.sh find-new
M=$W/mnt
IMG=$W/img

fill() { # subvolume-maker
  $1 "$M/v" >/dev/null
  python3 - "$M/v" "$FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(100): os.mkdir(f"{root}/d{d}")
for i in range(n):
    with open(f"{root}/d{i % 100}/f{i}", "wb") as f: f.write(os.urandom(4096))
EOF
  sync
}
change() {
  for i in $(seq 0 $((CHANGED - 1))); do head -c 4096 /dev/urandom | dd of="$M/v/d$((i * 7 % 100))/f$((i * 7919 % FILES / 100 * 100 + i * 7 % 100))" bs=4096 seek=0 conv=notrunc status=none 2>/dev/null || true; done
}
best() { # command… : best of 3 wall seconds
  local b=999 t0 t1 s
  for _ in 1 2 3; do t0=$(date +%s.%N); "$@" >"$W/out" 2>&1; t1=$(date +%s.%N); s=$(echo "$t1 - $t0" | bc -l); b=$(echo "if ($s < $b) $s else $b" | bc -l); done
  printf '%.3f' "$b"
}
declare -A secs lines
run() { # label find-new-command
  local marker
  # The marker's own generation is listed again ("or later"): the files were synced in it, so
  # what changed after it starts one later.
  marker=$(( $($2 "$M/v" 999999999 | sed 's/transid marker was //') + 1 ))
  change
  secs[$1-changed]=$(best $2 "$M/v" "$marker"); lines[$1-changed]=$(($(wc -l < "$W/out") - 1))
  secs[$1-all]=$(best $2 "$M/v" 0); lines[$1-all]=$(($(wc -l < "$W/out") - 1))
}

rm -f "$IMG"; truncate -s 2G "$IMG"; $R mkfs "$IMG" -q -f && $R mount "$IMG" "$M"
fill "$R subvolume create"
run reservoir "$R subvolume find-new"
secs[reservoir-start]=$(best $R --version)
umount "$M"; $R fsck "$IMG" >/dev/null || echo "reservoir fsck failed" >&2

rm -f "$IMG"; truncate -s 2G "$IMG"; mkfs.btrfs -q -f "$IMG" && mount -o loop "$IMG" "$M"
fill "btrfs subvolume create"
run btrfs "btrfs subvolume find-new"
umount "$M"

echo "# find-new, $FILES files of 4 KiB, $CHANGED rewritten after the marker; best of 3, seconds (ratio to btrfs)"
for w in changed all; do
  r=${secs[reservoir-$w]}; b=${secs[btrfs-$w]}
  printf 'find-new-%-8s reservoir=%ss (%s lines) btrfs=%ss (%s lines) ratio=%.2f, without the .NET start %.2f\n' "$w" "$r" "${lines[reservoir-$w]}" "$b" "${lines[btrfs-$w]}" \
    "$(echo "$r / $b" | bc -l)" "$(echo "($r - ${secs[reservoir-start]}) / $b" | bc -l)"
done
printf 'reservoir --version (the .NET start each command pays): %ss\n' "${secs[reservoir-start]}"

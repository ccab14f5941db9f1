#!/usr/bin/env bash
# What a shrink that has to move data costs, on Reservoir and its kernel peers in one sitting.
# Each gets a 2 GiB filesystem; 1 GiB of filler is written first, then DATA MiB in 64 files of a
# subvolume (a directory on ext4) and SNAPSHOTS read-only snapshots of it (Reservoir, btrfs);
# the filler is deleted and everything synced, so the data sits past the new end. The shrink to
# DATA + 400 MiB is timed: Reservoir online (`reservoir filesystem resize` on the mount) and
# offline (on the unmounted image), btrfs online (`btrfs filesystem resize`, which relocates
# block groups), ext4 offline (resize2fs after e2fsck -f, which moves blocks). Then every
# file is read back (caches dropped) and compared with its checksum from before, and the image
# is checked (fsck / btrfs check / e2fsck). Prints seconds, each as a ratio to btrfs's, and
# the metadata each filesystem reports in use before and after (Reservoir, btrfs).
# Usage: bench/shrink-relocation.sh [DATA_MIB] [SNAPSHOTS]   (defaults 400 and 20)
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-400}
SNAPS=${2:-20}
. bench/peers.sh shrink-relocation
command -v resize2fs >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs >/dev/null; }
M=$W/mnt
IMG=$W/img
per=$(( (DATA + 63) / 64 ))
DATA=$((per * 64))
TARGET=$((DATA + 400))

fill() { # subvolume-maker snapshot-maker
  dd if=/dev/zero of="$M/filler" bs=1M count=1024 status=none
  sync
  $1 "$M/v" >/dev/null
  for i in $(seq 64); do head -c "${per}M" /dev/urandom > "$M/v/f$i"; done
  sync
  for s in $(seq "$SNAPS"); do $2 "$M/v" "$M/s$s" >/dev/null; done
  rm "$M/filler"; sync
  (cd "$M/v" && md5sum f*) > "$W/sums"
}
check() { # dir
  echo 3 > /proc/sys/vm/drop_caches
  (cd "$1" && md5sum -c --quiet "$W/sums") || echo "DATA DIFFERS in $1" >&2
}
# Seconds the command took, or "refused" (its message goes to stderr) when it failed.
timed() { local t0 t1; t0=$(date +%s.%N); "$@" >"$W/out" 2>&1 || { sed "s|^|$1: |" "$W/out" >&2; echo refused; return 0; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
rmeta() { $R filesystem usage -b "$1" | awk '/^Metadata/ { sub(/.*Used:/, ""); sub(/ .*/, ""); print int($0 / 1024) }'; }
bmeta() { btrfs filesystem df -b "$1" | awk -F'used=' '/^Metadata/ { print int($2 / 1024) }'; }

declare -A secs meta
mkres() { rm -f "$IMG"; truncate -s 2G "$IMG"; $R mkfs "$IMG" -q -f && $R mount "$IMG" "$M"; }
rsub() { $R subvolume create "$1" >/dev/null; }
rsnap() { $R subvolume snapshot -r "$1" "$2"; }

# Reservoir, online
mkres && fill rsub rsnap
before=$(rmeta "$M")
secs[reservoir-online]=$(timed $R filesystem resize "${TARGET}M" "$M")
moved_online=$(grep '^Moved' "$W/out")
meta[reservoir-online]="$before $(rmeta "$M")"
check "$M/v"; check "$M/s$SNAPS"
umount "$M"; $R fsck "$IMG" >/dev/null || echo "reservoir fsck failed" >&2

# Reservoir, offline
mkres && fill rsub rsnap
before=$(rmeta "$M")
umount "$M"
secs[reservoir-offline]=$(timed $R filesystem resize "${TARGET}M" "$IMG")
moved_offline=$(grep '^Moved' "$W/out")
$R fsck "$IMG" >/dev/null || echo "reservoir fsck failed" >&2
$R mount "$IMG" "$M"; meta[reservoir-offline]="$before $(rmeta "$M")"
check "$M/v"; check "$M/s$SNAPS"; umount "$M"

# btrfs, online
rm -f "$IMG"; truncate -s 2G "$IMG"; mkfs.btrfs -q -f "$IMG" >/dev/null && mount -o loop "$IMG" "$M"
fill "btrfs subvolume create" "btrfs subvolume snapshot -r"
before=$(bmeta "$M")
secs[btrfs]=$(timed btrfs filesystem resize "${TARGET}M" "$M")
meta[btrfs]="$before $(bmeta "$M")"
check "$M/v"; check "$M/s$SNAPS"
umount "$M"; btrfs check --readonly "$IMG" >/dev/null 2>&1 || echo "btrfs check failed" >&2

# ext4, offline (no snapshots)
rm -f "$IMG"; truncate -s 2G "$IMG"; mkfs.ext4 -q -F "$IMG" >/dev/null && mount -o loop "$IMG" "$M"
fill mkdir true
umount "$M"; e2fsck -f -y "$IMG" >/dev/null 2>&1
secs[ext4]=$(timed resize2fs "$IMG" "${TARGET}M")
e2fsck -f -n "$IMG" >/dev/null 2>&1 || echo "e2fsck failed" >&2
mount -o loop "$IMG" "$M"; check "$M/v"; umount "$M"

b=${secs[btrfs]}
echo "shrink of a 2 GiB filesystem to ${TARGET} MiB, ${DATA} MiB of data past the new end, ${SNAPS} snapshots of it (ext4: none)"
printf '%-18s %10s %10s %22s\n' fs seconds 'x btrfs' 'metadata KiB before/after'
for k in reservoir-online reservoir-offline btrfs ext4; do
  t=${secs[$k]}
  if [ "$t" = refused ]; then printf '%-18s %10s %10s %22s\n' "$k" refused - "${meta[$k]:--}"; continue; fi
  ratio=-; [ "$b" != refused ] && ratio=$(printf '%.2f' "$(echo "$t / $b" | bc -l)")
  printf '%-18s %10.2f %10s %22s\n' "$k" "$t" "$ratio" "${meta[$k]:--}"
done
echo "reservoir online: ${moved_online:-nothing moved}; offline: ${moved_offline:-nothing moved}"

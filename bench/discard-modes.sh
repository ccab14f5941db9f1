#!/usr/bin/env bash
# What each discard mode costs and gives back, on Reservoir and its kernel peers in one sitting:
# 600 files of 256 KiB written and synced, then `rm -r` + `sync` timed; the image file's
# blocks on the host (du) right after the sync and 5 s later. Reservoir: nodiscard,
# discard (=sync) and discard=async; ext4 on a loop device: nodiscard and discard; btrfs on a
# loop device: nodiscard, discard=sync and discard=async. Prints seconds and MiB, and each
# delete+sync time as a ratio to the same filesystem without discard. Needs root.
# Usage: bench/discard-modes.sh [ROUNDS]   (default 3; the median round is printed)
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
. bench/peers.sh discard-modes
mib() { echo $(( $(stat -c %b "$1") * 512 / 1048576 )); }
one() { # kind options -> "seconds MiB-right-after MiB-5s-later"
  local kind=$1 opts=$2 img=$W/img
  rm -f "$img"; truncate -s 1G "$img"
  case $kind in
    reservoir) $R mkfs "$img" -q -f && $R mount "$img" "$W/mnt" ${opts:+-o $opts} ;;
    ext4) mkfs.ext4 -q -F "$img" >/dev/null && mount -o "loop${opts:+,$opts}" "$img" "$W/mnt" ;;
    btrfs) mkfs.btrfs -q -f "$img" >/dev/null && mount -o "loop${opts:+,$opts}" "$img" "$W/mnt" ;;
  esac || return 1
  mkdir "$W/mnt/d"
  for i in $(seq 600); do head -c 256K /dev/urandom > "$W/mnt/d/f$i"; done
  sync
  local t0 t1; t0=$(date +%s.%N)
  rm -r "$W/mnt/d"; sync
  t1=$(date +%s.%N)
  local a; a=$(mib "$img"); sleep 5; local b; b=$(mib "$img")
  umount "$W/mnt" || { sleep 1; umount "$W/mnt"; }
  echo "$(echo "$t1 - $t0" | bc -l) $a $b"
}
printf '%-10s %-14s %10s %8s %12s %12s\n' fs options 'delete+sync' ratio 'MiB after' 'MiB +5s'
for kind in reservoir ext4 btrfs; do
  case $kind in
    reservoir) modes="nodiscard discard discard=async" ;;
    ext4) modes="nodiscard discard" ;;
    btrfs) modes="nodiscard discard=sync discard=async" ;;
  esac
  base=""
  for m in $modes; do
    rows=()
    for r in $(seq "$ROUNDS"); do rows+=("$(one $kind "$m")"); done
    med=$(printf '%s\n' "${rows[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
    read -r secs after later <<<"$med"
    [ -z "$base" ] && base=$secs
    printf '%-10s %-14s %9.3fs %8.2f %12s %12s\n' "$kind" "$m" "$secs" "$(echo "$secs / $base" | bc -l)" "$after" "$later"
  done
done

#!/usr/bin/env bash
# Runs ../shared/bench/fsbench on Reservoir (FUSE), fuse2fs, kernel ext4 and btrfs (loop
# devices) and tmpfs in one sitting, then prints each workload's figures and Reservoir's ratio
# to each peer. Needs root. Usage: bench/compare-mounts.sh [--quick] [SIZE]   (default 4G images)
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""; [ "${1:-}" = "--quick" ] && { QUICK="--quick"; shift; }
SIZE=${1:-4G}
FSBENCH=${FSBENCH:-../shared/bench/fsbench}
[ -x "$FSBENCH" ] || { echo "fsbench not found at $FSBENCH" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, mounts)" >&2; exit 2; }
command -v mkfs.btrfs >/dev/null && command -v fuse2fs >/dev/null && command -v fio >/dev/null || \
  { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs fuse2fs fio fuse3 >/dev/null; }
W=$(mktemp -d /var/tmp/fsbench-cmp.XXXXXX)
# The build install.sh installs (ReadyToRun), as users run it.
case "$(uname -m)" in aarch64|arm64) rid=linux-arm64 ;; *) rid=linux-x64 ;; esac
dotnet publish src/Reservoir.Cli -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -nologo -v q -o "$W/bin" >/dev/null || exit 1
R="dotnet $W/bin/reservoir.dll"
OUT=$W/results.txt
cleanup() { for m in "$W"/mnt-*; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done; cp "$OUT" /tmp/fsbench-compare-raw.txt 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
run() { # name mountpoint [pid]
  local name=$1 mnt=$2 pid=${3:-}
  echo "# $name" >&2
  "$FSBENCH" $QUICK --label "$name" ${pid:+--pid $pid} "$mnt" | grep 'workload=' | tee -a "$OUT" >&2
}
mkdir -p "$W"/mnt-{reservoir,ext4,btrfs,fuse2fs,tmpfs}
truncate -s "$SIZE" "$W/reservoir.img" && $R mkfs "$W/reservoir.img" -q -f && $R mount "$W/reservoir.img" "$W/mnt-reservoir" || exit 1
run reservoir "$W/mnt-reservoir" "$(pgrep -f "mount $W/reservoir.img" | head -1)"
umount "$W/mnt-reservoir"
truncate -s "$SIZE" "$W/ext4.img" && mkfs.ext4 -q -F "$W/ext4.img" && mount -o loop "$W/ext4.img" "$W/mnt-ext4" && run ext4 "$W/mnt-ext4"; umount "$W/mnt-ext4"
truncate -s "$SIZE" "$W/btrfs.img" && mkfs.btrfs -q -f "$W/btrfs.img" && mount -o loop "$W/btrfs.img" "$W/mnt-btrfs" && run btrfs "$W/mnt-btrfs"; umount "$W/mnt-btrfs"
truncate -s "$SIZE" "$W/fuse2fs.img" && mkfs.ext4 -q -F "$W/fuse2fs.img" && fuse2fs "$W/fuse2fs.img" "$W/mnt-fuse2fs" -o fakeroot && run fuse2fs "$W/mnt-fuse2fs" "$(pgrep -f "fuse2fs $W/fuse2fs.img" | head -1)"; umount "$W/mnt-fuse2fs"
mount -t tmpfs -o size="$SIZE" tmpfs "$W/mnt-tmpfs" && run tmpfs "$W/mnt-tmpfs"; umount "$W/mnt-tmpfs"
python3 - "$OUT" <<'PY'
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    kv = dict(p.split('=', 1) for p in line.split() if '=' in p)
    w, l = kv.get('workload'), kv.get('label')
    v = kv.get('MiBps') or kv.get('ops_per_s') or kv.get('iops')
    if w and l and v: rows.setdefault(w, {})[l] = float(v)
peers = ['ext4', 'btrfs', 'fuse2fs', 'tmpfs']
print(f"| workload | reservoir | {' | '.join(peers)} | " + ' | '.join(f'ratio to {p}' for p in peers) + ' |')
print('|---' * (2 + 2 * len(peers)) + '|')
for w, v in rows.items():
    r = v.get('reservoir')
    cells = [f"{v[p]:.0f}" if p in v else '-' for p in peers]
    ratios = [f"{r / v[p]:.2f}" if r and v.get(p) else '-' for p in peers]
    print(f"| {w} | {r:.0f} | " if r is not None else f"| {w} | - | ", end='')
    print(' | '.join(cells) + ' | ' + ' | '.join(ratios) + ' |')
PY

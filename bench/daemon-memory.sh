#!/usr/bin/env bash
# The FUSE daemon's memory, as `ps` shows it (VmRSS now, VmHWM the peak), at the stages of one
# workload, for Reservoir (its default page cache budget of 256M, and -o cache=64M) and fuse2fs
# in one sitting: after the mount; after writing 1 GiB and sync; after reading it back from a
# cold kernel cache; after creating 20,000 empty files; after stat-ing them all again with the
# kernel's dentries dropped. Kernel ext4 and btrfs keep their caches in the kernel, not in a
# process, so they have no row here; the kernel also caches what a FUSE mount reads, for every
# daemon alike. A second table gives what of it is the daemon's own (Private_Dirty in
# /proc/PID/smaps_rollup: written pages only this process holds, which the kernel cannot drop
# but by swapping); the rest of RSS is mostly clean pages of mapped files (for Reservoir, the
# .NET runtime's and its assemblies', 25 MiB or so), which the kernel drops under pressure and
# reads back on use. Needs root. Usage: bench/daemon-memory.sh [SIZE]   (default 4G images)
set -uo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-4G}
[ "$(id -u)" = 0 ] || { echo "needs root (drop_caches, mounts)" >&2; exit 2; }
command -v fuse2fs >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse2fs fuse3 >/dev/null; }
W=$(mktemp -d /var/tmp/daemon-mem.XXXXXX)
case "$(uname -m)" in aarch64|arm64) rid=linux-arm64 ;; *) rid=linux-x64 ;; esac
dotnet publish src/Reservoir.Cli -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -nologo -v q -o "$W/bin" >/dev/null || exit 1
R="dotnet $W/bin/reservoir.dll"
cleanup() { umount "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt"
OUT=$W/results.txt

mib() { awk -v k="$(grep "^$2:" "/proc/$1/status" | awk '{print $2}')" 'BEGIN{printf "%.0f", k/1024}'; }
own() { awk '/^Private_Dirty:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/smaps_rollup"; }
note() { echo "$1 $2 $(mib "$3" VmRSS) $(mib "$3" VmHWM) $(own "$3")" >> "$OUT"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

stages() { # label pid
  local l=$1 p=$2
  note "$l" mounted "$p"
  dd if=/dev/urandom of="$W/mnt/big" bs=1M count=1024 status=none && sync
  note "$l" "wrote-1GiB" "$p"
  drop; cat "$W/mnt/big" > /dev/null
  note "$l" "read-1GiB-cold" "$p"
  rm -f "$W/mnt/big"; sync
  for d in $(seq 0 19); do mkdir "$W/mnt/d$d"; (cd "$W/mnt/d$d" && touch $(seq -f "f%g" 0 999)); done; sync
  note "$l" "created-20k-files" "$p"
  drop; for d in $(seq 0 19); do stat "$W/mnt/d$d"/* > /dev/null; done
  note "$l" "stat-20k-cold" "$p"
}

for opt in "" "cache=64M"; do
  label="reservoir${opt:+,$opt}"
  echo "# $label" >&2
  rm -f "$W/r.img"; truncate -s "$SIZE" "$W/r.img" && $R mkfs "$W/r.img" -q -f && $R mount "$W/r.img" "$W/mnt" ${opt:+-o "$opt"} || exit 1
  stages "$label" "$(pgrep -f "mount $W/r.img" | head -1)"
  umount "$W/mnt"; rm -f "$W/r.img"
done
echo "# fuse2fs" >&2
truncate -s "$SIZE" "$W/e.img" && mkfs.ext4 -q -F "$W/e.img" && fuse2fs "$W/e.img" "$W/mnt" -o fakeroot || exit 1
stages fuse2fs "$(pgrep -f "fuse2fs $W/e.img" | head -1)"
umount "$W/mnt"

python3 - "$OUT" <<'PY'
import sys, collections
rss, hwm, own = collections.OrderedDict(), {}, collections.OrderedDict()
for line in open(sys.argv[1]):
    label, stage, r, h, o = line.split()
    rss.setdefault(stage, {})[label] = int(r)
    hwm.setdefault(stage, {})[label] = int(h)
    own.setdefault(stage, {})[label] = int(o)
labels = list(next(iter(rss.values())).keys())
print("daemon memory, MiB: RSS now (peak so far)")
print("| stage | " + " | ".join(labels) + " | " + " | ".join(f"{l} / fuse2fs" for l in labels if l != "fuse2fs") + " |")
print("|---" * (1 + len(labels) + len(labels) - 1) + "|")
for stage, v in rss.items():
    cells = [f"{v[l]} ({hwm[stage][l]})" for l in labels]
    ratios = [f"{v[l] / v['fuse2fs']:.1f}" for l in labels if l != "fuse2fs"]
    print(f"| {stage} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
print()
print("the daemon's own memory (Private_Dirty), MiB")
print("| stage | " + " | ".join(labels) + " |")
print("|---" * (1 + len(labels)) + "|")
for stage, v in own.items():
    print(f"| {stage} | " + " | ".join(str(v[l]) for l in labels) + " |")
PY

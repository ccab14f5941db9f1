#!/usr/bin/env bash
# The main job, end to end: build, make an image, put files in, list and read them back, check
# it, then mount it and use it with ordinary programs (root, or an ordinary user with fusermount3).
# Usage: ./demo.sh [IMAGE]   (default /tmp/reservoir-demo.img)
set -euo pipefail
cd "$(dirname "$0")"
img=${1:-/tmp/reservoir-demo.img}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== build"
dotnet build Reservoir.slnx -c Release -nologo -v q
echo "== mkfs"
./reservoir mkfs "$img" --size 256M --label demo --force
echo "== copy this repository's docs and sources in"
./reservoir cp -r "$img" docs :/
./reservoir cp -r "$img" src/Reservoir.Format :/
echo "== list"
./reservoir ls -l "$img" /docs
./reservoir ls "$img" /Reservoir.Format/Items
echo "== read back"
./reservoir cat "$img" /docs/SPEC.md | head -3
./reservoir cp -r "$img" :/docs "$out"
diff -r docs "$out/docs" && echo "docs read back identical"
echo "== space"
./reservoir inspect space "$img"
echo "== fsck"
./reservoir fsck --check-data-csum "$img"
echo "== snapshot it, and send the snapshot to a second image (btrfs's send stream: btrfs receive takes it too)"
./reservoir subvolume snapshot -r "$img" / /monday
./reservoir send -f "$out/monday.stream" "$img" /monday
./reservoir mkfs "$out/backup.img" --size 256M --force >/dev/null
./reservoir receive -f "$out/monday.stream" "$out/backup.img" /
./reservoir subvolume show "$out/backup.img" /monday | grep -E "Received UUID|Flags"
if [ -e /dev/fuse ] && { [ "$(id -u)" = 0 ] || command -v fusermount3 >/dev/null; }; then
  echo "== mount it and use it with ordinary programs"
  mnt=$(mktemp -d)
  ./reservoir mount "$img" "$mnt"
  ls -l "$mnt"
  cp -r src/Reservoir.Engine "$mnt/engine" && echo "copied $(find "$mnt/engine" -type f | wc -l) files in through the mount"
  df -h "$mnt" | tail -1
  cp "$mnt/docs/SPEC.md" "$mnt/SPEC-copy.md"   # within the mount, cp clones: the copy shares the original's extents
  ./reservoir filesystem du -s "$mnt/docs/SPEC.md" "$mnt/SPEC-copy.md"
  ./reservoir filesystem resize +64M "$mnt"    # grow it online: the image file grows with it
  df -h "$mnt" | tail -1
  ./reservoir umount "$mnt"   # umount(8) as root, fusermount3 -u otherwise; returns with the image committed and closed
  rmdir "$mnt"
  ./reservoir ls "$img" /engine | head -5
  ./reservoir fsck --check-data-csum "$img"
else
  echo "== (mounting needs /dev/fuse, and root or fusermount3: skipped)"
fi

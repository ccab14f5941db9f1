#!/usr/bin/env bash
# The main job, end to end: build, make an image, put files in, list and read them back, check it.
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

# Sourced by the bench scripts that compare Reservoir with the kernel's btrfs on one mount
# point: root, btrfs-progs, a Release build of the CLI as $R, a scratch directory $W with
# $W/mnt, unmounted and removed at exit. Usage: . bench/peers.sh NAME
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, mounts)" >&2; exit 2; }
command -v mkfs.btrfs >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs fuse3 >/dev/null; }
dotnet build src/Reservoir.Cli -c Release -nologo -v q >/dev/null || exit 1
R="dotnet $PWD/src/Reservoir.Cli/bin/Release/net10.0/reservoir.dll"
W=$(mktemp -d "/var/tmp/$1.XXXXXX")
cleanup() { umount "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/mnt"

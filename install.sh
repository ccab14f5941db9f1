#!/usr/bin/env bash
# Installs reservoir system-wide: /usr/local/lib/reservoir, with reservoir on PATH and the
# mkfs.reservoir / fsck.reservoir names that mkfs(8) and fsck(8) look for. Needs root.
set -euo pipefail
cd "$(dirname "$0")"
prefix=${PREFIX:-/usr/local}
# Compiled ahead of time (ReadyToRun) for this machine's architecture: a mount then starts in
# about 170 ms instead of 400, and its first requests do not wait for the JIT (copying this
# repository's sources in and syncing: 280-310 ms instead of 380-620, 2-core VM).
case "$(uname -m)" in aarch64|arm64) rid=linux-arm64 ;; *) rid=linux-x64 ;; esac
dotnet publish src/Reservoir.Cli -c Release -r "$rid" --self-contained false -p:PublishReadyToRun=true -nologo -v q -o "$prefix/lib/reservoir"
mkdir -p "$prefix/bin" "$prefix/sbin"
ln -sf "$prefix/lib/reservoir/reservoir" "$prefix/bin/reservoir"
for n in mkfs.reservoir fsck.reservoir; do
  cat > "$prefix/sbin/$n" <<EOS
#!/bin/sh
RESERVOIR_ARGV0=$n exec "$prefix/lib/reservoir/reservoir" "\$@"
EOS
  chmod +x "$prefix/sbin/$n"
done
# mount(8) looks for /sbin/mount.<type> and calls it as: SOURCE TARGET [-sfnv] [-o OPTS] [-t TYPE].
# (With fuse3 installed, mount.fuse3 would also work: it runs `reservoir SOURCE TARGET -o OPTS`.)
cat > /sbin/mount.fuse.reservoir <<EOS
#!/bin/sh
src=""; dst=""; opts=""
while [ \$# -gt 0 ]; do
  case "\$1" in
    -o) opts="\$2"; shift ;;
    -t) shift ;;
    -s|-f|-n|-v|-w|-r) ;;
    *) if [ -z "\$src" ]; then src="\$1"; elif [ -z "\$dst" ]; then dst="\$1"; fi ;;
  esac
  shift
done
exec "$prefix/lib/reservoir/reservoir" mount "\$src" "\$dst" \${opts:+-o "\$opts"}
EOS
chmod +x /sbin/mount.fuse.reservoir
# umount(8), as root, runs /sbin/umount.<type> for a mount of that type, the type statfs(2)
# gives ("fuse" for every FUSE mount) or the mount table's: `umount /mnt` then takes the
# subvolumes' own mounts (-o submounts) down first; other FUSE mounts are unmounted as before
# (src/Reservoir.Cli/umount.reservoir). An umount.fuse that is not ours is left alone.
helpers=""
for n in umount.fuse umount.fuse.reservoir umount.fuseblk.reservoir; do
  if [ -e "/sbin/$n" ] && ! grep -q "Reservoir's umount(8) helper" "/sbin/$n"; then
    echo "note: /sbin/$n exists and is not Reservoir's: left as it is (unmount with 'reservoir umount DIR')" >&2
    continue
  fi
  sed "s|@RESERVOIR@|\"$prefix/lib/reservoir/reservoir\"|" src/Reservoir.Cli/umount.reservoir > "/sbin/$n"
  chmod +x "/sbin/$n"
  helpers="$helpers, /sbin/$n"
done
echo "installed: $prefix/bin/reservoir, $prefix/sbin/mkfs.reservoir, $prefix/sbin/fsck.reservoir, /sbin/mount.fuse.reservoir$helpers"

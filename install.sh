#!/usr/bin/env bash
# Installs reservoir system-wide: /usr/local/lib/reservoir, with reservoir on PATH and the
# mkfs.reservoir / fsck.reservoir names that mkfs(8) and fsck(8) look for. Needs root.
set -euo pipefail
cd "$(dirname "$0")"
prefix=${PREFIX:-/usr/local}
dotnet publish src/Reservoir.Cli -c Release -nologo -v q -o "$prefix/lib/reservoir"
mkdir -p "$prefix/bin" "$prefix/sbin"
ln -sf "$prefix/lib/reservoir/reservoir" "$prefix/bin/reservoir"
for n in mkfs.reservoir fsck.reservoir; do
  cat > "$prefix/sbin/$n" <<EOS
#!/bin/sh
RESERVOIR_ARGV0=$n exec "$prefix/lib/reservoir/reservoir" "\$@"
EOS
  chmod +x "$prefix/sbin/$n"
done
echo "installed: $prefix/bin/reservoir, $prefix/sbin/mkfs.reservoir, $prefix/sbin/fsck.reservoir"

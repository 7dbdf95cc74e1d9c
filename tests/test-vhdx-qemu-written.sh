#!/usr/bin/env bash
# An image that qemu-img creates and qemu-io writes reads through the
# plugin exactly as qemu reads it: dynamic with 1 MiB and 32 MiB blocks,
# and fixed; with extents, holes where qemu left blocks absent.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires nbdinfo --version
requires qemu-img --version
requires qemu-io --version

tmp=$(scratch_dir)
for opts in subformat=dynamic,block_size=1M subformat=dynamic \
            subformat=fixed; do
  img=$tmp/q.vhdx
  rm -f "$img"
  qemu-img create -q -f vhdx -o "$opts" "$img" 100M
  qemu-io -f vhdx -c 'write -P 0xa5 0 1M' -c 'write -P 0x5a 33M 3M' \
    -c 'write -P 0x11 99M 1024' -c 'write -z 50M 2M' \
    -c 'write -P 0x77 70M 4k' "$img"
  qemu-img convert -f vhdx -O raw "$img" "$tmp/qemu.raw"
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdcopy "$uri" '"$tmp/plugin.raw"
  cmp "$tmp/qemu.raw" "$tmp/plugin.raw"
  if [ "$opts" != subformat=fixed ]; then
    # Holes where qemu allocated nothing: far from 1M..33M, say at 80M.
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
      --run 'nbdinfo --map "$uri"' > "$tmp/map"
    cat "$tmp/map"
    awk 'BEGIN { r = 1 }
         $1 <= 80*1048576 && $1 + $2 > 80*1048576 { r = ($3 == 3) ? 0 : 1 }
         END { exit r }' "$tmp/map"
  fi
done

#!/usr/bin/env bash
# qemu as an NBD client: qemu-io writes and reads back with verification
# through the plugin, and qemu-img, reading the image file afterwards,
# finds the same bytes as the plugin serves.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires qemu-io --version
requires qemu-img --version
requires nbdcopy --version

tmp=$(scratch_dir)
img=$tmp/disk.vhd
vhdtool create --dynamic 16M "$img"

# qemu-io prints "Pattern verification failed" for a bad read; its exit
# status alone has not always said so.
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'qemu-io -f raw "nbd+unix:///?socket=$unixsocket" \
           -c "write -P 0x5a 0 1M" \
           -c "read -P 0x5a 0 1M" \
           -c "write -P 0x33 3M 100k" \
           -c "read -P 0x33 3M 100k" \
           -c "write -P 0x77 2047k 2k" \
           -c "read -P 0x77 2047k 2k" \
           -c "write -z 3M 4k" \
           -c "read -P 0 3M 4k" \
           -c "read -P 0x33 3076k 96k" \
           -c "flush"' > "$tmp/qemu-io.out"
cat "$tmp/qemu-io.out"
if grep -Eqi 'fail|error' "$tmp/qemu-io.out"; then exit 1; fi

# qemu-img reads the image file itself: the written ranges and nothing else.
qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
qemu-io -f raw -r "$tmp/qemu.raw" \
  -c 'read -P 0x5a 0 1M' \
  -c 'read -P 0 1M 1023k' \
  -c 'read -P 0x77 2047k 2k' \
  -c 'read -P 0 2049k 1023k' \
  -c 'read -P 0 3M 4k' \
  -c 'read -P 0x33 3076k 96k' \
  -c 'read -P 0 3172k 13212k' > "$tmp/check.out"
cat "$tmp/check.out"
if grep -Eqi 'fail|error' "$tmp/check.out"; then exit 1; fi

# And the plugin serves the same bytes as qemu-img read.
tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
  --run 'nbdcopy "$uri" "$tmp/plugin.raw"'
cmp "$tmp/qemu.raw" "$tmp/plugin.raw"

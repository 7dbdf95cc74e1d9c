#!/usr/bin/env bash
# Images that qemu writes (qemu-img create -f vpc, then qemu-io writes
# across block boundaries and at unaligned offsets) read back through the
# plugin exactly as qemu itself reads them.
#
# qemu-img create rounds the size up to whole CHS cylinders (64M becomes
# 67125248 bytes), stores that as the footer's current size and, for its
# creator "qemu", reads the disk as its CHS size.  41953280 bytes is
# CHS-exact, so qemu keeps it as asked (the sample qemu-dynamic-40m.vhd
# has this size too) and qemu's size and the footer's current size, which
# the plugin serves, agree; the test checks that before comparing bytes.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires qemu-img --version
requires qemu-io --version

tmp=$(scratch_dir)
size=41953280

for subformat in dynamic fixed; do
  img=$tmp/qemu-$subformat.vhd
  qemu-img create -f vpc -o subformat=$subformat "$img" $size
  qemu-io -f vpc "$img" \
    -c 'write -P 0xab 1M 3M' \
    -c 'write -P 0x11 7654321 12345' \
    -c 'write -P 0x22 2097000 1000' \
    -c 'write -P 0x33 20971520 1' \
    -c 'write -P 0x44 41953000 280' \
    -c 'write -z 2M 512k' \
    -c 'write -P 0x55 33554431 2'
  qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
  test "$(stat -c %s "$tmp/qemu.raw")" -eq $size

  tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'test "$(nbdinfo --size "$uri")" -eq '$size' &&
           nbdcopy "$uri" "$tmp/plugin.raw"'
  cmp "$tmp/qemu.raw" "$tmp/plugin.raw"
  rm -f "$tmp/qemu.raw" "$tmp/plugin.raw"
done

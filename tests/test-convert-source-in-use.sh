#!/usr/bin/env bash
# vhdtool convert locks its source against writers
# (PREVENT_WRITES_TO_SOURCE_DISK): it refuses a source that a read-write
# nbdkit serves, unless -U (share) is given, and a read-only server does
# not stop it.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires qemu-img --version

tmp=$(scratch_dir)
make_half_zero_raw "$tmp/src.raw" $((16 * 1024 * 1024)) 6
vhdtool convert "$tmp/src.raw" "$tmp/src.vhd"
export tmp

if nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/src.vhd" \
     --run 'vhdtool convert "$tmp/src.vhd" "$tmp/a.vhd"' 2> "$tmp/err"; then
  echo "$0: convert read a source that a writer holds"
  exit 1
fi
cat "$tmp/err"
grep -q "open for writing" "$tmp/err"
test ! -e "$tmp/a.vhd"

nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/src.vhd" \
  --run 'vhdtool convert -U "$tmp/src.vhd" "$tmp/b.vhd"'
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/src.vhd" readonly=true \
  --run 'vhdtool convert "$tmp/src.vhd" "$tmp/c.vhd"'
check_reads_as "$tmp/b.vhd" "$tmp/src.raw"
check_reads_as "$tmp/c.vhd" "$tmp/src.raw"

# qemu's writers are refused the same way (both use qemu's lock bytes).
if command -v qemu-nbd > /dev/null; then
  qemu-nbd --fork --persistent -k "$tmp/sock" --pid-file "$tmp/qemu.pid" \
    -f vpc "$tmp/src.vhd"
  # qemu-nbd --fork has written its pid file by the time it returns.
  cleanup_fn kill "$(cat "$tmp/qemu.pid")"
  if vhdtool convert "$tmp/src.vhd" "$tmp/d.vhd" 2> "$tmp/err"; then
    echo "$0: convert read a source that qemu-nbd writes"
    exit 1
  fi
  cat "$tmp/err"
  grep -q "open for writing" "$tmp/err"
fi

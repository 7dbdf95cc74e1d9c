#!/usr/bin/env bash
# vhdtool info on an image that is itself bad (BAT entry 0 points at the
# footer copy) opens and reads it once and says why: it used to open it a
# second time without its chain, reading the whole BAT again, which made a
# hostile image's cost double.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires strace -V
requires python3 --version

tmp=$(scratch_dir)
img=$tmp/bad.vhd
vhdtool create --dynamic 64M "$img"

# Entry 0 of the BAT := sector 0, from the spec's layout.
python3 - "$img" <<'PY'
import struct
import sys

with open(sys.argv[1], "r+b") as f:
    footer = f.read(512)
    data_offset = struct.unpack_from(">Q", footer, 16)[0]
    f.seek(data_offset + 16)
    table_offset = struct.unpack(">Q", f.read(8))[0]
    f.seek(table_offset)
    f.write(b"\0\0\0\0")
PY

if strace -f -e trace=open,openat -o "$tmp/trace" \
     vhdtool info "$img" 2> "$tmp/err"; then
  echo "$0: vhdtool info accepted a bad image"
  exit 1
fi
cat "$tmp/err"
grep "entry 0" "$tmp/err"
opens=$(grep -c "\"$img\"" "$tmp/trace")
test "$opens" -eq 1

#!/usr/bin/env bash
# vhdtool create writes images whose size qemu-img (an independent reader)
# reports exactly as requested: qemu 7.2's vpc driver trusts current_size
# only for the creator applications it knows ("win " among them) and
# otherwise rounds down to the CHS capacity, so this also proves the
# creator that vhdtool writes.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires qemu-img --version
requires python3 --version

tmp=$(scratch_dir)

# check_size TYPE SIZE BYTES: create a TYPE disk of SIZE (vhdtool's
# syntax), which must be BYTES bytes for qemu-img.
check_size ()
{
  local type=$1 size=$2 bytes=$3
  local img=$tmp/$type-$size.vhd

  vhdtool create --"$type" "$size" "$img"
  qemu-img info --output=json -f vpc "$img" > "$img.json"
  cat "$img.json"
  test "$(json_field "$img.json" format)" = vpc
  got=$(json_field "$img.json" virtual-size)
  if [ "$got" != "$bytes" ]; then
    echo "$0: $type $size: qemu-img says $got bytes, expected $bytes"
    exit 1
  fi
  echo "checked: $type $size = $bytes bytes for qemu-img"
  rm -f "$img" "$img.json"
}

check_size fixed 3M $((3 * 1024 * 1024))
check_size dynamic 3M $((3 * 1024 * 1024))
check_size fixed 100M $((100 * 1024 * 1024))
check_size dynamic 100M $((100 * 1024 * 1024))
# Not a multiple of the block size, nor of any CHS cylinder.
check_size dynamic 1000000512 1000000512
check_size dynamic 3G $((3 * 1024 * 1024 * 1024))
# The largest dynamic disk that the VHD format allows.
check_size dynamic 2040G $((2040 * 1024 * 1024 * 1024))

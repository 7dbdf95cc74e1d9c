#!/usr/bin/env bash
# A 2040 GiB dynamic disk (the largest that VHD allows) is created as a
# small file: footer, header and BAT, no data blocks.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires python3 --version

tmp=$(scratch_dir)
img=$tmp/big.vhd
bytes=$((2040 * 1024 * 1024 * 1024))

# The time is printed for the log, not checked: machines differ.
start=$(date +%s%N)
vhdtool create --dynamic 2040G "$img"
end=$(date +%s%N)
echo "vhdtool create --dynamic 2040G took $(( (end - start) / 1000000 )) ms"

file_size=$(stat -c %s "$img")
echo "file size: $file_size bytes"
if [ "$file_size" -ge $((10 * 1024 * 1024)) ]; then
  echo "$0: a 2040 GiB dynamic disk takes $file_size bytes, not < 10 MiB"
  exit 1
fi

vhdtool info --json "$img" > "$img.json"
cat "$img.json"
test "$(json_field "$img.json" type)" = dynamic
test "$(json_field "$img.json" virtual-size)" = "$bytes"
test "$(json_field "$img.json" allocated-blocks)" = 0
# The BAT covers the whole disk.
block_size=$(json_field "$img.json" block-size)
test "$(json_field "$img.json" max-table-entries)" = \
     $(( (bytes + block_size - 1) / block_size ))
echo "checked: 2040 GiB dynamic disk in $file_size bytes, no block allocated"

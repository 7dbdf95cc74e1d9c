#!/usr/bin/env bash
# A fixed disk is fully allocated (no holes, so that writes to it never run
# out of space) and is exactly its size plus the 512-byte footer.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

tmp=$(scratch_dir)
img=$tmp/fixed.vhd
bytes=$((64 * 1024 * 1024))

vhdtool create --fixed 64M "$img"

file_size=$(stat -c %s "$img")
test "$file_size" -eq $((bytes + 512))
echo "checked: file size $file_size = 64 MiB + 512"

du_bytes=$(du --block-size=1 "$img" | cut -f1)
stat_bytes=$(( $(stat -c '%b * %B' "$img") ))
echo "du: $du_bytes bytes, stat: $stat_bytes bytes allocated"
if [ "$du_bytes" -lt "$bytes" ] || [ "$stat_bytes" -lt "$bytes" ]; then
  echo "$0: the fixed disk has holes: $du_bytes (du) / $stat_bytes (stat)" \
       "bytes allocated for $bytes bytes of disk"
  exit 1
fi
echo "checked: all 64 MiB allocated"

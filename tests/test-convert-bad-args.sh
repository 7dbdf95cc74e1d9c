#!/usr/bin/env bash
# vhdtool convert and create --source refuse what they must, with exit
# status 2 for usage errors and 1 (and a message naming the rule) for
# what the library refuses; nothing is left behind either way.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

tmp=$(scratch_dir)
make_half_zero_raw "$tmp/src.raw" $((16 * 1024 * 1024)) 5
dst=$tmp/out.vhd

# expect STATUS PATTERN COMMAND...: fails with STATUS, says PATTERN on
# stderr, and leaves no target.
expect ()
{
  local want=$1 pattern=$2 status=0
  shift 2
  "$@" 2> "$tmp/err" || status=$?
  cat "$tmp/err"
  test $status -eq "$want"
  grep -qi -- "$pattern" "$tmp/err"
  test ! -e "$dst"
  test -z "$(ls -A "$tmp" | grep -v -e '^src.raw$' -e '^err$' -e '^odd.raw$' \
                               -e '^tiny.raw$' -e '^disk.vhd$')"
}

expect 2 "needs SRC and DST" vhdtool convert "$tmp/src.raw"
expect 2 "not a VHD type" vhdtool convert -O qcow2 "$tmp/src.raw" "$dst"
expect 2 "not a size" vhdtool convert --block-size 1X "$tmp/src.raw" "$dst"
expect 2 "exclusive" vhdtool create --source "$tmp/src.raw" \
  --parent "$tmp/src.raw" "$dst"
expect 2 "takes \[SIZE\] PATH" vhdtool create --source "$tmp/src.raw"
expect 2 "go with --source" vhdtool create -p 16M "$dst"

expect 1 "No such file" vhdtool convert "$tmp/missing.raw" "$dst"
expect 1 "smaller than source_path" \
  vhdtool create --source "$tmp/src.raw" 8M "$dst"
expect 1 "block_size_in_bytes is 1048576" \
  vhdtool convert --block-size 1M "$tmp/src.raw" "$dst"
head -c $((4 * 1024 * 1024 + 100)) "$tmp/src.raw" > "$tmp/odd.raw"
expect 1 "512-byte sectors" vhdtool convert "$tmp/odd.raw" "$dst"
head -c 100000 "$tmp/src.raw" > "$tmp/tiny.raw"
truncate -s 102400 "$tmp/tiny.raw"
expect 1 "under the minimum" vhdtool convert "$tmp/tiny.raw" "$dst"
expect 1 "is a directory" vhdtool convert "$tmp" "$dst"

# An existing target is never overwritten.
vhdtool create 16M "$tmp/disk.vhd"
cp "$tmp/disk.vhd" "$tmp/disk.copy"
if vhdtool convert "$tmp/src.raw" "$tmp/disk.vhd" 2> "$tmp/err"; then
  echo "$0: convert overwrote an existing file"
  exit 1
fi
grep -q "exists" "$tmp/err"
cmp "$tmp/disk.vhd" "$tmp/disk.copy"

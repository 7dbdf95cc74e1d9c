#!/usr/bin/env bash
# A deep chain (24 children, within the default limit of 32) whose base is
# missing fails promptly, and the error names the missing base.
#
# Each vhdtool child carries two locators that lead to the same parent
# file (W2ru .\P and W2ku /abs/P, also tried by file name), spelled
# differently.  If the search retries the same parent file through its
# second spelling after that parent's own chain failed, a missing base at
# depth N costs 2^N opens: depth 16 takes half a minute, depth 31 never
# ends.  The time bound below is generous for a search that tries each
# file once (a fraction of a second).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires timeout --version
requires nbdinfo --version

tmp=$(scratch_dir)
depth=24
limit=30

vhdtool create --dynamic 8M "$tmp/level0.vhd"
for (( k = 1; k <= depth; k++ )); do
  vhdtool create --parent "$tmp/level$((k-1)).vhd" "$tmp/level$k.vhd"
done

echo "check: with the base there, the chain opens"
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/level$depth.vhd" readonly=true \
  --run 'nbdinfo --size "$uri"' > "$tmp/size"
test "$(cat "$tmp/size")" -eq $((8 * 1024 * 1024))

mkdir "$tmp/stash"
mv "$tmp/level0.vhd" "$tmp/stash/"

echo "check: without the base, nbdkit fails within ${limit}s"
start=$(date +%s)
status=0
timeout "$limit" nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/level$depth.vhd" \
  readonly=true --run 'true' 2> "$tmp/serve.err" || status=$?
echo "nbdkit exited with $status after $(( $(date +%s) - start ))s"
head -c 2000 "$tmp/serve.err"
if [ "$status" -eq 124 ]; then
  echo "$0: FAIL: nbdkit was still looking for the parents after" \
       "${limit}s (a search that retries the same files?)" >&2
  exit 1
fi
test "$status" -ne 0

echo "check: the error names the missing base and where it was looked for"
must_contain "$tmp/serve.err" level0.vhd "$tmp/level0.vhd" "not found"

echo "check: vhdtool info too answers within ${limit}s, naming the base"
status=0
timeout "$limit" vhdtool info --json "$tmp/level$depth.vhd" \
  > "$tmp/info.json" || status=$?
test "$status" -eq 0
json_field "$tmp/info.json" parent-error > "$tmp/parent-error"
must_contain "$tmp/parent-error" level0.vhd "not found"

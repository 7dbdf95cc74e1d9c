#!/usr/bin/env bash
# Chains of depth 1, 2, 4 and 8 built by vhdtool (build_chain in
# functions-diff.sh): a 64 MiB dynamic base, then children of children,
# each level written through the plugin while it is the top, with a raw
# reference per level.  At the end every level, served as the top, equals
# its reference, and so does what the spec reader (vhd-chain-read.py, an
# independent reader) reads from the chain's files.  Needs no FUSE: the
# check with libvhdi's vhdimount is test-diff-chains-vhdimount.sh.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires cmp --version
requires python3 --version
requires_nbdsh

tmp=$(scratch_dir)
size=64M

for depth in 1 2 4 8; do
  dir="$tmp/depth$depth"
  mkdir "$dir"
  build_chain "$dir" "$depth" "$size"

  echo "check: depth $depth: vhdtool info shows the whole chain"
  vhdtool info --json "$dir/level$depth.vhd" > "$dir/info.json"
  key=
  for (( k = depth; k >= 1; k-- )); do
    test "$(json_field "$dir/info.json" "${key}type")" = differencing
    test "$(json_field "$dir/info.json" "${key}parent-found-by")" = \
         "W2ru locator"
    test "$(json_field "$dir/info.json" "${key}parent.path")" -ef \
         "$dir/level$((k-1)).vhd"
    key="${key}parent."
  done
  test "$(json_field "$dir/info.json" "${key}type")" = dynamic

  echo "check: depth $depth: every level, served as the top, equals its" \
       "reference"
  for (( k = 0; k <= depth; k++ )); do
    serve_copy "$dir/level$k.vhd" "$dir/out$k.raw"
    cmp "$dir/ref$k.raw" "$dir/out$k.raw"
    rm "$dir/out$k.raw"
  done

  echo "check: depth $depth: an independent reader (the spec, in Python)" \
       "reads the chain's files as the top's reference"
  python3 "$VHDKIT_SRCDIR/vhd-chain-read.py" read "$dir/spec.raw" \
    $(chain_files "$dir" "$depth")
  cmp "$dir/ref$depth.raw" "$dir/spec.raw"
  rm "$dir/spec.raw"
done

echo "check: a chain deeper than max-chain-depth is refused, clearly"
serve_must_fail "$tmp/depth.err" "$tmp/depth8/level8.vhd" max-chain-depth=4
must_contain "$tmp/depth.err" deeper 4

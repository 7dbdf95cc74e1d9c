#!/usr/bin/env bash
# The top of a differencing VHDX chain of depth 3 (build_vhdx_chain in
# functions-diff.sh: a dynamic base and three children, each written with
# writes, zeros and trims through the plugin) converts into one image
# with no parent that reads as the chain does: vhdtool convert to a
# dynamic and a fixed VHDX and VHD, and vhdtool create --source to a
# dynamic VHDX and VHD and a fixed VHDX.  Each reads back with qemu-img
# (vhdx or vpc, which also checks a VHDX clean) and the plugin as the
# chain's view, which is the model's; vhdtool info shows it as dynamic
# or fixed with no parent and vhdtool check finds it clean; a dynamic
# one holds blocks only where the view has data.  The chain's files do
# not change.  A chain missing its base converts into nothing.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires nbdinfo --version
requires cmp --version
requires sha256sum --version
requires python3 --version
requires_nbdsh
requires qemu-img --version

tmp=$(scratch_dir)
build_vhdx_chain "$tmp" 3 64M
top="$tmp/level3.avhdx"
sha256sum "$tmp"/level*.*vhdx > "$tmp/chain.sha"

echo "check: the chain's view (the plugin's) is the model's"
serve_copy "$top" "$tmp/chain.raw"
cmp "$tmp/ref3.raw" "$tmp/chain.raw"

# check_flat IMAGE FORMAT TYPE
#
# IMAGE, made from the chain, is a FORMAT (VHD, VHDX) image of TYPE
# (dynamic, fixed) that vhdtool shows with no parent and checks clean,
# and that qemu-img and the plugin read as the chain's view.
check_flat ()
{
  local img=$1 json
  json=$(scratch_dir)/info.json
  vhdtool info --json "$img" > "$json"
  test "$(json_field "$json" format)" = "$2"
  test "$(json_field "$json" type)" = "$3"
  if json_field "$json" parent 2>/dev/null ||
     json_field "$json" parent-found-by 2>/dev/null ||
     json_field "$json" vhdx.parent-linkage 2>/dev/null; then
    echo "$0: FAIL: $img shows a parent" >&2
    exit 1
  fi
  vhdtool check "$img" > "$json.check"
  must_contain "$json.check" "no errors found"
  check_reads_as "$img" "$tmp/chain.raw"
  if [ "$2" = VHDX ]; then
    python3 "$VHDKIT_SRCDIR/vhdx-spec-read.py" "$img" "$json.raw"
    cmp "$tmp/chain.raw" "$json.raw"
  fi
  if [ "$3" = dynamic ]; then
    check_zero_blocks_unallocated "$img" "$tmp/chain.raw"
  fi
}

echo "check: vhdtool convert into a dynamic VHDX (1 MiB blocks)"
vhdtool convert --block-size 1M "$top" "$tmp/convert-dynamic.vhdx"
check_flat "$tmp/convert-dynamic.vhdx" VHDX dynamic
echo "check: vhdtool convert into a dynamic VHD"
vhdtool convert "$top" "$tmp/convert-dynamic.vhd"
check_flat "$tmp/convert-dynamic.vhd" VHD dynamic
echo "check: vhdtool convert -O fixed into a fixed VHDX and VHD"
vhdtool convert -O fixed "$top" "$tmp/convert-fixed.vhdx"
check_flat "$tmp/convert-fixed.vhdx" VHDX fixed
vhdtool convert -O fixed "$top" "$tmp/convert-fixed.vhd"
check_flat "$tmp/convert-fixed.vhd" VHD fixed

echo "check: vhdtool create --source takes the chain as its source"
vhdtool create --source "$top" "$tmp/source-dynamic.vhdx"
check_flat "$tmp/source-dynamic.vhdx" VHDX dynamic
vhdtool create --source "$top" "$tmp/source-dynamic.vhd"
check_flat "$tmp/source-dynamic.vhd" VHD dynamic
vhdtool create --source "$top" --fixed "$tmp/source-fixed.vhdx"
check_flat "$tmp/source-fixed.vhdx" VHDX fixed

echo "check: the chain's files did not change"
sha256sum -c "$tmp/chain.sha"

echo "check: without its base, the chain converts into nothing"
mv "$tmp/level0.vhdx" "$tmp/moved.vhdx"
for verb in convert "create --source"; do
  if vhdtool $verb "$top" "$tmp/orphan.vhdx" 2>"$tmp/orphan.err"; then
    echo "$0: FAIL: vhdtool $verb converted a chain without its base" >&2
    exit 1
  fi
  cat "$tmp/orphan.err"
  must_contain "$tmp/orphan.err" level0.vhdx
  test ! -e "$tmp/orphan.vhdx"
  test -z "$(find "$tmp" -maxdepth 1 -name '*orphan.vhdx*' -print)"
done

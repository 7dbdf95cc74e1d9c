#!/usr/bin/env bash
# A child whose only parent locator lies in the padding of its BAT's last
# sector.  The first flush after a write would rewrite that sector whole
# (its padding as 0xFF), and the child would then lose its parent, or find
# another one by its parent name.  nbdkit (read-write and read-only),
# vhdtool info and vhdtool check all refuse it, naming the locator and the
# BAT; --repair leaves it alone, and the image reads as before with the
# spec reader.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires python3 --version
requires sha256sum --version

tmp=$(scratch_dir)
craft () { python3 "$VHDKIT_SRCDIR/craft-vhd.py" "$@"; }
spec_read () { python3 "$VHDKIT_SRCDIR/vhd-chain-read.py" read "$@"; }

vhdtool create --dynamic --block-size 2M 8M "$tmp/base.vhd"
vhdtool create --parent "$tmp/base.vhd" "$tmp/child.vhd"
craft "$tmp/child.vhd" --locator-in-bat-padding 'W2ru:.\base.vhd' \
  --name base.vhd
craft "$tmp/child.vhd" --show
spec_read "$tmp/before.raw" "$tmp/child.vhd" "$tmp/base.vhd"
sha_before=$(sha256sum < "$tmp/child.vhd")

echo "check: nbdkit refuses it, read-write and read-only"
serve_must_fail "$tmp/serve.err" "$tmp/child.vhd"
must_contain "$tmp/serve.err" child.vhd "parent locator 0's data" \
  "overlaps the BAT"
serve_must_fail "$tmp/serve-ro.err" "$tmp/child.vhd" readonly=true
must_contain "$tmp/serve-ro.err" "parent locator 0's data" "overlaps the BAT"

echo "check: vhdtool info refuses it"
if vhdtool info "$tmp/child.vhd" > "$tmp/info.out" 2> "$tmp/info.err"; then
  cat "$tmp/info.out"
  echo "$0: FAIL: vhdtool info accepted the child" >&2
  exit 1
fi
must_contain "$tmp/info.err" "parent locator 0's data" "overlaps the BAT"

echo "check: vhdtool check calls it corrupt (4); --repair leaves it (4)"
for repair in "" --repair; do
  status=0
  vhdtool check $repair "$tmp/child.vhd" > "$tmp/check.out" 2>&1 || status=$?
  cat "$tmp/check.out"
  test "$status" -eq 4
  must_contain "$tmp/check.out" "corrupt:" "parent locator 0's data" \
    "overlaps the BAT"
done

echo "check: nothing was written; the spec reader reads the same disk"
test "$(sha256sum < "$tmp/child.vhd")" = "$sha_before"
spec_read "$tmp/after.raw" "$tmp/child.vhd" "$tmp/base.vhd"
cmp "$tmp/before.raw" "$tmp/after.raw"

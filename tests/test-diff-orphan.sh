#!/usr/bin/env bash
# win10-diff-orphan.vhd, a Windows 10 differencing disk whose parent
# (fat-parent.vhd) is not among the samples: the plugin refuses to serve
# it, and the error names fat-parent.vhd and every place it tried.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires xz --version

test "$(manifest_field win10-diff-orphan.vhd expect)" = reject:parent-missing
test "$(manifest_field win10-diff-orphan.vhd type)" = 4

tmp=$(scratch_dir)
orphan=$(decompress_sample win10-diff-orphan.vhd "$tmp")
dir=$(cd "$tmp" && pwd -P)

echo "check: nbdkit fails to start, naming fat-parent.vhd and the places" \
     "tried"
serve_must_fail "$tmp/serve.err" "$orphan"
# The locators are W2ku C:\Projects\dfvfs\test_data\fat-parent.vhd and
# W2ru .\fat-parent.vhd: both lead to fat-parent.vhd in the image's own
# folder, which is where it must have looked.
must_contain "$tmp/serve.err" win10-diff-orphan.vhd fat-parent.vhd tried \
  "$dir/" W2ru W2ku
grep -F "$dir/" "$tmp/serve.err" | grep -qF fat-parent.vhd

echo "check: the same refused read-only (no writer needed to fail)"
serve_must_fail "$tmp/serve-ro.err" "$orphan" readonly=true
must_contain "$tmp/serve-ro.err" fat-parent.vhd tried

echo "check: vhdtool info shows the image and the same error"
vhdtool info --json "$orphan" > "$tmp/info.json"
cat "$tmp/info.json"
test "$(json_field "$tmp/info.json" type)" = differencing
test "$(json_field "$tmp/info.json" virtual-size)" = \
     "$(manifest_field win10-diff-orphan.vhd current_size)"
json_field "$tmp/info.json" parent-error > "$tmp/parent-error"
must_contain "$tmp/parent-error" fat-parent.vhd tried "$dir/"
if json_field "$tmp/info.json" parent-found-by 2>/dev/null; then
  echo "$0: FAIL: vhdtool info says it found a parent" >&2
  exit 1
fi

#!/usr/bin/env bash
# vhdtool info, text and --json, on every VHDX sample that opens
# (samples/vhdx/MANIFEST.tsv): the format, kind, virtual size, block size
# and logical sector size that the manifest records, block states that
# add up to the disk's blocks, and, for the two images with a dirty log,
# the log reported as replayed in memory (info opens read-only: the file
# stays as it was).

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires xz --version
requires python3 --version

tmp=$(scratch_dir)
files=$(vhdx_manifest_files open)
test -n "$files"
declare -A dirty=([qemu-iotest-dirtylog-10G-4M.vhdx.xz]=1
                  [discutils-vhdx-log-replay.vhdx.xz]=1)
n_dirty=0
for f in $files; do
  img=$(decompress_vhdx_sample "$f" "$tmp")
  before=$(sha256sum < "$img")
  vhdtool info --json "$img" > "$tmp/info.json"
  cat "$tmp/info.json"
  j () { json_field "$tmp/info.json" "$1"; }

  test "$(j format)" = VHDX
  test "$(j type)" = "$(vhdx_manifest_field "$f" kind)"
  test "$(j virtual-size)" = "$(vhdx_manifest_field "$f" virtual_size)"
  test "$(j block-size)" = "$(vhdx_manifest_field "$f" block_size)"
  test "$(j logical-sector-size)" = \
       "$(vhdx_manifest_field "$f" logical_sector_size)"
  # Every payload block is in one state.
  python3 - "$tmp/info.json" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
states = i["vhdx"]["block-states"]
assert sum(states.values()) == i["max-table-entries"], states
present = states["fully-present"] + states["partially-present"]
assert present == i["allocated-blocks"], (present, i["allocated-blocks"])
if i["type"] == "fixed":
    assert states["fully-present"] == i["max-table-entries"], states
assert i["vhdx"]["current-header"] in (1, 2)
assert i["vhdx"]["bat-length"] > 0 and i["vhdx"]["metadata-length"] > 0
PY

  if [ -n "${dirty[$f]:-}" ]; then
    n_dirty=$((n_dirty + 1))
    test "$(j vhdx.log-replayed)" = true
    test "$(j vhdx.log-entries-replayed)" -gt 0
    test "$(j vhdx.log-guid)" != 00000000-0000-0000-0000-000000000000
  else
    test "$(j vhdx.log-replayed)" = false
    test "$(j vhdx.log-entries-replayed)" = 0
  fi

  vhdtool info "$img" > "$tmp/info.txt"
  cat "$tmp/info.txt"
  grep -qx "format: VHDX" "$tmp/info.txt"
  grep -qx "virtual size: $(vhdx_manifest_field "$f" virtual_size)" \
       "$tmp/info.txt"
  grep -qx "block size: $(vhdx_manifest_field "$f" block_size)" \
       "$tmp/info.txt"
  grep -qx "logical sector size: $(vhdx_manifest_field "$f" \
            logical_sector_size)" "$tmp/info.txt"
  if [ -n "${dirty[$f]:-}" ]; then
    grep -q "^log: .* entries replayed in memory at open" "$tmp/info.txt"
  else
    grep -q "^log: .*, empty$" "$tmp/info.txt"
  fi
  # info never writes: not even the replay.
  test "$(sha256sum < "$img")" = "$before"
  rm -f "$img"
done
test "$n_dirty" = 2

#!/usr/bin/env bash
# Differencing VHDX chains of depth 1, 2, 4 and 8 built by vhdtool
# (build_vhdx_chain in functions-diff.sh): a 32 MiB dynamic base, then
# children of children in 2 MiB and 1 MiB blocks, each level written
# through the plugin while it is the top (writes aligned and not, across
# blocks, whole blocks, zeros, trims, flushes) against a raw model per
# level.  Then every level, as the top of its own chain, reads as its
# model through the plugin, through libvhdi (pyvhdi, and vhdimount, which
# follows the locators itself) and through the spec reader
# (vhdx-spec-read.py); vhdtool info shows the whole chain and vhdtool
# check finds each level clean; and no file changed after its own writes:
# a parent is never written through its children, nor by being read.
# Last, a base written after its child exists orphans the child: the
# plugin refuses the child naming both GUIDs, and serves it with
# ignore-parent-id-mismatch=true.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires cmp --version
requires sha256sum --version
requires python3 --version
requires_nbdsh
requires qemu-img --version
# After requires_nbdsh, which may have put the system's python3 first.
requires python3 -c 'import pyvhdi'
# vhdimount needs FUSE; without it, pyvhdi alone reads for libvhdi.
have_fuse=
if command -v vhdimount >/dev/null 2>&1 &&
   command -v fusermount >/dev/null 2>&1 &&
   command -v mountpoint >/dev/null 2>&1 && [ -c /dev/fuse ]; then
  have_fuse=yes
fi

tmp=$(scratch_dir)
size=32M
mnt="$tmp/mnt"
mkdir "$mnt"
unmount_vhdi ()
{
  if mountpoint -q "$mnt"; then
    fusermount -u "$mnt" || umount -l "$mnt"
  fi
}
cleanup_fn unmount_vhdi

for depth in 1 2 4 8; do
  dir="$tmp/depth$depth"
  mkdir "$dir"
  build_vhdx_chain "$dir" "$depth" "$size"
  top=$(vhdx_chain_file "$dir" "$depth")

  # Each level changed the view, so that a reader that shows a level its
  # parent's view (or its child's) cannot pass.
  for (( k = 1; k <= depth; k++ )); do
    if cmp -s "$dir/ref$((k-1)).raw" "$dir/ref$k.raw"; then
      echo "$0: FAIL: level $k of depth $depth changed nothing" >&2
      exit 1
    fi
  done

  echo "check: depth $depth: vhdtool info shows the whole chain"
  vhdtool info --json "$top" > "$dir/info.json"
  key=
  for (( k = depth; k >= 1; k-- )); do
    test "$(json_field "$dir/info.json" "${key}path")" -ef \
         "$(vhdx_chain_file "$dir" "$k")"
    test "$(json_field "$dir/info.json" "${key}format")" = VHDX
    test "$(json_field "$dir/info.json" "${key}type")" = differencing
    test "$(json_field "$dir/info.json" "${key}block-size")" = \
         "$(vhdx_chain_block_size "$k")"
    test "$(json_field "$dir/info.json" "${key}parent-found-by")" = \
         relative_path
    test "$(json_field "$dir/info.json" "${key}vhdx.locator.relative_path")" \
         = ".\\$(basename "$(vhdx_chain_file "$dir" $((k-1)))")"
    test "$(json_field "$dir/info.json" "${key}vhdx.parent-linkage")" = \
         "$(json_field "$dir/info.json" "${key}parent.vhdx.data-write-guid")"
    test "$(json_field "$dir/info.json" "${key}parent.path")" -ef \
         "$(vhdx_chain_file "$dir" $((k-1)))"
    key="${key}parent."
  done
  test "$(json_field "$dir/info.json" "${key}type")" = dynamic
  test "$(json_field "$dir/info.json" "${key}block-size")" = 1048576
  if json_field "$dir/info.json" "${key}parent" 2>/dev/null ||
     json_field "$dir/info.json" "${key}vhdx.parent-linkage" 2>/dev/null
  then
    echo "$0: FAIL: the base of depth $depth shows a parent" >&2
    exit 1
  fi

  echo "check: depth $depth: vhdtool check finds every level clean"
  for (( k = 0; k <= depth; k++ )); do
    vhdtool check "$(vhdx_chain_file "$dir" "$k")" > "$dir/check.out"
    cat "$dir/check.out"
    must_contain "$dir/check.out" "no errors found"
  done
  qemu-img check -f vhdx "$dir/level0.vhdx"

  echo "check: depth $depth: every level, served as the top, equals its" \
       "model"
  for (( k = 0; k <= depth; k++ )); do
    serve_copy "$(vhdx_chain_file "$dir" "$k")" "$dir/out.raw"
    cmp "$dir/ref$k.raw" "$dir/out.raw"
    rm "$dir/out.raw"
  done

  echo "check: depth $depth: the spec reader reads every level as its model"
  for (( k = 0; k <= depth; k++ )); do
    files=($(vhdx_chain_files "$dir" "$k"))
    python3 "$VHDKIT_SRCDIR/vhdx-spec-read.py" "${files[0]}" "$dir/spec.raw" \
      "${files[@]:1}"
    cmp "$dir/ref$k.raw" "$dir/spec.raw"
    rm "$dir/spec.raw"
  done

  # libvhdi: vhdimount finds the parents itself, by each child's locator
  # (run from the chain's folder with a bare file name, as in
  # test-diff-chains-vhdimount.sh), and shows one file per level: vhdi1
  # the base, vhdiK+1 level K, vhdiDEPTH+1 the top.  pyvhdi is given the
  # parents (it follows no locator); without FUSE, it reads every level.
  echo "check: depth $depth: libvhdi reads every level as its model"
  pyvhdi_compare "$dir/ref$depth.raw" $(vhdx_chain_files "$dir" "$depth")
  if [ -n "$have_fuse" ]; then
    (cd "$dir" && vhdimount "$(basename "$top")" "$mnt")
    ls -l "$mnt"
    test ! -e "$mnt/vhdi$((depth + 2))"
    for (( k = 0; k <= depth; k++ )); do
      cmp "$dir/ref$k.raw" "$mnt/vhdi$((k + 1))"
    done
    fusermount -u "$mnt"
  else
    for (( k = 0; k < depth; k++ )); do
      pyvhdi_compare "$dir/ref$k.raw" $(vhdx_chain_files "$dir" "$k")
    done
  fi

  echo "check: depth $depth: no file changed after its own writes"
  for (( k = 0; k <= depth; k++ )); do
    sha256sum -c "$dir/sha$k"
  done
  rm "$dir"/ref*.raw
done

echo "check: a base written after its child exists orphans the child"
dir="$tmp/orphan"
mkdir "$dir"
vhdtool create --dynamic --block-size 1M "$size" "$dir/base.vhdx"
truncate -s "$size" "$dir/base1.raw"
vhdx_random_writes "$dir/base.vhdx" 1048576 1 "$dir/base1.raw"
vhdtool create --parent "$dir/base.vhdx" "$dir/child.avhdx"
# The child's writes are whole 4 KiB-aligned pages, so that it holds every
# byte of each sector it wrote whatever it copies from its parent around
# a write: over any base it shows its own pages where it wrote, the
# base's data elsewhere.
cat > "$dir/child.py" <<'EOF'
import os, random
rng = random.Random(2)
with open(os.environ["PAGES"], "w") as f:
    for _ in range(40):
        n = rng.randrange(1, 200) * 4096
        off = rng.randrange(0, 16 * 1024 * 1024 - n) // 4096 * 4096
        h.pwrite(rng.randbytes(n), off)
        print(off, n, file=f)
h.flush()
EOF
PAGES="$dir/pages" nbdsh_script "$dir/child.avhdx" "$dir/child.py"
serve_copy "$dir/child.avhdx" "$dir/child1.raw"
linkage=$(vhdtool info --json "$dir/child.avhdx" > "$dir/child.json" &&
          json_field "$dir/child.json" vhdx.parent-linkage)
test "$linkage" = "$(vhdtool info --json "$dir/base.vhdx" > "$dir/b.json" &&
                     json_field "$dir/b.json" vhdx.data-write-guid)"

# The base written again (in the same 12 MiB, mostly, as the child).
cp --sparse=always "$dir/base1.raw" "$dir/base2.raw"
vhdx_random_writes "$dir/base.vhdx" 1048576 3 "$dir/base2.raw"
vhdtool info --json "$dir/base.vhdx" > "$dir/b.json"
guid=$(json_field "$dir/b.json" vhdx.data-write-guid)
test "$guid" != "$linkage"
sha256sum "$dir/base.vhdx" > "$dir/sha"

echo "check: the orphaned child is refused, naming both GUIDs"
serve_must_fail "$dir/serve.err" "$dir/child.avhdx" readonly=true
must_contain "$dir/serve.err" base.vhdx "{$guid}" "{$linkage}"
serve_must_fail "$dir/serve-rw.err" "$dir/child.avhdx"
must_contain "$dir/serve-rw.err" base.vhdx "{$guid}" "{$linkage}"

echo "check: the child's nil parent_linkage2 (never compared) is not quoted;" \
     "a non-nil one is"
test "$(json_field "$dir/child.json" vhdx.parent-linkage2)" = \
  00000000-0000-0000-0000-000000000000
if grep -F parent_linkage2 "$dir/serve.err"; then
  echo "$0: FAIL: the nil parent_linkage2 is quoted" >&2
  exit 1
fi
# A copy whose parent_linkage2 is another GUID: the locator's value is
# UTF-16LE text in the metadata region, which has no checksum, so it is
# rewritten in place.
cp --sparse=always "$dir/child.avhdx" "$dir/child-l2.avhdx"
python3 - "$dir/child-l2.avhdx" <<'PY'
import sys
nil = "{00000000-0000-0000-0000-000000000000}".encode("utf-16-le")
other = "{11111111-2222-4333-8444-555555555555}".encode("utf-16-le")
with open(sys.argv[1], "r+b") as f:
    data = f.read()
    assert data.count(nil) == 1, data.count(nil)
    f.seek(data.index(nil))
    f.write(other)
PY
serve_must_fail "$dir/serve-l2.err" "$dir/child-l2.avhdx" readonly=true
must_contain "$dir/serve-l2.err" "{$guid}" "{$linkage}" \
  "parent_linkage2 {11111111-2222-4333-8444-555555555555}"
rm "$dir/child-l2.avhdx"

echo "check: with ignore-parent-id-mismatch=true the child opens, and shows" \
     "its own pages over the base's new data"
overlay_pages "$dir/base2.raw" "$dir/child1.raw" "$dir/pages" \
  "$dir/expect.raw"
serve_copy "$dir/child.avhdx" "$dir/out.raw" ignore-parent-id-mismatch=true
cmp "$dir/expect.raw" "$dir/out.raw"
# Read-write too: a write goes to the child, the base stays as it is.
nbdkit -U - "$VHDKIT_PLUGIN" file="$dir/child.avhdx" \
  ignore-parent-id-mismatch=true \
  --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"\\xee\" * 5000, 20 * 1024 * 1024 + 3)
h.flush()
assert h.pread(5000, 20 * 1024 * 1024 + 3) == b\"\\xee\" * 5000
"'
sha256sum -c "$dir/sha"
# The option adopts nothing: the child still records the old GUID, and is
# refused again without it.
vhdtool info --json "$dir/child.avhdx" > "$dir/child.json"
test "$(json_field "$dir/child.json" vhdx.parent-linkage)" = "$linkage"
serve_must_fail "$dir/serve-again.err" "$dir/child.avhdx" readonly=true
must_contain "$dir/serve-again.err" "{$guid}" "{$linkage}"

echo "check: a child moved alone into another folder names each place" \
     "tried once, with each locator that led there once"
mkdir "$dir/alone"
vhdtool create --parent "$dir/base.vhdx" "$dir/alone-child.avhdx"
mv "$dir/alone-child.avhdx" "$dir/alone/child.avhdx"
vhdtool info "$dir/alone/child.avhdx" > "$dir/alone.out"
cat "$dir/alone.out"
must_contain "$dir/alone.out" \
  "$dir/alone/base.vhdx (relative_path and absolute_win32_path, by file name)"
ways_listed_once "$dir/alone.out"
status=0
vhdtool check "$dir/alone/child.avhdx" > "$dir/alone-check.out" 2>&1 ||
  status=$?
cat "$dir/alone-check.out"
test "$status" -eq 1
must_contain "$dir/alone-check.out" "cannot check: parent not found"
vhdtool check --parent-dir "$dir" "$dir/alone/child.avhdx"

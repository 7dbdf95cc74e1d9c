#!/usr/bin/env bash
# A differencing VHDX chain (a dynamic base, a child, a grandchild, made
# by vhdtool create --parent and written bottom-up through the plugin)
# whose folder is moved (mv) elsewhere, and copied into a folder with
# spaces in its name, still opens by its relative_path locators (the
# absolute paths then name a folder that is gone) and reads as its raw
# model.  The same for a chain whose top lives in a sibling folder of its
# parents (relative_path ..\parents\mid.avhdx), moved together with that
# folder: it opens with parent-dir= naming the sibling, and is refused
# without it.  A top moved away from its parents is refused, naming the
# parent and the places tried; with parent-dir= naming the parents'
# folder it opens again.

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

tmp=$(scratch_dir)
tmp=$(cd "$tmp" && pwd -P)
size=32M

# check_chain TOP REF [KEY=VALUE...]: the plugin serves TOP as REF's bytes.
check_chain ()
{
  local top=$1 ref=$2 out
  shift 2
  out=$(scratch_dir)/out.raw
  serve_copy "$top" "$out" "$@"
  cmp "$ref" "$out"
  rm "$out"
}

# info_json IMAGE OUT [vhdtool info options]: vhdtool info --json, shown.
info_json ()
{
  local img=$1 out=$2
  shift 2
  vhdtool info --json "$@" "$img" > "$out"
  cat "$out"
}

echo "check: a chain of depth 2, written bottom-up, reads as its model"
old="$tmp/first/place/chain"
mkdir -p "$old" "$tmp/refs"
build_vhdx_chain "$old" 2 "$size"
mv "$old"/ref*.raw "$tmp/refs/"
rm "$old"/sha*
ls -la "$old"
(cd "$old" && sha256sum level0.vhdx level1.avhdx level2.avhdx) \
  > "$tmp/files.sha"
for k in 1 2; do
  if cmp -s "$tmp/refs/ref$((k-1)).raw" "$tmp/refs/ref$k.raw"; then
    echo "$0: FAIL: level $k changed nothing" >&2
    exit 1
  fi
done
check_chain "$old/level2.avhdx" "$tmp/refs/ref2.raw"
info_json "$old/level2.avhdx" "$tmp/old.json"
test "$(json_field "$tmp/old.json" vhdx.locator.relative_path)" = \
     '.\level1.avhdx'
test "$(json_field "$tmp/old.json" vhdx.locator.absolute_win32_path)" = \
     "$old/level1.avhdx"
test "$(json_field "$tmp/old.json" parent.vhdx.locator.relative_path)" = \
     '.\level0.vhdx'

echo "check: the folder moved elsewhere opens by relative_path and reads" \
     "the same"
new="$tmp/second/elsewhere/moved"
mkdir -p "$(dirname "$new")"
mv "$old" "$new"
rm -r "$tmp/first"
check_chain "$new/level2.avhdx" "$tmp/refs/ref2.raw"
check_chain "$new/level1.avhdx" "$tmp/refs/ref1.raw"
info_json "$new/level2.avhdx" "$tmp/new.json"
test "$(json_field "$tmp/new.json" parent-found-by)" = relative_path
test "$(json_field "$tmp/new.json" parent.parent-found-by)" = relative_path
test "$(json_field "$tmp/new.json" parent.path)" = "$new/level1.avhdx"
test "$(json_field "$tmp/new.json" parent.parent.path)" = "$new/level0.vhdx"
# The absolute path still names the first place, which is gone.
test "$(json_field "$tmp/new.json" vhdx.locator.absolute_win32_path)" = \
     "$old/level1.avhdx"
test ! -e "$old"

echo "check: a copy in a folder with spaces in its name opens its own" \
     "files and reads the same"
copy="$tmp/with spaces/copy of the chain"
mkdir -p "$copy"
cp --sparse=always "$new"/level0.vhdx "$new"/level1.avhdx \
  "$new"/level2.avhdx "$copy/"
check_chain "$copy/level2.avhdx" "$tmp/refs/ref2.raw"
info_json "$copy/level2.avhdx" "$tmp/copy.json"
test "$(json_field "$tmp/copy.json" parent-found-by)" = relative_path
test "$(json_field "$tmp/copy.json" parent.path)" = "$copy/level1.avhdx"
test "$(json_field "$tmp/copy.json" parent.parent.path)" = \
     "$copy/level0.vhdx"
# The copy reads from its own parents: with the moved original's middle
# level gone, it still opens.
mv "$new/level1.avhdx" "$tmp/level1.stash"
check_chain "$copy/level2.avhdx" "$tmp/refs/ref2.raw"
mv "$tmp/level1.stash" "$new/level1.avhdx"

echo "check: the top moved without its parents is refused, naming the" \
     "parent and the places tried"
lonely="$tmp/lonely"
mkdir "$lonely"
mv "$new/level2.avhdx" "$lonely/"
linkage=$(json_field "$tmp/new.json" vhdx.parent-linkage)
serve_must_fail "$tmp/lonely.err" "$lonely/level2.avhdx" readonly=true
must_contain "$tmp/lonely.err" \
  "$lonely/level2.avhdx: parent .\\level1.avhdx (parent_linkage {$linkage})" \
  "could not be opened; tried: $lonely/level1.avhdx (relative_path" \
  "$old/level1.avhdx (absolute_win32_path): not found"
serve_must_fail "$tmp/lonely-rw.err" "$lonely/level2.avhdx"
must_contain "$tmp/lonely-rw.err" "parent .\\level1.avhdx" \
  "tried: $lonely/level1.avhdx"
info_json "$lonely/level2.avhdx" "$tmp/lonely.json"
json_field "$tmp/lonely.json" parent-error > "$tmp/lonely.parent-error"
must_contain "$tmp/lonely.parent-error" ".\\level1.avhdx" \
  "$lonely/level1.avhdx"
if json_field "$tmp/lonely.json" parent 2>/dev/null; then
  echo "$0: FAIL: vhdtool info shows a parent that is not there" >&2
  exit 1
fi

echo "check: with parent-dir= naming the parents' folder it opens again"
check_chain "$lonely/level2.avhdx" "$tmp/refs/ref2.raw" parent-dir="$new"
info_json "$lonely/level2.avhdx" "$tmp/lonely-pd.json" --parent-dir "$new"
test "$(json_field "$tmp/lonely-pd.json" parent-found-by)" = \
     "absolute_win32_path, by file name"
test "$(json_field "$tmp/lonely-pd.json" parent.path)" = "$new/level1.avhdx"
test "$(json_field "$tmp/lonely-pd.json" parent.parent.path)" = \
     "$new/level0.vhdx"
# An unrelated allowed folder does not help.
mkdir "$tmp/unrelated"
serve_must_fail "$tmp/unrelated.err" "$lonely/level2.avhdx" readonly=true \
  parent-dir="$tmp/unrelated"
must_contain "$tmp/unrelated.err" "$tmp/unrelated/level1.avhdx"

echo "check: no file of the chain changed (reads and opens write nothing)"
mv "$lonely/level2.avhdx" "$new/"
(cd "$new" && sha256sum -c "$tmp/files.sha")
(cd "$copy" && sha256sum -c "$tmp/files.sha")

# ---------------------------------------------------------------------
echo "check: a top in a sibling folder of its parents (..\\parents\\...)" \
     "opens with parent-dir= naming that folder"
sib="$tmp/sib/one"
mkdir -p "$sib/parents" "$sib/disks"
write_script=$(scratch_dir)/write.py
_vhdx_random_writes_script "$write_script"
# write_level IMG BLOCK SEED REF [KEY=VALUE...]: vhdx_random_writes, with
# plugin parameters.
write_level ()
{
  local img=$1 block=$2 seed=$3 ref=$4
  shift 4
  SEED=$seed BLOCK=$block REF=$ref nbdsh_script "$img" "$write_script" "$@"
}
vhdtool create --dynamic --block-size 1M "$size" "$sib/parents/base.vhdx"
truncate -s "$size" "$tmp/refs/sib0.raw"
write_level "$sib/parents/base.vhdx" 1048576 71 "$tmp/refs/sib0.raw"
vhdtool create --parent "$sib/parents/base.vhdx" "$sib/parents/mid.avhdx"
cp --sparse=always "$tmp/refs/sib0.raw" "$tmp/refs/sib1.raw"
write_level "$sib/parents/mid.avhdx" 2097152 72 "$tmp/refs/sib1.raw"
vhdtool create --parent "$sib/parents/mid.avhdx" "$sib/disks/top.avhdx"
cp --sparse=always "$tmp/refs/sib1.raw" "$tmp/refs/sib2.raw"
write_level "$sib/disks/top.avhdx" 2097152 73 "$tmp/refs/sib2.raw" \
  parent-dir="$sib/parents"
info_json "$sib/disks/top.avhdx" "$tmp/sib.json" --parent-dir "$sib/parents"
test "$(json_field "$tmp/sib.json" vhdx.locator.relative_path)" = \
     '..\parents\mid.avhdx'
(cd "$sib" && sha256sum parents/base.vhdx parents/mid.avhdx \
   disks/top.avhdx) > "$tmp/sib.sha"

moved="$tmp/sib/elsewhere/two"
mkdir -p "$(dirname "$moved")"
mv "$sib" "$moved"
check_chain "$moved/disks/top.avhdx" "$tmp/refs/sib2.raw" \
  parent-dir="$moved/parents"
info_json "$moved/disks/top.avhdx" "$tmp/sib-moved.json" \
  --parent-dir "$moved/parents"
test "$(json_field "$tmp/sib-moved.json" parent-found-by)" = relative_path
test "$(json_field "$tmp/sib-moved.json" parent.path)" = \
     "$moved/parents/mid.avhdx"
test "$(json_field "$tmp/sib-moved.json" parent.parent-found-by)" = \
     relative_path
test "$(json_field "$tmp/sib-moved.json" parent.parent.path)" = \
     "$moved/parents/base.vhdx"

echo "check: without parent-dir= the sibling folder is outside the allowed" \
     "folders and the top is refused"
sib_linkage=$(json_field "$tmp/sib-moved.json" vhdx.parent-linkage)
serve_must_fail "$tmp/sib.err" "$moved/disks/top.avhdx" readonly=true
must_contain "$tmp/sib.err" \
  "$moved/disks/top.avhdx: parent ..\\parents\\mid.avhdx (parent_linkage" \
  "{$sib_linkage}) could not be opened" \
  "$moved/disks/../parents/mid.avhdx (relative_path): refused: outside" \
  "the allowed folders"
(cd "$moved" && sha256sum -c "$tmp/sib.sha")

#!/usr/bin/env bash
# A differencing VHDX's locator is untrusted input.  Each of these is
# refused by the plugin (nbdkit does not start) and by vhdtool info, with
# a message that names the file and the field or key at fault:
#
# - its parent replaced by another VHDX of the same size: both GUIDs
#   (the parent's DataWriteGuid and the child's parent_linkage) are
#   named; with ignore-parent-id-mismatch=true the child opens, and reads
#   its own sectors over the impostor's data;
# - a locator loop: a child whose parent is itself, and A -> B -> A;
# - a locator without parent_linkage, and one without any path key;
# - paths that lead out of the allowed folders (an absolute Linux path in
#   absolute_win32_path, relative_path ..\..\x, a symlink in the folder
#   that points out of it), each at a valid parent with the right
#   DataWriteGuid: strace shows that nbdkit and vhdtool never open it,
#   and with parent-dir= naming its folder it opens (and strace sees it);
# - a chain one image deeper than the default depth limit, and deeper
#   than max-chain-depth=.
#
# The locators are rewritten with craft-vhdx-locator.py, which first has
# to show that rewriting a locator with what it holds changes nothing.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires nbdinfo --version
requires cmp --version
requires strace -V
requires python3 --version
requires_nbdsh

craft () { python3 "$VHDKIT_SRCDIR/craft-vhdx-locator.py" "$@"; }

tmp=$(scratch_dir)
tmp=$(cd "$tmp" && pwd -P)
size=8M

# dwg IMAGE: IMAGE's DataWriteGuid, as vhdtool info shows it.
dwg ()
{
  vhdtool info --json "$1" > "$tmp/dwg.json"
  json_field "$tmp/dwg.json" vhdx.data-write-guid
}

# refused CHILD ERRBASE [vhdtool info options]: nbdkit refuses to serve
# CHILD (read-only and read-write) and vhdtool info --json reports a
# parent-error for it (and no parent); ERRBASE.serve and ERRBASE.info
# hold the messages.
refused ()
{
  local child=$1 err=$2
  shift 2
  serve_must_fail "$err.serve" "$child" readonly=true
  serve_must_fail "$err.serve-rw" "$child"
  cmp <(sed 's/^nbdkit: error: //' "$err.serve") \
      <(sed 's/^nbdkit: error: //' "$err.serve-rw")
  vhdtool info --json "$@" "$child" > "$err.json"
  cat "$err.json"
  json_field "$err.json" parent-error > "$err.info"
  if json_field "$err.json" parent 2>/dev/null; then
    echo "$0: FAIL: vhdtool info opened a parent for $child" >&2
    return 1
  fi
}

# broken CHILD ERRBASE: CHILD itself is refused (its locator cannot be
# read): nbdkit does not start and vhdtool info fails, both with the
# message in ERRBASE.serve and ERRBASE.info.
broken ()
{
  local child=$1 err=$2
  serve_must_fail "$err.serve" "$child" readonly=true
  if vhdtool info "$child" > /dev/null 2> "$err.info"; then
    echo "$0: FAIL: vhdtool info showed $child" >&2
    return 1
  fi
  cat "$err.info"
}

# The parent and the children of every case, in one folder two levels
# down (so that ..\..\x is $tmp/x).
dir="$tmp/a/b"
outside="$tmp/outside"
mkdir -p "$dir" "$outside"
vhdtool create --dynamic --block-size 1M "$size" "$dir/base.vhdx"
nbdkit -U - "$VHDKIT_PLUGIN" file="$dir/base.vhdx" --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"base data \" * 40000, 12345)
h.flush()
"'
serve_copy "$dir/base.vhdx" "$tmp/base.raw"
base_guid=$(dwg "$dir/base.vhdx")
for name in control self loop-a loop-b no-linkage no-path absolute dotdot \
            symlink; do
  vhdtool create --parent "$dir/base.vhdx" "$dir/$name.avhdx"
done

echo "check: control: rewriting a locator with what it holds changes no" \
     "byte, and a crafted relative_path to a copy of the parent opens"
cp "$dir/control.avhdx" "$tmp/control.orig"
craft "$dir/control.avhdx" --show > "$tmp/control.keys"
cat "$tmp/control.keys"
grep -qxF "parent_linkage={$base_guid}" "$tmp/control.keys"
grep -qxF 'relative_path=.\base.vhdx' "$tmp/control.keys"
craft "$dir/control.avhdx" --set "parent_linkage={$base_guid}" \
  --set 'relative_path=.\base.vhdx'
cmp "$tmp/control.orig" "$dir/control.avhdx"
cp "$dir/base.vhdx" "$dir/copy.vhdx"
craft "$dir/control.avhdx" --set 'relative_path=.\copy.vhdx' \
  --remove absolute_win32_path --show
serve_copy "$dir/control.avhdx" "$tmp/control.raw"
cmp "$tmp/base.raw" "$tmp/control.raw"
vhdtool info --json "$dir/control.avhdx" > "$tmp/control.json"
test "$(json_field "$tmp/control.json" parent.path)" = "$dir/copy.vhdx"
test "$(json_field "$tmp/control.json" parent-found-by)" = relative_path
rm "$dir/copy.vhdx"

echo "check: a child whose locator names itself is refused as a loop"
craft "$dir/self.avhdx" --set 'relative_path=.\self.avhdx' \
  --remove absolute_win32_path \
  --set "parent_linkage={$(dwg "$dir/self.avhdx")}"
refused "$dir/self.avhdx" "$tmp/self"
for f in "$tmp/self.serve" "$tmp/self.info"; do
  must_contain "$f" "self.avhdx: parent .\\self.avhdx (parent_linkage" \
    "tried: $dir/self.avhdx (relative_path): refused: it is an image of" \
    "this chain (a locator loop)"
done

echo "check: A -> B -> A is refused as a loop, naming both"
guid_a=$(dwg "$dir/loop-a.avhdx")
guid_b=$(dwg "$dir/loop-b.avhdx")
craft "$dir/loop-a.avhdx" --set 'relative_path=.\loop-b.avhdx' \
  --remove absolute_win32_path --set "parent_linkage={$guid_b}"
craft "$dir/loop-b.avhdx" --set 'relative_path=.\loop-a.avhdx' \
  --remove absolute_win32_path --set "parent_linkage={$guid_a}"
refused "$dir/loop-a.avhdx" "$tmp/loop"
for f in "$tmp/loop.serve" "$tmp/loop.info"; do
  must_contain "$f" \
    "$dir/loop-b.avhdx: parent .\\loop-a.avhdx (parent_linkage {$guid_a})" \
    "tried: $dir/loop-a.avhdx (relative_path): refused: it is an image of" \
    "(a locator loop)"
done

echo "check: a locator without parent_linkage is refused, naming the key"
craft "$dir/no-linkage.avhdx" --remove parent_linkage --show
broken "$dir/no-linkage.avhdx" "$tmp/no-linkage"
for f in "$tmp/no-linkage.serve" "$tmp/no-linkage.info"; do
  must_contain "$f" "no-linkage.avhdx: parent locator: no parent_linkage" \
    "key (the parent's identity, which MUST be there)"
done

echo "check: a locator without any path key is refused, naming the keys"
craft "$dir/no-path.avhdx" --remove relative_path \
  --remove absolute_win32_path --show
broken "$dir/no-path.avhdx" "$tmp/no-path"
for f in "$tmp/no-path.serve" "$tmp/no-path.info"; do
  must_contain "$f" "no-path.avhdx: parent locator: no path to the parent" \
    "(none of the keys relative_path, volume_path, absolute_win32_path)"
done

# ---------------------------------------------------------------------
# The parent leaves the folder: $outside/base.vhdx and $tmp/x are valid
# parents of every child above (same DataWriteGuid and size), so only
# the confinement keeps them from being opened.
mv "$dir/base.vhdx" "$outside/base.vhdx"
cp "$outside/base.vhdx" "$tmp/x"

# confined CHILD NAME OUTSIDE-FILE...: nbdkit and vhdtool info refuse
# CHILD (messages in $tmp/NAME.serve, $tmp/NAME.info), and strace shows
# that neither opened any OUTSIDE-FILE.
confined ()
{
  local child=$1 name=$2
  shift 2
  strace_opens "$tmp/$name.serve.strace" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$child" readonly=true --run true \
    2> "$tmp/$name.serve" && {
      cat "$tmp/$name.serve" >&2
      echo "$0: FAIL: nbdkit served $child" >&2
      return 1
    }
  cat "$tmp/$name.serve"
  no_successful_open "$tmp/$name.serve.strace" "$child" "$@"
  strace_opens "$tmp/$name.info.strace" \
    env -u SHELL vhdtool info --json "$child" > "$tmp/$name.json"
  cat "$tmp/$name.json"
  json_field "$tmp/$name.json" parent-error > "$tmp/$name.info"
  no_successful_open "$tmp/$name.info.strace" "$child" "$@"
}

# allowed CHILD NAME DIR FILE: with parent-dir=DIR, CHILD opens with FILE
# as its parent and reads as the base; strace sees FILE opened (so that
# its silence in confined means something).
allowed ()
{
  local child=$1 name=$2 pdir=$3 file=$4
  serve_copy "$child" "$tmp/$name.raw" parent-dir="$pdir"
  cmp "$tmp/base.raw" "$tmp/$name.raw"
  rm "$tmp/$name.raw"
  strace_opens "$tmp/$name.allowed.strace" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$child" readonly=true \
    parent-dir="$pdir" --run true
  if no_successful_open "$tmp/$name.allowed.strace" "$child" "$file"; then
    echo "$0: FAIL: the strace check missed the open of $file" >&2
    return 1
  fi
  vhdtool info --json --parent-dir "$pdir" "$child" > "$tmp/$name.pd.json"
  test "$(json_field "$tmp/$name.pd.json" parent.path)" = "$file"
}

echo "check: absolute_win32_path naming a parent elsewhere by its Linux" \
     "path is refused, and that file never opened"
craft "$dir/absolute.avhdx" --remove relative_path \
  --set "absolute_win32_path=$outside/base.vhdx" --show
confined "$dir/absolute.avhdx" absolute "$outside/base.vhdx" "$tmp/x"
for f in "$tmp/absolute.serve" "$tmp/absolute.info"; do
  must_contain "$f" \
    "absolute.avhdx: parent $outside/base.vhdx (parent_linkage {$base_guid})" \
    "tried: $outside/base.vhdx (absolute_win32_path): refused: outside the" \
    "allowed folders" "$dir/base.vhdx (absolute_win32_path, by file name):" \
    "not found"
done
allowed "$dir/absolute.avhdx" absolute "$outside" "$outside/base.vhdx"

echo "check: relative_path ..\\..\\x is refused, and x never opened"
craft "$dir/dotdot.avhdx" --set 'relative_path=..\..\x' \
  --remove absolute_win32_path --show
confined "$dir/dotdot.avhdx" dotdot "$tmp/x" "$outside/base.vhdx"
for f in "$tmp/dotdot.serve" "$tmp/dotdot.info"; do
  must_contain "$f" "dotdot.avhdx: parent ..\\..\\x (parent_linkage" \
    "tried: $dir/../../x (relative_path): refused: outside the allowed" \
    "folders"
done
allowed "$dir/dotdot.avhdx" dotdot "$tmp" "$tmp/x"

echo "check: a symlink in the folder that points out of it is refused, and" \
     "its target never opened"
ln -s "$outside/base.vhdx" "$dir/link.vhdx"
craft "$dir/symlink.avhdx" --set 'relative_path=.\link.vhdx' \
  --set 'absolute_win32_path=C:\Hyper-V\link.vhdx' --show
confined "$dir/symlink.avhdx" symlink "$outside/base.vhdx" "$tmp/x"
for f in "$tmp/symlink.serve" "$tmp/symlink.info"; do
  must_contain "$f" "symlink.avhdx: parent .\\link.vhdx (parent_linkage" \
    "tried: $dir/link.vhdx (relative_path and absolute_win32_path, by file" \
    "name): refused: outside the allowed folders"
done
allowed "$dir/symlink.avhdx" symlink "$outside" "$outside/base.vhdx"

echo "check: nothing outside was written"
cmp "$outside/base.vhdx" "$tmp/x"
serve_copy "$tmp/x" "$tmp/x.raw"
cmp "$tmp/base.raw" "$tmp/x.raw"

# ---------------------------------------------------------------------
echo "check: a parent replaced by another VHDX of the same size is" \
     "refused, naming both GUIDs"
rep="$tmp/replaced"
mkdir "$rep"
vhdtool create --dynamic --block-size 1M "$size" "$rep/base.vhdx"
vhdtool create --parent "$rep/base.vhdx" "$rep/child.avhdx"
link=$(dwg "$rep/base.vhdx")
# The child's writes are whole 4 KiB pages, so that over any parent it
# shows its own pages where it wrote and the parent's data elsewhere.
cat > "$tmp/pages.py" <<'EOF'
import os, random
rng = random.Random(int(os.environ["SEED"]))
size = h.get_size()
with open(os.environ["PAGES"], "w") as f:
    for _ in range(int(os.environ["COUNT"])):
        n = rng.randrange(1, 64) * 4096
        off = rng.randrange(0, size - n) // 4096 * 4096
        h.pwrite(rng.randbytes(n), off)
        print(off, n, file=f)
h.flush()
EOF
SEED=1 COUNT=20 PAGES="$tmp/child.pages" \
  nbdsh_script "$rep/child.avhdx" "$tmp/pages.py"
serve_copy "$rep/child.avhdx" "$tmp/child.raw"
mv "$rep/base.vhdx" "$tmp/real-base.vhdx"
vhdtool create --dynamic "$size" "$rep/base.vhdx"
SEED=2 COUNT=60 PAGES="$tmp/impostor.pages" \
  nbdsh_script "$rep/base.vhdx" "$tmp/pages.py"
serve_copy "$rep/base.vhdx" "$tmp/impostor.raw"
imp=$(dwg "$rep/base.vhdx")
test "$imp" != "$link"
refused "$rep/child.avhdx" "$tmp/mismatch"
for f in "$tmp/mismatch.serve" "$tmp/mismatch.info"; do
  must_contain "$f" "child.avhdx: parent .\\base.vhdx (parent_linkage" \
    "{$link}) could not be opened" \
    "tried: $rep/base.vhdx (relative_path" \
    "its DataWriteGuid {$imp} is not the parent_linkage {$link} that" \
    "child.avhdx records"
done

echo "check: with ignore-parent-id-mismatch=true it opens, and shows its" \
     "own pages over the impostor's data"
overlay_pages "$tmp/impostor.raw" "$tmp/child.raw" "$tmp/child.pages" \
  "$tmp/expect.raw"
imp_sha=$(sha256sum < "$rep/base.vhdx")
serve_copy "$rep/child.avhdx" "$tmp/ignored.raw" ignore-parent-id-mismatch=true
cmp "$tmp/expect.raw" "$tmp/ignored.raw"
test "$(sha256sum < "$rep/base.vhdx")" = "$imp_sha"
# The real base put back, the child reads as before.
mv -f "$tmp/real-base.vhdx" "$rep/base.vhdx"
serve_copy "$rep/child.avhdx" "$tmp/back.raw"
cmp "$tmp/child.raw" "$tmp/back.raw"

# ---------------------------------------------------------------------
echo "check: a chain one image deeper than the default limit is refused," \
     "naming the limit"
limit=$(sed -n 's/^#define VHD_DEFAULT_MAX_CHAIN_DEPTH  *\([0-9][0-9]*\)$/\1/p' \
          "$VHDKIT_SRCDIR/../lib/vhdkit.h")
test "$limit" -ge 4
deep="$tmp/deep"
mkdir "$deep"
vhdtool create --dynamic --block-size 1M "$size" "$deep/level0.vhdx"
nbdkit -U - "$VHDKIT_PLUGIN" file="$deep/level0.vhdx" --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"deep \" * 1000, 4096 * 3 + 7)
h.flush()
"'
python3 -c '
import sys
data = bytearray(8 * 1024 * 1024)
data[4096 * 3 + 7:4096 * 3 + 7 + 5000] = b"deep " * 1000
open(sys.argv[1], "wb").write(data)' "$tmp/deep.raw"
prev="$deep/level0.vhdx"
for (( k = 1; k < limit; k++ )); do
  vhdtool create --parent "$prev" "$deep/level$k.avhdx"
  prev="$deep/level$k.avhdx"
done
# vhdtool create refuses to make the image past the limit itself: one is
# made on the level below and its locator pointed at the last level.
last="$deep/level$((limit - 1)).avhdx"
vhdtool create --parent "$deep/level$((limit - 2)).avhdx" "$deep/over.avhdx"
craft "$deep/over.avhdx" --set "relative_path=.\\$(basename "$last")" \
  --remove absolute_win32_path --set "parent_linkage={$(dwg "$last")}"
# $limit images open ...
serve_copy "$last" "$tmp/deep-last.raw"
cmp "$tmp/deep.raw" "$tmp/deep-last.raw"
# ... one more does not.
refused "$deep/over.avhdx" "$tmp/deep"
for f in "$tmp/deep.serve" "$tmp/deep.info"; do
  must_contain "$f" "$deep/level1.avhdx: the parent chain is deeper than" \
    "$limit images (the limit; raise max_chain_depth)"
done
# max-chain-depth= lets the operator raise it, and it reads as the base.
serve_copy "$deep/over.avhdx" "$tmp/deep-over.raw" \
  max-chain-depth=$((limit + 1))
cmp "$tmp/deep.raw" "$tmp/deep-over.raw"

echo "check: a chain deeper than max-chain-depth= is refused, naming it"
serve_copy "$deep/level2.avhdx" "$tmp/deep-3.raw" max-chain-depth=3
cmp "$tmp/deep.raw" "$tmp/deep-3.raw"
serve_must_fail "$tmp/depth3.serve" "$deep/level3.avhdx" readonly=true \
  max-chain-depth=3
must_contain "$tmp/depth3.serve" "$deep/level1.avhdx: the parent chain is" \
  "deeper than 3 images (the limit; raise max_chain_depth)"

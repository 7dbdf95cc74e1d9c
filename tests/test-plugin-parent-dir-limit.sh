#!/usr/bin/env bash
# parent-dir= may be given VHD_MAX_PARENT_DIRS times (the public limit in
# vhdkit.h): with that many, a child whose parent is in the last folder
# opens; one more is refused when nbdkit starts, whatever the image (a
# dynamic one here, which never looks for a parent), with a message that
# names the limit.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version

limit=$(sed -n 's/^#define VHD_MAX_PARENT_DIRS  *\([0-9][0-9]*\)$/\1/p' \
          "$VHDKIT_SRCDIR/../lib/vhdkit.h")
test -n "$limit"

tmp=$(scratch_dir)
mkdir "$tmp/child" "$tmp/last"
vhdtool create --dynamic 8M "$tmp/last/base.vhd"
vhdtool create --parent "$tmp/last/base.vhd" "$tmp/child/child.vhd"
vhdtool create --dynamic 8M "$tmp/child/dynamic.vhd"

# limit - 1 folders that hold nothing, then the parent's as the last.
dirs=()
for (( i = 1; i < limit; i++ )); do
  mkdir "$tmp/empty$i"
  dirs+=("parent-dir=$tmp/empty$i")
done
dirs+=("parent-dir=$tmp/last")

# Exactly the limit: the chain opens through the last folder.
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/child/child.vhd" readonly=true \
  "${dirs[@]}" --run true

# One more: refused at start-up, for a dynamic image too.
mkdir "$tmp/one-more"
if nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/child/dynamic.vhd" \
     "${dirs[@]}" parent-dir="$tmp/one-more" --run true 2> "$tmp/err"; then
  cat "$tmp/err"
  echo "$0: FAIL: nbdkit started with $((limit + 1)) parent-dir= folders" >&2
  exit 1
fi
cat "$tmp/err"
grep -q "parent-dir: too many parent folders (at most $limit)" "$tmp/err"

#!/usr/bin/env bash
# A differencing chain through the filter: the child comes from the
# plugin below, its parents from the local parent-dir= folders, with the
# plugin's confinement.
#  - a chain of three made by vhdtool (child -> level1 -> level0), each
#    level written with a raw reference: the filter reads the child equal
#    to the reference, as the spec reader in tests/ does;
#  - the parent found only in parent-dir=, not beside the child;
#  - without parent-dir= the image is refused with a message saying so;
#  - a locator pointing outside the parent folders is not followed.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
source "$VHDKIT_SRCDIR/filter-functions.sh"
set -e
set -x

requires_plugin
requires_filter
requires vhdtool --version
requires nbdcopy --version
requires python3 --version
requires sha256sum --version
requires_nbdsh

tmp=$(scratch_dir)
mkdir "$tmp/parents" "$tmp/child" "$tmp/elsewhere"

# A chain of two children on a dynamic base, each level written through
# the plugin with a raw reference (build_chain); then the top is moved
# away from its parents, which it finds only through parent-dir=.
build_chain "$tmp/parents" 2 64M
mv "$tmp/parents/level2.vhd" "$tmp/child/child.vhd"
want=$(sha256sum < "$tmp/parents/ref2.raw" | cut -d' ' -f1)

got=$(sha_through_filter "$tmp/child/child.vhd" parent-dir="$tmp/parents")
test "$got" = "$want"

# The independent reader (the spec, in Python) agrees with the reference.
python3 "$VHDKIT_SRCDIR/vhd-chain-read.py" read "$tmp/spec.raw" \
  "$tmp/child/child.vhd" "$tmp/parents/level1.vhd" "$tmp/parents/level0.vhd"
cmp "$tmp/parents/ref2.raw" "$tmp/spec.raw"

# No parent-dir=: refused at the first connection, saying why.
if nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$tmp/child/child.vhd" \
     --run 'nbdinfo "$uri"' > /dev/null 2> "$tmp/err"; then
  echo "$0: a differencing image opened through the filter without parent-dir="
  exit 1
fi
cat "$tmp/err"
grep -q "parent-dir" "$tmp/err"

# Parents in a folder that parent-dir= does not name are not found.
if nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$tmp/child/child.vhd" \
     parent-dir="$tmp/elsewhere" \
     --run 'nbdinfo "$uri"' > /dev/null 2> "$tmp/err"; then
  echo "$0: a parent outside parent-dir= was opened"
  exit 1
fi
cat "$tmp/err"
grep -q "level1.vhd" "$tmp/err"

#!/usr/bin/env bash
# vhdtool create --parent makes a differencing disk that takes its size
# from the parent and records the parent's uuid; a child of that child
# works too, and vhdtool info resolves the whole chain.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires python3 --version

tmp=$(scratch_dir)
cd "$tmp"

vhdtool create --dynamic 100M base.vhd
vhdtool info --json base.vhd > base.json
base_uuid=$(json_field base.json uuid)

# A differencing disk takes no SIZE.
vhdtool create --parent base.vhd child.vhd
vhdtool info --json child.vhd > child.json
cat child.json
test "$(json_field child.json type)" = differencing
test "$(json_field child.json virtual-size)" = 104857600
test "$(json_field child.json parent-uuid)" = "$base_uuid"
test "$(json_field child.json parent.uuid)" = "$base_uuid"
test "$(json_field child.json parent.type)" = dynamic
child_uuid=$(json_field child.json uuid)
test "$child_uuid" != "$base_uuid"
echo "checked: child.vhd is differencing, 100 MiB, parent $base_uuid"

vhdtool create --parent child.vhd grandchild.vhd
vhdtool info --json grandchild.vhd > grandchild.json
cat grandchild.json
test "$(json_field grandchild.json type)" = differencing
test "$(json_field grandchild.json virtual-size)" = 104857600
test "$(json_field grandchild.json parent-uuid)" = "$child_uuid"
test "$(json_field grandchild.json parent.uuid)" = "$child_uuid"
test "$(json_field grandchild.json parent.parent-uuid)" = "$base_uuid"
test "$(json_field grandchild.json parent.parent.uuid)" = "$base_uuid"
echo "checked: grandchild.vhd -> child.vhd -> base.vhd resolves"

# The text output names the parent as well.
vhdtool info grandchild.vhd > grandchild.txt
cat grandchild.txt
grep -q "^parent uuid: $child_uuid\$" grandchild.txt
echo "checked: vhdtool info (text) shows the parent uuid"

# A fixed disk can be a parent too.
vhdtool create --fixed 3M fixed.vhd
vhdtool info --json fixed.vhd > fixed.json
vhdtool create --parent fixed.vhd fixed-child.vhd
vhdtool info --json fixed-child.vhd > fixed-child.json
test "$(json_field fixed-child.json type)" = differencing
test "$(json_field fixed-child.json virtual-size)" = 3145728
test "$(json_field fixed-child.json parent-uuid)" = \
     "$(json_field fixed.json uuid)"
echo "checked: fixed-child.vhd is a 3 MiB child of fixed.vhd"

# A differencing disk takes its size from the parent: giving one is a
# usage error.
if vhdtool create --parent base.vhd 100M sized-child.vhd; then
  echo "$0: create --parent accepted a SIZE"
  exit 1
fi
test ! -e sized-child.vhd
echo "checked: create --parent with a SIZE is refused"

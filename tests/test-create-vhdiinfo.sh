#!/usr/bin/env bash
# libvhdi's vhdiinfo (an independent reader) opens fixed, dynamic and
# differencing images that vhdtool created, reports their media size
# exactly, their identifier as vhdtool's uuid, and a differencing child's
# parent identifier as its parent's identifier.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires vhdiinfo -V
requires python3 --version

tmp=$(scratch_dir)
cd "$tmp"

# vhdiinfo prints "\tName\t\t: value" lines; print the value of one.
vhdiinfo_field ()
{
  awk -F ': ' -v key="$2" '{ k = $1; gsub(/^[ \t]+|[ \t]+$/, "", k) }
    k == key { print $2; exit }' "$1"
}

# check IMG TYPE BYTES: vhdiinfo reads IMG as a TYPE disk (vhdiinfo's
# word) of exactly BYTES bytes, identified by vhdtool's uuid.
check ()
{
  local img=$1 type=$2 bytes=$3 size uuid

  vhdiinfo "$img" > "$img.vhdiinfo"
  cat "$img.vhdiinfo" >&2
  test "$(vhdiinfo_field "$img.vhdiinfo" "Disk type")" = "$type"
  size=$(vhdiinfo_field "$img.vhdiinfo" "Media size")
  # "100 MiB (104857600 bytes)"
  case "$size" in
    *"($bytes bytes)") ;;
    *) echo "$0: $img: vhdiinfo media size '$size', expected $bytes bytes" >&2
       exit 1 ;;
  esac
  vhdtool info --json "$img" > "$img.json"
  uuid=$(json_field "$img.json" uuid)
  test "$(vhdiinfo_field "$img.vhdiinfo" Identifier)" = "$uuid"
  echo "checked: vhdiinfo reads $img as $type, $bytes bytes, id $uuid"
}

vhdtool create --fixed 3M fixed.vhd
check fixed.vhd Fixed 3145728

vhdtool create --dynamic 100M dynamic.vhd
check dynamic.vhd Dynamic 104857600

vhdtool create --dynamic --block-size 512K 1000000512 odd.vhd
check odd.vhd Dynamic 1000000512

vhdtool create --dynamic 3G base.vhd
check base.vhd Dynamic 3221225472
base_id=$(vhdiinfo_field base.vhd.vhdiinfo Identifier)

vhdtool create --parent base.vhd child.vhd
check child.vhd Differential 3221225472
parent_id=$(vhdiinfo_field child.vhd.vhdiinfo "Parent identifier")
if [ "$parent_id" != "$base_id" ]; then
  echo "$0: vhdiinfo: child's parent identifier $parent_id," \
       "but the parent's identifier is $base_id"
  exit 1
fi
echo "checked: vhdiinfo: the child's parent identifier is the base's"

vhdtool create --fixed 3M fixed-base.vhd
check fixed-base.vhd Fixed 3145728
vhdtool create --parent fixed-base.vhd fixed-child.vhd
check fixed-child.vhd Differential 3145728
test "$(vhdiinfo_field fixed-child.vhd.vhdiinfo "Parent identifier")" = \
     "$(vhdiinfo_field fixed-base.vhd.vhdiinfo Identifier)"
echo "checked: vhdiinfo: the child of a fixed disk names it as its parent"

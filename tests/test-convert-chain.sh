#!/usr/bin/env bash
# A differencing chain as the source (base <- child <- grandchild, written
# at every level through the plugin) converts into one dynamic image, with
# no parent, that reads as the chain does; the converted blocks are the
# ones that hold data anywhere in the chain.  The same into a dynamic
# VHDX (1 MiB blocks, so that the zero blocks it leaves out are many).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdcopy --version
requires qemu-img --version

tmp=$(scratch_dir)
make_half_zero_raw "$tmp/src.raw" $((32 * 1024 * 1024)) 2
vhdtool convert "$tmp/src.raw" "$tmp/base.vhd"
vhdtool create --parent "$tmp/base.vhd" "$tmp/child.vhd"
vhdtool create --parent "$tmp/child.vhd" "$tmp/grandchild.vhd"

# Writes into a child cover data and zeros of the level below, unaligned.
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/child.vhd" \
  --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"\\xc1\" * 100000, 2 * 1024 * 1024 - 50000)
h.pwrite(b\"\\xc2\" * 4096, 13 * 1024 * 1024 + 7)
h.flush()
"'
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/grandchild.vhd" \
  --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"\\xd1\" * 3000, 2 * 1024 * 1024 - 1000)
h.zero(65536, 0)
h.pwrite(b\"\\xd2\" * 512, 31 * 1024 * 1024)
h.flush()
"'

# The chain's view, as the plugin reads it.
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/grandchild.vhd" readonly=true \
  --run 'nbdcopy "$uri" "'"$tmp"'/chain.raw"'
cmp -n 65536 "$tmp/chain.raw" /dev/zero

vhdtool convert "$tmp/grandchild.vhd" "$tmp/flat.vhd"
test "$(info_field "$tmp/flat.vhd" type)" = dynamic
vhdtool info "$tmp/flat.vhd" | grep -v '^parent'
check_reads_as "$tmp/flat.vhd" "$tmp/chain.raw"
check_zero_blocks_unallocated "$tmp/flat.vhd" "$tmp/chain.raw"

vhdtool convert --block-size 1M "$tmp/grandchild.vhd" "$tmp/flat.vhdx"
test "$(info_field "$tmp/flat.vhdx" format)" = VHDX
test "$(info_field "$tmp/flat.vhdx" type)" = dynamic
check_reads_as "$tmp/flat.vhdx" "$tmp/chain.raw"
check_zero_blocks_unallocated "$tmp/flat.vhdx" "$tmp/chain.raw"

# The chain itself was not changed by being read.
nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/grandchild.vhd" readonly=true \
  --run 'nbdcopy "$uri" "'"$tmp"'/again.raw"'
cmp "$tmp/chain.raw" "$tmp/again.raw"

# A VHDX child whose parent is gone: the error names the source as a
# disk (it is not a VHD) and says why.
vhdtool convert "$tmp/src.raw" "$tmp/lone-base.vhdx"
mkdir "$tmp/lone"
vhdtool create --parent "$tmp/lone-base.vhdx" "$tmp/lone/child.avhdx"
rm "$tmp/lone-base.vhdx"
if vhdtool convert "$tmp/lone/child.avhdx" "$tmp/lone/out.vhdx" \
     2> "$tmp/lone/err"; then
  echo "convert of a child without its parent succeeded"; exit 1
fi
cat "$tmp/lone/err"
grep -q 'cannot open the source disk:' "$tmp/lone/err"
# (`! grep` would not stop the script: set -e ignores a negated command.)
if grep -q 'source VHD' "$tmp/lone/err"; then exit 1; fi
test ! -e "$tmp/lone/out.vhdx"

# A chain whose base lives in another folder (A) than the child (B): with
# --parent-dir A, convert reads the chain as the plugin does with
# parent-dir=A, and create --parent extends it; without, both refuse
# (A is not an allowed folder).  The same for VHD and VHDX.
for ext in vhd vhdx; do
  case $ext in
    vhd) child=child.vhd; grandchild=grandchild.vhd ;;
    vhdx) child=child.avhdx; grandchild=grandchild.avhdx ;;
  esac
  d="$tmp/pd-$ext"
  mkdir -p "$d/A" "$d/B"
  vhdtool convert "$tmp/src.raw" "$d/A/base.$ext"
  vhdtool create --parent "$d/A/base.$ext" "$d/B/$child"
  nbdkit -U - "$VHDKIT_PLUGIN" file="$d/B/$child" parent-dir="$d/A" \
    --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"\\xe1\" * 70000, 3 * 1024 * 1024 - 1000)
h.zero(8192, 6 * 1024 * 1024)
h.flush()
"'
  nbdkit -U - "$VHDKIT_PLUGIN" file="$d/B/$child" parent-dir="$d/A" \
    readonly=true --run 'nbdcopy "$uri" "'"$d"'/chain.raw"'
  cmp -s "$d/chain.raw" "$tmp/src.raw" && exit 1  # the child's writes show

  if vhdtool convert "$d/B/$child" "$d/flat0.$ext" 2> "$d/err"; then
    echo "convert found a parent outside the allowed folders"; exit 1
  fi
  grep -q 'outside the allowed folders' "$d/err"
  vhdtool convert --parent-dir "$d/A" "$d/B/$child" "$d/flat.$ext"
  check_reads_as "$d/flat.$ext" "$d/chain.raw"

  if vhdtool create --parent "$d/B/$child" "$d/B/$grandchild" 2> "$d/err"
  then
    echo "create --parent found a parent outside the allowed folders"; exit 1
  fi
  test ! -e "$d/B/$grandchild"
  vhdtool create --parent "$d/B/$child" --parent-dir "$d/A" \
    "$d/B/$grandchild"
  nbdkit -U - "$VHDKIT_PLUGIN" file="$d/B/$grandchild" parent-dir="$d/A" \
    readonly=true --run 'nbdcopy "$uri" "'"$d"'/gc.raw"'
  cmp "$d/chain.raw" "$d/gc.raw"
done

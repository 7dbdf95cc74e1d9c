#!/usr/bin/env bash
# raw -> dynamic -> fixed -> dynamic with vhdtool convert: every result
# reads back byte for byte as the raw source (with qemu-img and with the
# plugin), and in the dynamic ones the source's all-zero blocks stay
# unallocated (vhdtool info, nbdinfo --map), and zeros inside a VHDX
# block are holes in the file, not written.  create --source with a
# larger size extends the disk with zeros.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires nbdinfo --version
requires qemu-img --version

tmp=$(scratch_dir)
size=$((64 * 1024 * 1024))
make_half_zero_raw "$tmp/src.raw" $size 1

vhdtool convert "$tmp/src.raw" "$tmp/d1.vhd"
test "$(info_field "$tmp/d1.vhd" type)" = dynamic
test "$(info_field "$tmp/d1.vhd" virtual-size)" -eq $size
check_reads_as "$tmp/d1.vhd" "$tmp/src.raw"
check_zero_blocks_unallocated "$tmp/d1.vhd" "$tmp/src.raw"
# 16 data blocks and 2 partly written ones: the file holds them and little
# more.
test "$(stat -c %s "$tmp/d1.vhd")" -lt $((19 * 2 * 1024 * 1024))

vhdtool convert -O fixed "$tmp/d1.vhd" "$tmp/f.vhd"
test "$(info_field "$tmp/f.vhd" type)" = fixed
test "$(stat -c %s "$tmp/f.vhd")" -eq $((size + 512))
check_reads_as "$tmp/f.vhd" "$tmp/src.raw"

vhdtool convert -O dynamic "$tmp/f.vhd" "$tmp/d2.vhd"
check_reads_as "$tmp/d2.vhd" "$tmp/src.raw"
check_zero_blocks_unallocated "$tmp/d2.vhd" "$tmp/src.raw"
test "$(info_field "$tmp/d2.vhd" allocated-blocks)" -eq \
     "$(info_field "$tmp/d1.vhd" allocated-blocks)"

# 512 KiB blocks.
vhdtool convert --block-size 512K "$tmp/src.raw" "$tmp/small.vhd"
test "$(info_field "$tmp/small.vhd" block-size)" -eq $((512 * 1024))
check_reads_as "$tmp/small.vhd" "$tmp/src.raw"

# Dynamic VHDX, 32 MiB blocks: both blocks are half data, half zeros;
# the zeros are not copied but left as holes in the file (a new block's
# space reads as zeros), so the file holds the data and the headers.
vhdtool convert "$tmp/src.raw" "$tmp/d1.vhdx"
test "$(info_field "$tmp/d1.vhdx" allocated-blocks)" -eq 2
check_reads_as "$tmp/d1.vhdx" "$tmp/src.raw"
allocated=$(( $(stat -c '%b * %B' "$tmp/d1.vhdx") ))
test "$allocated" -lt $((36 * 1024 * 1024))

# A larger size: the source, then zeros.
vhdtool create --source "$tmp/src.raw" 96M "$tmp/big.vhd"
test "$(info_field "$tmp/big.vhd" virtual-size)" -eq $((96 * 1024 * 1024))
cp "$tmp/src.raw" "$tmp/big.raw"
truncate -s 96M "$tmp/big.raw"
check_reads_as "$tmp/big.vhd" "$tmp/big.raw"
vhdtool create --source "$tmp/d1.vhd" --fixed 96M "$tmp/bigf.vhd"
check_reads_as "$tmp/bigf.vhd" "$tmp/big.raw"

# Every result's structure is clean.
for img in d1 f d2 small big bigf; do
  vhdtool check "$tmp/$img.vhd"
done

#!/usr/bin/env bash
# A block device as the source: a loop device over a raw file converts to
# a dynamic and a fixed image that read back as the file, the device's
# all-zero blocks (found by reading: a device has no holes to ask for)
# left unallocated.  A loop device over a VHD file is read as a VHD.
# Needs root and a working losetup: skipped otherwise.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires nbdinfo --version
requires qemu-img --version
requires losetup --version
if [ "$(id -u)" -ne 0 ]; then
  skip "loop devices need root"
fi

tmp=$(scratch_dir)
make_half_zero_raw "$tmp/src.raw" $((32 * 1024 * 1024)) 3
if ! dev=$(losetup -f --show -r "$tmp/src.raw"); then
  skip "losetup cannot attach a loop device here"
fi
cleanup_fn losetup -d "$dev"
test -b "$dev"

vhdtool convert "$dev" "$tmp/d.vhd"
check_reads_as "$tmp/d.vhd" "$tmp/src.raw"
check_zero_blocks_unallocated "$tmp/d.vhd" "$tmp/src.raw"
vhdtool convert -O fixed "$dev" "$tmp/f.vhd"
check_reads_as "$tmp/f.vhd" "$tmp/src.raw"

# A device holding a VHD is read as that VHD, not as its raw bytes.
dev2=$(losetup -f --show -r "$tmp/d.vhd")
cleanup_fn losetup -d "$dev2"
vhdtool convert -O fixed "$dev2" "$tmp/f2.vhd"
check_reads_as "$tmp/f2.vhd" "$tmp/src.raw"

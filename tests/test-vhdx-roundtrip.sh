#!/usr/bin/env bash
# Random writes (unaligned, across blocks, FUA, zeros) through the plugin
# to dynamic and fixed VHDX images, made by vhdtool and by qemu-img, read
# back equal to a raw reference through the plugin, after a reopen, and
# by qemu-img, which also checks the image clean; with both I/O backends.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdcopy --version
requires qemu-img --version

for format in vhdx qemu-vhdx; do
  for type in dynamic fixed; do
    ROUNDTRIP_FORMAT=$format roundtrip_both_backends $type $((80 * 1024 * 1024))
  done
done

#!/usr/bin/env bash
# Random writes through the plugin to a fresh fixed image read back equal
# to a raw reference, through the plugin and with qemu-img, with both I/O
# backends (see plugin-functions.sh).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdcopy --version
requires qemu-img --version

roundtrip_both_backends fixed $((64 * 1024 * 1024))

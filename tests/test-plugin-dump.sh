#!/usr/bin/env bash
# nbdkit vhd --dump-plugin reports the plugin's version and whether
# io_uring is in use, as key=value lines that scripts can test, and
# VHDKIT_IO=pread turns io_uring off.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin

out=$(nbdkit "$VHDKIT_PLUGIN" --dump-plugin)
echo "$out"
grep -Eqx 'vhd_version=[0-9]+\.[0-9]+\.[0-9]+' <<<"$out"
grep -Eqx 'vhd_io_uring=(yes|no)' <<<"$out"
grep -qx 'thread_model=parallel' <<<"$out"
grep -qx 'magic_config_key=file' <<<"$out"

out=$(VHDKIT_IO=pread nbdkit "$VHDKIT_PLUGIN" --dump-plugin)
grep -qx 'vhd_io_uring=no' <<<"$out"

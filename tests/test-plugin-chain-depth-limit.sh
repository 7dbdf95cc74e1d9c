#!/usr/bin/env bash
# max-chain-depth= may be at most VHD_MAX_CHAIN_DEPTH (the public limit in
# vhdkit.h): that value starts, one more is refused when nbdkit starts,
# whatever the image (a dynamic one here, which has no chain), with a
# message that names the limit.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version

limit=$(sed -n 's/^#define VHD_MAX_CHAIN_DEPTH  *\([0-9][0-9]*\)$/\1/p' \
          "$VHDKIT_SRCDIR/../lib/vhdkit.h")
test -n "$limit"

tmp=$(scratch_dir)
vhdtool create --dynamic 8M "$tmp/dynamic.vhd"

nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/dynamic.vhd" \
  max-chain-depth="$limit" --run true

if nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/dynamic.vhd" \
     max-chain-depth="$((limit + 1))" --run true 2> "$tmp/err"; then
  cat "$tmp/err"
  echo "$0: FAIL: nbdkit started with max-chain-depth=$((limit + 1))" >&2
  exit 1
fi
cat "$tmp/err"
grep -q "max-chain-depth must be from 1 to $limit" "$tmp/err"

#!/usr/bin/env bash
# A dynamic disk whose trailing footer is destroyed still opens through the
# footer copy at offset 0; one whose trailing footer is one byte short (some
# old writers wrote a 511-byte footer) still opens from that footer.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires python3 --version

tmp=$(scratch_dir)
cd "$tmp"
bytes=$((100 * 1024 * 1024))

vhdtool create --dynamic 100M good.vhd
vhdtool info --json good.vhd > good.json
test "$(json_field good.json footer-from-copy)" = false
uuid=$(json_field good.json uuid)

# The trailing footer overwritten with zeros.
cp good.vhd zeroed.vhd
size=$(stat -c %s zeroed.vhd)
dd if=/dev/zero of=zeroed.vhd bs=512 seek=$((size / 512 - 1)) count=1 \
   conv=notrunc status=none
test "$(stat -c %s zeroed.vhd)" -eq "$size"
vhdtool info --json zeroed.vhd > zeroed.json
cat zeroed.json
test "$(json_field zeroed.json footer-from-copy)" = true
test "$(json_field zeroed.json virtual-size)" = "$bytes"
test "$(json_field zeroed.json uuid)" = "$uuid"
echo "checked: zeroed trailing footer: opens from the copy at offset 0"

# The file one byte short: its last 511 bytes hold the footer less its
# final reserved (zero) byte.
cp good.vhd short.vhd
truncate -s -1 short.vhd
test "$(stat -c %s short.vhd)" -eq $((size - 1))
vhdtool info --json short.vhd > short.json
cat short.json
test "$(json_field short.json footer-from-copy)" = false
test "$(json_field short.json virtual-size)" = "$bytes"
test "$(json_field short.json uuid)" = "$uuid"
echo "checked: 511-byte trailing footer: opens from it, not from the copy"

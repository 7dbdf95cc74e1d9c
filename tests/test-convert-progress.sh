#!/usr/bin/env bash
# vhdtool convert -p draws a progress bar (percent, rate, time) on a
# terminal, and prints nothing at all when its output is not a terminal.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires script --version

tmp=$(scratch_dir)
make_half_zero_raw "$tmp/src.raw" $((64 * 1024 * 1024)) 4

# Not a terminal: no output on either stream.
vhdtool convert -p "$tmp/src.raw" "$tmp/a.vhd" > "$tmp/out" 2> "$tmp/err"
test ! -s "$tmp/out"
test ! -s "$tmp/err"

# A terminal (script(1) gives the command a pseudo-terminal).
script -qfec "vhdtool convert -p '$tmp/src.raw' '$tmp/b.vhd'" /dev/null \
  > "$tmp/tty"
tr '\r' '\n' < "$tmp/tty" | tail -3
grep -q '100.0%' "$tmp/tty"
grep -q 'MB/s' "$tmp/tty"
grep -Eq '[0-9]+:[0-9][0-9] total' "$tmp/tty"
vhdtool check "$tmp/b.vhd"

# create --source takes -p as well.
script -qfec "vhdtool create --source '$tmp/src.raw' -p 80M '$tmp/c.vhd'" \
  /dev/null > "$tmp/tty2"
grep -q '100.0%' "$tmp/tty2"

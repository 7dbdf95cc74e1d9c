#!/usr/bin/env bash
# Names that come from an image (the parent name, the parent locators)
# are untrusted text: vhdtool info's text output and every error message
# (vhdtool's, nbdkit's log) escape their control characters, so that an
# image cannot clear the screen ("\x1b[2J") or forge a line ("\nimage:
# /etc/shadow").  --json escapes them in JSON's way, as before.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires python3 --version

tmp=$(scratch_dir)
vhdtool create --dynamic 4M "$tmp/p.vhd"
vhdtool create --parent "$tmp/p.vhd" "$tmp/c.vhd"
evil=$'gone\x1b[2J\nimage: /etc/shadow'
python3 "$VHDKIT_SRCDIR/craft-vhd.py" "$tmp/c.vhd" --name "$evil" \
  --locator "W2ru:$evil" --locator "MacX:file:///$evil"
rm "$tmp/p.vhd"

# clean FILE: no raw ESC, no forged line; the escaped forms are there.
clean ()
{
  cat "$1"
  if grep -q $'\x1b' "$1"; then
    echo "$0: FAIL: $1 holds a raw escape character" >&2
    exit 1
  fi
  if grep -q '^image: /etc/shadow' "$1"; then
    echo "$0: FAIL: $1 holds a forged line" >&2
    exit 1
  fi
  grep -qF 'gone\x1b[2J\nimage: /etc/shadow' "$1"
}

vhdtool info "$tmp/c.vhd" > "$tmp/info.txt" 2>&1
clean "$tmp/info.txt"
# Both the parent name and the locators, and the missing-parent error.
test "$(grep -cF 'gone\x1b[2J\nimage: /etc/shadow' "$tmp/info.txt")" -ge 3
grep -q '^parent: not opened: .*tried' "$tmp/info.txt"

status=0
vhdtool check "$tmp/c.vhd" > "$tmp/check.txt" 2>&1 || status=$?
test $status -ne 0
clean "$tmp/check.txt"

if nbdkit -U - "$VHDKIT_PLUGIN" "$tmp/c.vhd" --run true 2> "$tmp/nbdkit.txt"
then
  echo "$0: FAIL: nbdkit served a child whose parent is missing" >&2
  exit 1
fi
clean "$tmp/nbdkit.txt"

# --json keeps JSON's escapes (and parses).
vhdtool info --json "$tmp/c.vhd" > "$tmp/info.json"
python3 -c 'import json, sys
info = json.load (open (sys.argv[1]))
assert info["parent-name"] == sys.argv[2], info["parent-name"]' \
  "$tmp/info.json" "$evil"
if grep -q $'\x1b' "$tmp/info.json"; then
  echo "$0: FAIL: --json holds a raw escape character" >&2
  exit 1
fi

# Bytes that are not UTF-8 in a path are escaped too.
cp "$tmp/c.vhd" "$tmp/c"$'\xff'".vhd"
vhdtool info "$tmp/c"$'\xff'".vhd" > "$tmp/info2.txt" 2>&1
cat "$tmp/info2.txt"
grep -qF 'c\xff.vhd' "$tmp/info2.txt"

#!/usr/bin/env bash
# A chain folder moved (mv) to another path still opens, through the
# relative (W2ru) locators, and reads the same; removing a parent gives a
# clear error that names the parent and the places tried, each with the
# locators that led there listed once (vhdtool check: "cannot check", not
# "corrupt"); a parent
# replaced by another image of the same size but another UUID is refused
# with a message naming both UUIDs.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires sha256sum --version
requires nbdinfo --version
requires_nbdsh

tmp=$(scratch_dir)
old="$tmp/first/place/chain"
mkdir -p "$old"

# A base with data, a child and a grandchild, each written while on top.
cat > "$tmp/write.py" <<'EOF'
import os
level = int(os.environ["LEVEL"])
for i in range(4):
    off = (level * 3 + i * 5) * 1024 * 1024 + level * 4096 + 123
    h.pwrite(bytes([0x40 + level]) * (70000 + level), off)
h.flush()
EOF
vhdtool create --dynamic 32M "$old/base.vhd"
LEVEL=0 nbdsh_script "$old/base.vhd" "$tmp/write.py"
vhdtool create --parent "$old/base.vhd" "$old/mid.vhd"
LEVEL=1 nbdsh_script "$old/mid.vhd" "$tmp/write.py"
vhdtool create --parent "$old/mid.vhd" "$old/top.vhd"
LEVEL=2 nbdsh_script "$old/top.vhd" "$tmp/write.py"
hash=$(serve_sha256 "$old/top.vhd")
mid_hash=$(serve_sha256 "$old/mid.vhd")

echo "check: the folder moved elsewhere still opens, by the W2ru locators," \
     "and reads the same"
new="$tmp/second/elsewhere/moved"
mkdir -p "$(dirname "$new")"
mv "$old" "$new"
rmdir "$tmp/first/place" "$tmp/first"
test "$(serve_sha256 "$new/top.vhd")" = "$hash"
test "$(serve_sha256 "$new/mid.vhd")" = "$mid_hash"
vhdtool info --json "$new/top.vhd" > "$tmp/info.json"
cat "$tmp/info.json"
test "$(json_field "$tmp/info.json" parent-found-by)" = "W2ru locator"
test "$(json_field "$tmp/info.json" parent.parent-found-by)" = "W2ru locator"
test "$(json_field "$tmp/info.json" parent.path)" -ef "$new/mid.vhd"
test "$(json_field "$tmp/info.json" parent.parent.path)" -ef "$new/base.vhd"
# ... and it is writable there (a write lands in the top only).
mid_file_hash=$(sha256sum < "$new/mid.vhd")
LEVEL=3 nbdsh_script "$new/top.vhd" "$tmp/write.py"
test "$(sha256sum < "$new/mid.vhd")" = "$mid_file_hash"
hash=$(serve_sha256 "$new/top.vhd")

echo "check: with the parent removed, serving fails and says which parent" \
     "it looked for and where"
mkdir "$tmp/stash"
mv "$new/mid.vhd" "$tmp/stash/"
serve_must_fail "$tmp/missing.err" "$new/top.vhd"
# the parent's name, the child, and the place where W2ru pointed
must_contain "$tmp/missing.err" mid.vhd top.vhd "$new/mid.vhd" \
  "W2ru" "tried"
# the W2ku locator (the old absolute path) was tried too
must_contain "$tmp/missing.err" "$old/mid.vhd"
# each place once, with each locator that led to it once
ways_listed_once "$tmp/missing.err"

echo "check: vhdtool check says it cannot check (exit 1), not that the" \
     "image is corrupt (4); with the parent's folder given, it is clean"
status=0
vhdtool check "$new/top.vhd" > "$tmp/check.out" 2> "$tmp/check.err" ||
  status=$?
cat "$tmp/check.out" "$tmp/check.err"
test "$status" -eq 1
must_contain "$tmp/check.err" "cannot check: parent not found" \
  "$new/mid.vhd"
if grep -F corrupt "$tmp/check.out" "$tmp/check.err"; then
  echo "$0: FAIL: a missing parent is reported as corruption" >&2
  exit 1
fi
vhdtool check --parent-dir "$tmp/stash" "$new/top.vhd" > "$tmp/check.out"
must_contain "$tmp/check.out" "no errors found"

echo "check: a way that is part of another's description is still listed"
# Two W2ku locators: a Windows path, tried by its file name only, then
# that file name alone; both lead to $new/mid.vhd, and so does the parent
# name.  "W2ku locator" is a distinct way from "W2ku locator, by file
# name", not a repeat of it.
cp "$new/top.vhd" "$new/crafted.vhd"
python3 "$VHDKIT_SRCDIR/craft-vhd.py" "$new/crafted.vhd" \
  --locator 'W2ku:C:\old\mid.vhd' --locator 'W2ku:mid.vhd'
serve_must_fail "$tmp/ways.err" "$new/crafted.vhd"
ways_listed_once "$tmp/ways.err"
must_contain "$tmp/ways.err" \
  "$new/mid.vhd (W2ku locator, by file name and W2ku locator and parent name)"
rm "$new/crafted.vhd"

vhdtool info --json "$new/top.vhd" > "$tmp/missing.json"
cat "$tmp/missing.json"
json_field "$tmp/missing.json" parent-error > "$tmp/missing.parent-error"
must_contain "$tmp/missing.parent-error" mid.vhd "$new/mid.vhd"
if json_field "$tmp/missing.json" parent 2>/dev/null; then
  echo "$0: FAIL: vhdtool info shows a parent that is not there" >&2
  exit 1
fi

echo "check: a parent with the right size but another UUID is refused," \
     "naming both UUIDs"
want_uuid=$(json_field "$tmp/missing.json" parent-uuid)
vhdtool create --dynamic 32M "$new/mid.vhd"
vhdtool info --json "$new/mid.vhd" > "$tmp/impostor.json"
impostor_uuid=$(json_field "$tmp/impostor.json" uuid)
test "$want_uuid" != "$impostor_uuid"
serve_must_fail "$tmp/uuid.err" "$new/top.vhd"
must_contain "$tmp/uuid.err" "$want_uuid" "$impostor_uuid" "$new/mid.vhd"
vhdtool info --json "$new/top.vhd" > "$tmp/uuid.json"
json_field "$tmp/uuid.json" parent-error > "$tmp/uuid.parent-error"
must_contain "$tmp/uuid.parent-error" "$want_uuid" "$impostor_uuid"

echo "check: ignore-parent-id-mismatch=true lets the operator open it anyway"
nbdkit -U - "$VHDKIT_PLUGIN" file="$new/top.vhd" readonly=true \
  ignore-parent-id-mismatch=true --run 'nbdinfo --size "$uri"' \
  > "$tmp/ignored.size"
test "$(cat "$tmp/ignored.size")" -eq $((32 * 1024 * 1024))

echo "check: a parent with the right UUID but another size is refused"
rm "$new/mid.vhd"
vhdtool create --dynamic 64M --uuid "$want_uuid" "$new/mid.vhd"
serve_must_fail "$tmp/size.err" "$new/top.vhd"
must_contain "$tmp/size.err" "$new/mid.vhd" size \
  $((32 * 1024 * 1024)) $((64 * 1024 * 1024))

echo "check: the real parent put back, the chain reads as before"
mv -f "$tmp/stash/mid.vhd" "$new/mid.vhd"
test "$(serve_sha256 "$new/top.vhd")" = "$hash"

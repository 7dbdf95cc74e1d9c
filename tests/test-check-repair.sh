#!/usr/bin/env bash
# vhdtool check [--repair]: its exit codes (0 clean, 3 repaired, 4 corrupt,
# 5 leaks or a lost trailing footer only) and messages on a clean image, a lost trailing
# footer, a block that a crash leaked at the end, overlapping BAT entries
# (which --repair must leave alone), footer copies that disagree (never a
# silent shrink), a report capped at 100 problems of a kind, and a child
# whose parent is missing (1: it cannot be checked).
# After each repair the data reads back as before, through qemu-img.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires qemu-img --version
requires python3 --version
requires sha256sum --version

tmp=$(scratch_dir)
cd "$tmp"

# check_exit WANT OUT vhdtool check ARGS...: run it, keep its output in OUT
# (and show it), and insist on exit status WANT.
check_exit ()
{
  local want=$1 out=$2 status=0
  shift 2
  "$@" > "$out" 2>&1 || status=$?
  cat "$out"
  if [ "$status" -ne "$want" ]; then
    echo "$0: '$*' exited $status, expected $want" >&2
    exit 1
  fi
}

# must_say FILE REGEX: FILE holds a line matching REGEX (grep -E).
must_say ()
{
  if ! grep -Eq -- "$2" "$1"; then
    echo "$0: $1 does not say /$2/:" >&2
    cat "$1" >&2
    exit 1
  fi
}

# raw_of IMAGE OUT: the image's data as qemu-img (an independent reader)
# reads it.
raw_of ()
{
  rm -f "$2"
  qemu-img convert -f vpc -O raw "$1" "$2"
}

# bat_entry IMAGE I [SECTOR]: print BAT entry I (a sector number, as
# decimal), or with SECTOR set it; the layout comes from the spec (footer
# copy at 0 -> data_offset -> table_offset), not from vhdkit.
bat_entry ()
{
  python3 - "$@" <<'PY'
import struct, sys
path, i = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    footer = f.read(512)
    assert footer[:8] == b"conectix", "no footer copy"
    (header_at,) = struct.unpack_from(">Q", footer, 16)
    f.seek(header_at)
    header = f.read(1024)
    assert header[:8] == b"cxsparse", "no dynamic header"
    (table,) = struct.unpack_from(">Q", header, 16)
    f.seek(table + 4 * i)
    if len(sys.argv) > 3:
        f.write(struct.pack(">I", int(sys.argv[3])))
    else:
        print(struct.unpack(">I", f.read(4))[0])
PY
}

# A 16 MiB dynamic image (2 MiB blocks) with data in blocks 0, 1, 3 and 7.
python3 - <<'PY'
with open("data.raw", "wb") as f:
    f.truncate(16 << 20)
    for block, length in ((0, 2 << 20), (1, 12345), (3, 1 << 20), (7, 512)):
        at = block * (2 << 20) + (block * 4096 if length < (2 << 20) else 0)
        f.seek(at)
        f.write(bytes((at + k * 7 + block) % 251 for k in range(length)))
PY
vhdtool create --source data.raw --dynamic --block-size 2M clean.vhd
raw_of clean.vhd clean.raw
cmp data.raw clean.raw
size=$(stat -c %s clean.vhd)

echo "check: a clean image checks clean (exit 0)"
check_exit 0 out vhdtool check clean.vhd
must_say out 'no errors found'
echo "check: --repair on a clean image changes nothing (exit 0)"
sha_before=$(sha256sum < clean.vhd)
check_exit 0 out vhdtool check --repair clean.vhd
test "$(sha256sum < clean.vhd)" = "$sha_before"

echo "check: trailing footer zeroed, the copy intact: recoverable (5)"
cp clean.vhd zeroed.vhd
dd if=/dev/zero of=zeroed.vhd bs=512 seek=$((size / 512 - 1)) count=1 \
   conv=notrunc status=none
check_exit 5 out vhdtool check zeroed.vhd
must_say out 'recoverable: trailing footer'
echo "check: --repair restores it from the copy (3) and says so"
check_exit 3 out vhdtool check --repair zeroed.vhd
must_say out 'repaired: restored the trailing footer'
check_exit 0 out vhdtool check zeroed.vhd
test "$(stat -c %s zeroed.vhd)" -eq "$size"
cmp clean.vhd zeroed.vhd
raw_of zeroed.vhd zeroed.raw
cmp data.raw zeroed.raw

echo "check: a leaked block at the end (an allocation a crash interrupted)"
cp clean.vhd leaked.vhd
tail -c 512 clean.vhd > footer.bin
truncate -s $((size - 512)) leaked.vhd
head -c $((2 * 1024 * 1024 + 512)) /dev/urandom >> leaked.vhd
cat footer.bin >> leaked.vhd
leaked_size=$(stat -c %s leaked.vhd)
test "$leaked_size" -eq $((size + 2 * 1024 * 1024 + 512))
check_exit 5 out vhdtool check leaked.vhd
must_say out "leak: 2097664 bytes between offset $((size - 512))"
must_say out 'bytes leaked'
raw_of leaked.vhd leaked.raw
cmp data.raw leaked.raw
echo "check: --repair truncates it (3), the file shrinks back"
check_exit 3 out vhdtool check --repair leaked.vhd
must_say out 'repaired: truncated 2097664 leaked bytes'
check_exit 0 out vhdtool check leaked.vhd
test "$(stat -c %s leaked.vhd)" -eq "$size"
cmp clean.vhd leaked.vhd
raw_of leaked.vhd leaked.raw
cmp data.raw leaked.raw

echo "check: overlapping BAT entries: corrupt (4), naming both entries"
cp clean.vhd overlap.vhd
b0=$(bat_entry overlap.vhd 0)
test "$(bat_entry overlap.vhd 5)" -eq $((0xFFFFFFFF))
bat_entry overlap.vhd 5 $((b0 + 8))
check_exit 4 out vhdtool check overlap.vhd
must_say out 'corrupt: BAT entries 0 and 5: .* overlap'
echo "check: --repair leaves them (4) and changes nothing"
sha_before=$(sha256sum < overlap.vhd)
check_exit 4 out vhdtool check --repair overlap.vhd
must_say out 'corrupt: BAT entries 0 and 5'
if grep -q 'repaired:' out; then
  echo "$0: --repair claims a repair of overlapping blocks" >&2
  exit 1
fi
test "$(sha256sum < overlap.vhd)" = "$sha_before"

echo "check: footer copies that disagree on the size: corrupt (4), naming" \
     "both sizes"
cp clean.vhd disagree.vhd
python3 - disagree.vhd <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    footer = bytearray(f.read(512))
    struct.pack_into(">Q", footer, 48, 8 << 20)      # current_size 8 MiB
    struct.pack_into(">I", footer, 64, 0)
    struct.pack_into(">I", footer, 64, (~sum(footer)) & 0xFFFFFFFF)
    f.seek(0)
    f.write(footer)
PY
check_exit 4 out vhdtool check disagree.vhd
must_say out 'corrupt: .*current_size 8388608 disagrees with the trailing footer.s 16777216'
if vhdtool info disagree.vhd > info.out 2>&1; then
  cat info.out
  echo "$0: vhdtool info served footer copies that disagree" >&2
  exit 1
fi
must_say info.out 'current_size 8388608 disagrees'
echo "check: the trailing footer lost too: corrupt (4), not recoverable:" \
     "the smaller copy would drop block 7; --repair changes nothing"
dd if=/dev/zero of=disagree.vhd bs=512 seek=$((size / 512 - 1)) count=1 \
   conv=notrunc status=none
sha_before=$(sha256sum < disagree.vhd)
check_exit 4 out vhdtool check --repair disagree.vhd
must_say out 'corrupt: BAT entry 7 holds a block past current_size 8388608'
if grep -q 'repaired:' out; then
  echo "$0: --repair shrank the disk to the copy's size" >&2
  exit 1
fi
test "$(sha256sum < disagree.vhd)" = "$sha_before"

echo "check: thousands of bad BAT entries: the report is capped, with a" \
     "count of what it left out"
cp clean.vhd many.vhd
python3 - many.vhd <<'PY'
import struct, sys
entries = 4096
with open(sys.argv[1], "r+b") as f:
    footer = f.read(512)
    (header_at,) = struct.unpack_from(">Q", footer, 16)
    f.seek(header_at)
    header = bytearray(f.read(1024))
    f.seek(0, 2)
    end = f.tell() - 512
    struct.pack_into(">Q", header, 16, end)           # the BAT, moved
    struct.pack_into(">I", header, 28, entries)
    struct.pack_into(">I", header, 36, 0)
    struct.pack_into(">I", header, 36, (~sum(header)) & 0xFFFFFFFF)
    f.seek(header_at)
    f.write(header)
    f.seek(end)
    f.write(bytes(4 * entries))                       # every entry 0
    f.write(footer)
PY
check_exit 4 out vhdtool check many.vhd
test "$(grep -c 'corrupt: .*BAT: entry' out)" -eq 100
must_say out 'and 3996 more problems of this kind .* not shown'
must_say out '4096 corruption\(s\) found'
test "$(wc -l < out)" -lt 110

echo "check: a child whose parent is missing cannot be checked (1), which" \
     "is not corruption (4); the message names the parent"
mkdir family
vhdtool create --dynamic --block-size 2M 16M family/base.vhd
vhdtool create --parent family/base.vhd family/child.vhd
check_exit 0 out vhdtool check family/child.vhd
mv family/base.vhd family/moved-away.vhd
check_exit 1 out vhdtool check family/child.vhd
must_say out 'child.vhd: cannot check: parent not found: .*child.vhd: parent .*base.vhd'
if grep corrupt out; then exit 1; fi
echo "check: --repair cannot bring a parent back (1) and changes nothing"
sha_before=$(sha256sum < family/child.vhd)
check_exit 1 out vhdtool check --repair family/child.vhd
must_say out 'cannot check: parent not found'
test "$(sha256sum < family/child.vhd)" = "$sha_before"

echo "check: could not check (1) and usage (2)"
check_exit 1 out vhdtool check no-such.vhd
must_say out 'no-such.vhd'
check_exit 2 out vhdtool check
check_exit 2 out vhdtool check clean.vhd extra.vhd

#!/usr/bin/env bash
# Trim and zero of whole blocks of a dynamic VHDX, through the plugin,
# become BAT states: a trimmed block UNMAPPED, a block zeroed with
# may_trim ZERO, both without file space; a zero with NO_HOLE and a trim
# of part of a block keep their block.  Every reader agrees: the
# plugin's block status and qemu-img map over NBD (holes), vhdtool info
# (the state counts), qemu-img (map of the file, check, convert) and an
# independent reader written from the spec (vhdx-spec-read.py); the
# file's allocated size shrinks; vhdtool check stays clean.  Then a write
# into a released block gets a new block at the end of the file.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires qemu-img --version
requires python3 --version

tmp=$(scratch_dir)
img=$tmp/disk.vhdx
ref=$tmp/reference.raw
B=$((2 * 1024 * 1024))
vhdtool create --dynamic --block-size 2M 32M "$img"
truncate -s 32M "$ref"

cat > "$tmp/trim.py" <<'PY'
import os
import random

B = 2 * 1024 * 1024
img = os.environ["IMG"]
rng = random.Random(11)
ref = open(os.environ["REF"], "r+b")

def allocated():
    return os.stat(img).st_blocks * 512

def write(offset, data):
    h.pwrite(data, offset)
    ref.seek(offset)
    ref.write(data)

def zeroed(offset, count):
    ref.seek(offset)
    ref.write(bytes(count))

def status(block):
    # The block's extents, merged: [(length, flags), ...].
    # (A server may report past the range asked: cut at the block's end.)
    runs = []
    end = (block + 1) * B
    def cb(metacontext, offset, entries, err):
        if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
            return
        for i in range(0, len(entries), 2):
            length = min(entries[i], end - offset)
            if length <= 0:
                break
            if runs and runs[-1][1] == entries[i + 1]:
                runs[-1][0] += length
            else:
                runs.append([length, entries[i + 1]])
            offset += length
    pos = block * B
    while pos < end:
        h.block_status(end - pos, pos, cb)
        covered = block * B + sum(r[0] for r in runs)
        assert covered > pos, "no progress"
        pos = covered
    return [tuple(r) for r in runs]

HOLE = nbd.STATE_HOLE | nbd.STATE_ZERO

for block in [1, 3, 5, 6, 8]:
    write(block * B, rng.randbytes(B))
h.flush()
for block in [1, 3, 5, 6, 8]:
    assert status(block) == [(B, 0)], (block, status(block))
before = allocated()

h.trim(B, 1 * B)                                    # UNMAPPED
zeroed(1 * B, B)
h.zero(B, 3 * B)                                    # may_trim: ZERO
zeroed(3 * B, B)
h.zero(B, 5 * B, nbd.CMD_FLAG_NO_HOLE)              # keeps its block
zeroed(5 * B, B)
h.trim(B // 2, 6 * B + 65536)                       # part: keeps it
zeroed(6 * B + 65536, B // 2)
h.flush()
after = allocated()
print("allocated %d -> %d bytes" % (before, after))
assert after <= before - 2 * B, (before, after)

assert status(1) == [(B, HOLE)], status(1)
assert status(3) == [(B, HOLE)], status(3)
assert status(5) == [(B, 0)], status(5)
assert status(6) == [(B, 0)], status(6)
assert status(8) == [(B, 0)], status(8)
ref.seek(0)
assert h.pread(h.get_size(), 0) == ref.read(), "reads differ"
ref.close()
PY

IMG=$img REF=$ref tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh --base-allocation -u "$uri" -c - < "$tmp/trim.py"'

# What the file says, to every reader.
vhdtool info --json "$img" > "$tmp/info.json"
j () { json_field "$tmp/info.json" "vhdx.block-states.$1"; }
test "$(j unmapped)" = 1
test "$(j zero)" = 1
test "$(j fully-present)" = 3
test "$(j not-present)" = 11

vhdtool check "$img" > "$tmp/check.out"
cat "$tmp/check.out"
grep -q "no errors found (dynamic, 3 blocks allocated)" "$tmp/check.out"

qemu-img check -f vhdx "$img"
qemu-img convert -f vhdx -O raw "$img" "$tmp/qemu.raw"
cmp "$ref" "$tmp/qemu.raw"
python3 "$VHDKIT_SRCDIR/vhdx-spec-read.py" "$img" "$tmp/spec.raw"
cmp "$ref" "$tmp/spec.raw"

# qemu-img map of the file: the released blocks are not data.  qemu's
# vhdx driver (7.2) has no block status and maps the whole disk as data,
# even block 0 that was never written: then there is nothing to compare,
# and the map over NBD below is qemu's view.
qemu-img map -f vhdx --output=json "$img" > "$tmp/map.json"
cat "$tmp/map.json"
python3 - "$tmp/map.json" "$B" <<'PY'
import json, sys
B = int(sys.argv[2])
m = json.load(open(sys.argv[1]))
def covering(offset):
    for e in m:
        if e["start"] <= offset < e["start"] + e["length"]:
            return e
    sys.exit("no map entry at %d" % offset)
if covering(0)["data"]:
    print("qemu-img maps the never-written block 0 as data: this qemu's"
          " vhdx driver reports no block status; map of the file skipped")
    sys.exit(0)
for block in (1, 3):
    for off in (block * B, block * B + B - 1):
        e = covering(off)
        assert e["zero"] and not e["data"], (block, e)
for block in (5, 6, 8):
    e = covering(block * B)
    assert e["data"], (block, e)
PY

# qemu-img map over NBD: the plugin's block status as qemu reads it.
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
  --run 'qemu-img map -f raw --output=json "$uri"' > "$tmp/nbdmap.json"
cat "$tmp/nbdmap.json"
python3 - "$tmp/nbdmap.json" "$B" <<'PY'
import json, sys
B = int(sys.argv[2])
m = json.load(open(sys.argv[1]))
for block, hole in ((0, True), (1, True), (3, True), (5, False), (8, False)):
    e = [e for e in m if e["start"] <= block * B < e["start"] + e["length"]]
    assert len(e) == 1, (block, e)
    e = e[0]
    assert e["start"] + e["length"] >= (block + 1) * B, (block, e)
    assert e["zero"] == hole and e["data"] != hole, (block, e)
PY

# A write into the trimmed block: a new block at the end of the file, and
# the block is data again.
size_before=$(stat -c %s "$img")
cat > "$tmp/rewrite.py" <<'PY'
import os
B = 2 * 1024 * 1024
data = bytes(range(256)) * (B // 256)
h.pwrite(data, 1 * B)
h.flush()
assert h.pread(B, 1 * B) == data
with open(os.environ["REF"], "r+b") as ref:
    ref.seek(1 * B)
    ref.write(data)
PY
REF=$ref tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh -u "$uri" -c - < "$tmp/rewrite.py"'
size_after=$(stat -c %s "$img")
test "$size_after" -eq $((size_before + B))

vhdtool info --json "$img" > "$tmp/info.json"
test "$(j unmapped)" = 0
test "$(j zero)" = 1
test "$(j fully-present)" = 4
vhdtool check "$img"
qemu-img check -f vhdx "$img"
qemu-img convert -f vhdx -O raw "$img" "$tmp/qemu.raw"
cmp "$ref" "$tmp/qemu.raw"

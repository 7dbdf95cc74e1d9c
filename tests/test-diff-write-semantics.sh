#!/usr/bin/env bash
# What writes, zero and trim mean on a differencing child, over a base
# filled with known (random, seeded) bytes in its first half and holes in
# its second half:
# - a 1-byte write at an unaligned offset in a block the child has not
#   allocated leaves the rest of that sector, and of that block, reading
#   the parent's bytes;
# - zero on the child reads zeros (not the parent), aligned or not;
# - trim on the child changes nothing that a reader sees (the engine
#   treats trim as a no-op on a differencing disk: clearing bits would
#   expose the parent);
# - nbdinfo --map on the child reports data where the base has data, and
#   holes only where the whole chain has none.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires nbdinfo --version
requires cmp --version
requires_nbdsh

tmp=$(scratch_dir)
MiB=$((1024 * 1024))

# The base: 16 MiB, blocks 0-3 (8 MiB) of random bytes, blocks 4-7 never
# written.
vhdtool create --dynamic 16M "$tmp/base.vhd"
cat > "$tmp/fill.py" <<'EOF'
import os, random
rng = random.Random(8)
data = rng.randbytes(8 * 1024 * 1024)
h.pwrite(data, 0)
h.flush()
with open(os.environ["MODEL"], "wb") as f:
    f.write(data)
    f.truncate(h.get_size())
EOF
MODEL="$tmp/model.raw" nbdsh_script "$tmp/base.vhd" "$tmp/fill.py"
serve_copy "$tmp/base.vhd" "$tmp/base.raw"
cmp "$tmp/model.raw" "$tmp/base.raw"
base_file_hash=$(sha256sum < "$tmp/base.vhd")

vhdtool create --parent "$tmp/base.vhd" "$tmp/child.vhd"

# map_check IMG: nbdinfo --map on IMG (read-only) against the rules for
# this layout: [0, 8 MiB) has data (the base's), blocks 6 and 7 are
# holes reading as zeros (nothing anywhere in the chain).
map_check ()
{
  nbdkit -U - "$VHDKIT_PLUGIN" file="$1" readonly=true \
    --run 'nbdinfo --map --json "$uri"' > "$tmp/map.json"
  cat "$tmp/map.json"
  python3 - "$tmp/map.json" <<'EOF'
import json, sys
MiB = 1024 * 1024
extents = json.load(open(sys.argv[1]))
pos = 0
for e in extents:
    assert e["offset"] == pos, "extents are not contiguous at %d" % pos
    pos += e["length"]
assert pos == 16 * MiB, "extents cover %d bytes, not 16 MiB" % pos
def types(lo, hi):
    return {e["type"] for e in extents
            if e["offset"] < hi and e["offset"] + e["length"] > lo}
assert types(0, 8 * MiB) == {0}, \
    "[0, 8 MiB) (the base's data) is not all data: %s" % types(0, 8 * MiB)
assert types(12 * MiB, 16 * MiB) == {3}, \
    "[12, 16 MiB) (no data anywhere) is not hole,zero: %s" % \
    types(12 * MiB, 16 * MiB)
print("map: data where the base has data, holes where nothing has")
EOF
}

echo "check: a fresh child maps like its base"
map_check "$tmp/child.vhd"

cat > "$tmp/semantics.py" <<'EOF'
import os
MiB = 1024 * 1024
B = 2 * MiB
size = h.get_size()
model = bytearray(open(os.environ["MODEL"], "rb").read())
assert len(model) == size

def check(lo, hi, what):
    lo, hi = max(0, lo), min(size, hi)
    got = h.pread(hi - lo, lo)
    if got != model[lo:hi]:
        first = next(i for i in range(hi - lo) if got[i] != model[lo + i])
        raise AssertionError("%s: byte %d differs (got %02x, want %02x)" %
                             (what, lo + first, got[first],
                              model[lo + first]))

def write(off, data, what):
    h.pwrite(data, off)
    model[off:off + len(data)] = data
    check(off, off + len(data), what)

def zero(off, n, what):
    h.zero(n, off)
    model[off:off + n] = bytes(n)
    assert h.pread(n, off) == bytes(n), what + ": does not read zeros"

# 1. One byte at an unaligned offset in block 1, which the child has not
#    allocated: the rest of its sector and of block 1 read the parent.
off = B + 1000 + 3
assert model[off] != 0xee
write(off, b"\xee", "1-byte write")
check(off // 512 * 512, off // 512 * 512 + 512, "the rest of that sector")
check(B, 2 * B, "the rest of that block")
check(0, B, "block 0, untouched")
check(2 * B, 3 * B, "block 2, untouched")
print("1-byte write: the rest of the sector and block read the parent")

# The same over the base's holes (block 4): the rest reads zeros.
write(4 * B + 7777, b"\x01\x02\x03", "3 bytes over a hole")
check(4 * B, 5 * B, "block 4")

# Child data in block 0 that trim must not take away.
write(64 * 1024, b"\x11" * 4096, "child data in block 0")

# 2. Zero reads zeros, not the parent: aligned in an allocated child
#    block, unaligned in an unallocated one, across a block boundary, a
#    whole unallocated block, and over the base's holes.
zero(B + MiB, 64 * 1024, "aligned zero in block 1")
zero(2 * B + 77, 1000, "unaligned zero in block 2")
zero(4 * B - 700, 1400, "zero across blocks 3 and 4")
zero(3 * B, 256 * 1024, "zero at the start of block 3")
zero(5 * B, B, "zero of block 5 (a hole in the base)")
check(0, size, "after zero")
print("zero: reads zeros, and nothing around it changed")

# 3. Trim changes nothing a reader sees: over child data, parent data,
#    unaligned, a whole unallocated block, and the whole disk.
if not h.can_trim():
    raise AssertionError("the plugin does not offer trim")
h.trim(60000, 50000)                    # child data and parent data
h.trim(B, 3 * B)                        # block 3 (partly zeroed)
h.trim(1234, 2 * B + 4321)              # unaligned
h.trim(size, 0)                         # everything
h.flush()
check(0, size, "after trim")
print("trim: nothing changed")

with open(os.environ["MODEL"], "wb") as f:
    f.write(model)
EOF

echo "check: write, zero and trim on the child"
MODEL="$tmp/model.raw" nbdsh_script "$tmp/child.vhd" "$tmp/semantics.py"

echo "check: served again, the child reads exactly the model"
serve_copy "$tmp/child.vhd" "$tmp/child.raw"
cmp "$tmp/model.raw" "$tmp/child.raw"

echo "check: the base is unchanged"
test "$(sha256sum < "$tmp/base.vhd")" = "$base_file_hash"

echo "check: after the writes, the child still maps the base's data as data"
map_check "$tmp/child.vhd"

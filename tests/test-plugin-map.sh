#!/usr/bin/env bash
# nbdinfo --map on a dynamic disk with a byte written into blocks 0, 3 and
# 7 shows data only in those blocks (around the byte written) and every
# other block as hole,zero.  The engine may report data for the whole
# allocated block or for the written sectors only, so the check is: every
# data extent lies inside a written block, each written byte is inside a
# data extent, and the extents cover the disk exactly.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdinfo --version

tmp=$(scratch_dir)
img=$tmp/disk.vhd
vhdtool create --dynamic 64M "$img"

nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh -u "$uri" -c "
B = 2 * 1024 * 1024
h.pwrite(b\"\\x01\", 0 * B)
h.pwrite(b\"\\x03\", 3 * B + 1000)
h.pwrite(b\"\\x07\", 8 * B - 1)
h.flush()
"'

# The map of the image as written, read by a fresh server.
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
  --run 'nbdinfo --map --json "$uri"' > "$tmp/map.json"
cat "$tmp/map.json"

python3 - "$tmp/map.json" <<'PY'
import json
import sys

B = 2 * 1024 * 1024
size = 64 * 1024 * 1024
written = {0: 0, 3: 3 * B + 1000, 7: 8 * B - 1}   # block -> byte written

with open(sys.argv[1]) as f:
    extents = json.load(f)

end = 0
for e in extents:
    offset, length, type_ = e["offset"], e["length"], e["type"]
    assert offset == end, "gap or overlap at %d" % offset
    assert length > 0
    end = offset + length
    if type_ == 3:                      # hole,zero
        assert e["description"] == "hole,zero", e
        for byte in written.values():
            assert not offset <= byte < end, \
                "byte %d written but inside hole %r" % (byte, e)
    else:
        assert type_ == 0, "unexpected extent type %r" % e
        first, last = offset // B, (end - 1) // B
        for block in range(first, last + 1):
            assert block in written, "data in unwritten block %d: %r" % (block, e)
assert end == size, "extents end at %d, not %d" % (end, size)
print("map ok: %d extents" % len(extents))
PY

#!/usr/bin/env bash
# One flush of a differencing VHDX that sets bits in many sector bitmap
# pages: 4 KiB writes into 150 places 17 MiB apart (each 4 KiB page of a
# sector bitmap block covers 16 MiB of disk, so each place has a page of
# its own) and 4 MiB past each (another block, mostly in the same page,
# which must be found again), with no flush between them, then one
# flush.  The driver finds
# a pending page by its offset through a table that grows as pages come
# (write.c), and the flush is then more pages than one log entry holds.
# After a reopen, each place reads as the model says (the child's 4 KiB
# inside the parent's 64 KiB), through the plugin and through libvhdi
# (python3-libvhdi, handed the parent), and vhdtool check finds the child
# clean.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires python3 --version
requires_nbdsh
requires python3 -c 'import pyvhdi'

tmp=$(scratch_dir)
vhdtool create --dynamic --block-size 2M 3G "$tmp/base.vhdx"
vhdtool info "$tmp/base.vhdx"

cat > "$tmp/places.py" <<'PY'
import os
MiB = 1024 * 1024
PLACES = [i * 17 * MiB + (i % 7) * 8192 for i in range(150)]
def parent_data(i):
    return bytes([(i * 31 + 7) & 0xff]) * (64 * 1024)
def child_data(i):
    return bytes([(i * 17 + 200) & 0xff, i & 0xff]) * 2048
CHILD_AT = 16 * 1024            # inside each place's 64 KiB
SECOND = 4 * MiB                # a second block, past each place
def expected_second(i):
    p = bytearray(64 * 1024)
    p[CHILD_AT:CHILD_AT + 4096] = child_data(i + 1000)
    return bytes(p)
def expected(i):
    p = bytearray(parent_data(i))
    p[CHILD_AT:CHILD_AT + 4096] = child_data(i)
    return bytes(p)
PY

cat > "$tmp/fill-parent.py" <<'PY'
import os, sys
sys.path.insert(0, os.environ["TMPDIR_PLACES"])
from places import *
for i, off in enumerate(PLACES):
    h.pwrite(parent_data(i), off)
h.flush()
PY

cat > "$tmp/write-child.py" <<'PY'
import os, sys
sys.path.insert(0, os.environ["TMPDIR_PLACES"])
from places import *
for i, off in enumerate(PLACES):
    h.pwrite(child_data(i), off + CHILD_AT)
for i, off in enumerate(PLACES):
    h.pwrite(child_data(i + 1000), off + SECOND + CHILD_AT)
for i, off in enumerate(PLACES):
    assert h.pread(64 * 1024, off) == expected(i), "place %d before the flush" % i
    assert h.pread(64 * 1024, off + SECOND) == expected_second(i), \
        "second place %d before the flush" % i
h.flush()
PY

cat > "$tmp/read-child.py" <<'PY'
import os, sys
sys.path.insert(0, os.environ["TMPDIR_PLACES"])
from places import *
for i, off in enumerate(PLACES):
    got = h.pread(64 * 1024, off)
    assert got == expected(i), "place %d at %d after a reopen" % (i, off)
    assert h.pread(64 * 1024, off + SECOND) == expected_second(i), \
        "second place %d after a reopen" % i
    # Around the place, the parent's zeros.
    assert h.pread(4096, off + 64 * 1024) == bytes(4096), "after place %d" % i
print("plugin: %d places read as the model" % len(PLACES))
PY

export TMPDIR_PLACES=$tmp
nbdsh_script "$tmp/base.vhdx" "$tmp/fill-parent.py"
vhdtool create --parent "$tmp/base.vhdx" "$tmp/child.avhdx"
sha256sum "$tmp/base.vhdx" > "$tmp/base.sha"
nbdsh_script "$tmp/child.avhdx" "$tmp/write-child.py"
nbdsh_script "$tmp/child.avhdx" "$tmp/read-child.py" readonly=true
sha256sum -c "$tmp/base.sha"

echo "check: libvhdi reads the same places"
python3 - "$tmp" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import pyvhdi
from places import *
base = pyvhdi.file(); base.open(sys.argv[1] + "/base.vhdx")
child = pyvhdi.file(); child.open(sys.argv[1] + "/child.avhdx")
child.set_parent(base)
for i, off in enumerate(PLACES):
    got = child.read_buffer_at_offset(64 * 1024, off)
    assert got == expected(i), "libvhdi: place %d at %d" % (i, off)
    got = child.read_buffer_at_offset(64 * 1024, off + SECOND)
    assert got == expected_second(i), "libvhdi: second place %d" % i
print("libvhdi: %d places read as the model" % len(PLACES))
PY

vhdtool check "$tmp/child.avhdx" > "$tmp/check.out"
cat "$tmp/check.out"
must_contain "$tmp/check.out" "no errors found"
info=$(vhdtool info --json "$tmp/child.avhdx")
echo "$info" > "$tmp/info.json"
blocks=$(json_field "$tmp/info.json" vhdx.sector-bitmap-blocks)
test "$blocks" = 1

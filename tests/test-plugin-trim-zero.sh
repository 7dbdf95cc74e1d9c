#!/usr/bin/env bash
# Trim and zero on a dynamic image: trimming a whole block, or zeroing it
# with may_trim, gives its space back to the filesystem (the file's
# allocated size, what du -B1 shows, drops by at least 1 MiB) and the
# block reads back as zeros; zeroing part of a block zeroes exactly that
# part; and qemu-img still reads the whole image as expected.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires qemu-img --version

tmp=$(scratch_dir)
img=$tmp/disk.vhd
ref=$tmp/reference.raw
vhdtool create --dynamic 32M "$img"
truncate -s 32M "$ref"

cat > "$tmp/trim-zero.py" <<'PY'
import errno
import os
import random

B = 2 * 1024 * 1024
MiB = 1024 * 1024
img = os.environ["IMG"]
rng = random.Random(7)
ref = open(os.environ["REF"], "r+b")

def allocated():
    # What du -B1 shows: the bytes the file holds on disk.
    return os.stat(img).st_blocks * 512

def write(offset, data):
    h.pwrite(data, offset)
    ref.seek(offset)
    ref.write(data)

def check(offset, count):
    ref.seek(offset)
    assert h.pread(count, offset) == ref.read(count), (offset, count)

# Fill blocks 1, 3, 5 and 6 with random data.
for block in [1, 3, 5, 6]:
    write(block * B, rng.randbytes(B))
h.flush()

# Trim block 1.
before = allocated()
h.trim(B, 1 * B)
h.flush()
ref.seek(1 * B)
ref.write(bytes(B))
after = allocated()
print("trim: allocated %d -> %d bytes" % (before, after))
assert h.pread(B, 1 * B) == bytes(B)
assert after <= before - MiB, (before, after)

# Zero block 3 with may_trim (NBD's default: the client did not set
# NO_HOLE).
before = after
h.zero(B, 3 * B)
h.flush()
ref.seek(3 * B)
ref.write(bytes(B))
after = allocated()
print("zero may_trim: allocated %d -> %d bytes" % (before, after))
assert h.pread(B, 3 * B) == bytes(B)
assert after <= before - MiB, (before, after)

# Zero part of block 5, unaligned: exactly that range reads as zeros.
h.zero(100000, 5 * B + 12345, nbd.CMD_FLAG_NO_HOLE)
ref.seek(5 * B + 12345)
ref.write(bytes(100000))
check(5 * B, B)

# Trim part of block 6 and an unaligned range across blocks 5 and 6: the
# rest of the blocks is intact.  What NBD trims is undefined until
# written again; here each byte is either as before or zero (the engine
# deallocates the whole sectors inside the range).
def trim_part(offset, count):
    h.trim(count, offset)
    got = h.pread(count, offset)
    ref.seek(offset)
    old = ref.read(count)
    for i in range(count):
        assert got[i] == old[i] or got[i] == 0, (offset + i)
    ref.seek(offset)
    ref.write(got)

trim_part(6 * B + 8192, 4096)
assert h.pread(4096, 6 * B + 8192) == bytes(4096)
trim_part(6 * B - 30000, 70000)
check(5 * B, 2 * B)

# A fast zero either zeroes cheaply or says it cannot.
try:
    h.zero(B, 6 * B, nbd.CMD_FLAG_FAST_ZERO)
    ref.seek(6 * B)
    ref.write(bytes(B))
except nbd.Error as e:
    assert e.errno == errno.ENOTSUP, e
    print("fast zero refused: %s" % e)
check(5 * B, 2 * B)

h.flush()
check(0, h.get_size())
ref.close()
PY

IMG=$img REF=$ref tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh -u "$uri" -c - < "$tmp/trim-zero.py"'

# qemu-img reads the image file as the reference says.
qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
cmp "$ref" "$tmp/qemu.raw"

#!/usr/bin/env bash
# Writes through the filter (over nbdkit's file plugin) round-trip:
#  - a fixed image: seeded random writes of every shape, zeroes and FUA
#    writes read back equal to a raw reference through the filter, and
#    qemu-img reads the file underneath equal to it too;
#  - a dynamic image with some blocks allocated by qemu-io (whole) and
#    some by the plugin (half written, so that writes through the filter
#    also set bitmap bits): overwrites inside those blocks round-trip the
#    same way;
#  - a write that would allocate a block fails with ENOSPC, the log says
#    that the storage cannot grow, and the image file is unchanged;
#  - the default 2 MiB and 512 KiB block sizes, and a read-only stack
#    (nbdkit -r) that refuses writes.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_filter
requires_nbdsh
requires nbdcopy --version
requires qemu-img --version
requires qemu-io --version
requires vhdtool --help

tmp=$(scratch_dir)
size=$((64 * 1024 * 1024))

# writes.py: the seeded writes, each also made to the reference file.
# ALLOWED lists the byte ranges writes may touch ("all", or start:end
# pairs); BLOCK is the image's block size.
cat > "$tmp/writes.py" <<'PY'
import os
import random

size = h.get_size()
assert size == int(os.environ["SIZE"]), size
rng = random.Random(int(os.environ["SEED"]))
allowed = os.environ["ALLOWED"]
if allowed == "all":
    ranges = [(0, size)]
else:
    ranges = [tuple(map(int, r.split(":"))) for r in allowed.split()]

def pick(maxlen):
    start, end = rng.choice(ranges)
    count = min(rng.choice([1, 511, 512, 513, 4096, 65536,
                            rng.randrange(1, maxlen)]), end - start)
    offset = rng.choice([rng.randrange(start, end - count + 1),
                         start + rng.randrange(0, (end - start) // 512) * 512])
    return min(offset, end - count), count

with open(os.environ["REF"], "r+b") as ref:
    for i in range(400):
        offset, count = pick(300000)
        buf = rng.randbytes(count)
        h.pwrite(buf, offset, nbd.CMD_FLAG_FUA if i % 17 == 0 else 0)
        ref.seek(offset)
        ref.write(buf)
    for i in range(10):
        offset, count = pick(200000)
        h.zero(count, offset)
        ref.seek(offset)
        ref.write(bytes(count))
    h.flush()
    step = 4 * 1024 * 1024
    for offset in range(0, size, step):
        count = min(step, size - offset)
        ref.seek(offset)
        assert h.pread(count, offset) == ref.read(count), \
            "mismatch in [%d, %d)" % (offset, offset + count)
PY

# check_image IMG REF: the image reads back equal to REF through the
# filter, and with qemu-img (an independent reader of the file).
check_image ()
{
  local img=$1 ref=$2
  tmp=$tmp nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$img" \
    --run 'nbdcopy "$uri" "$tmp/filter.raw"'
  cmp "$ref" "$tmp/filter.raw"
  qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
  cmp "$ref" "$tmp/qemu.raw"
}

# Fixed: everything is writable.
vhdtool create --fixed "$size" "$tmp/fixed.vhd"
truncate -s "$size" "$tmp/fixed.ref"
SIZE=$size SEED=1 REF=$tmp/fixed.ref ALLOWED=all tmp=$tmp \
nbdkit -U - --filter="$VHDKIT_FILTER" file file="$tmp/fixed.vhd" \
  --run 'nbdsh -u "$uri" -c - < "$tmp/writes.py"'
check_image "$tmp/fixed.vhd" "$tmp/fixed.ref"

# dynamic BLOCKSIZE SEED: blocks 1, 5 and 9 allocated whole by qemu-io
# (qemu marks every sector of a block it allocates as present); blocks 3
# and 7 allocated by the plugin writing only their first half, so that
# the filter's writes to their second half set bitmap bits.  Writes
# through the filter stay inside those blocks.
dynamic ()
{
  local bs=$1 seed=$2 img=$tmp/dyn-$1.vhd ref=$tmp/dyn-$1.ref allowed=
  local b before after
  vhdtool create --dynamic --block-size "$bs" "$size" "$img"
  bs=$(numfmt --from=iec "$bs")
  truncate -s "$size" "$ref"
  for b in 1 5 9; do
    qemu-io -f vpc -c "write -P $((b + 16)) $((b * bs)) $bs" "$img" >/dev/null
    allowed="$allowed $((b * bs)):$(((b + 1) * bs))"
  done
  BS=$bs nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run 'nbdsh -u "$uri" -c "
import os
bs = int(os.environ[\"BS\"])
for b in (3, 7):
    h.pwrite(bytes([b + 16]) * (bs // 2), b * bs)
h.flush()
"'
  for b in 3 7; do
    allowed="$allowed $((b * bs)):$(((b + 1) * bs))"
  done
  qemu-img convert -f vpc -O raw "$img" "$ref"
  SIZE=$size SEED=$seed REF=$ref ALLOWED=$allowed tmp=$tmp \
  nbdkit -U - --filter="$VHDKIT_FILTER" file file="$img" \
    --run 'nbdsh -u "$uri" -c - < "$tmp/writes.py"'
  check_image "$img" "$ref"

  # A write to a block that is not allocated: ENOSPC, a message, and the
  # file unchanged, byte for byte.
  before=$(sha256sum < "$img")
  nbdkit -U - --filter="$VHDKIT_FILTER" file file="$img" \
    --run 'nbdsh -u "$uri" -c "
import errno
try:
    h.pwrite(b\"x\" * 4096, 2 * '"$bs"' + 512)
    raise SystemExit(\"a write to an unallocated block succeeded\")
except nbd.Error as e:
    assert e.errno == \"ENOSPC\", e
h.flush()
"' 2> "$tmp/enospc.log"
  cat "$tmp/enospc.log"
  grep -q "cannot grow" "$tmp/enospc.log"
  after=$(sha256sum < "$img")
  test "$before" = "$after"
  check_image "$img" "$ref"
}
dynamic 2M 2
dynamic 512K 3

# nbdkit -r: the image opens read-only and writes are refused.
nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$tmp/fixed.vhd" \
  --run 'nbdsh -u "$uri" -c "
assert h.is_read_only()
try:
    h.pwrite(b\"x\", 0)
    raise SystemExit(\"a write to a read-only export succeeded\")
except nbd.Error:
    pass
"'
check_image "$tmp/fixed.vhd" "$tmp/fixed.ref"

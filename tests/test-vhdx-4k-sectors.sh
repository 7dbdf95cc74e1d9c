#!/usr/bin/env bash
# A VHDX with 4096-byte logical sectors (vhdtool create --sector-size
# 4096), fixed and dynamic, takes writes of every shape through the
# plugin and reads back equal to a raw reference through independent
# readers: vhdx-spec-read.py (written from [MS-VHDX] alone), and libvhdi's
# Python binding (pyvhdi, from python3-libvhdi) when it is installed: it
# opens 4096-byte-sector VHDX.  (qemu-img cannot be one: qemu 7.2's vhdx
# driver refuses any logical sector size but 512.)  The copies vhdtool convert makes
# keep the sector size (VHDX to VHDX) or are refused (to VHD, where every
# LBA of the partition table would change meaning).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdcopy --version
requires jq --version
requires python3 --version

# pyvhdi is installed for the system's python (python3-libvhdi); a
# python3 from pyenv or a virtualenv lacks it.
pyvhdi=
for py in python3 /usr/bin/python3; do
  if $py -c 'import pyvhdi' >/dev/null 2>&1; then pyvhdi=$py; break; fi
done
[ -n "$pyvhdi" ] || echo "$0: pyvhdi not installed: the spec reader only"

tmp=$(scratch_dir)
size=$((64 * 1024 * 1024))

cat > "$tmp/writes.py" <<'PY'
import os
import random

size = h.get_size()
assert size == int(os.environ["SIZE"]), size
rng = random.Random(int(os.environ["SEED"]))
with open(os.environ["REF"], "r+b") as ref:
    def write(offset, count):
        buf = rng.randbytes(count)
        h.pwrite(buf, offset)
        ref.seek(offset)
        ref.write(buf)
    # Whole sectors, parts of one sector (read-modify-write of 4096
    # bytes), requests across block boundaries, both ends of the disk.
    write(0, 4096)
    write(size - 4096, 4096)
    write(4096 + 100, 1000)
    write(size - 1, 1)
    write(1024 * 1024 - 3000, 10000)
    for i in range(200):
        count = rng.choice([1, 512, 4095, 4096, 4097, 65536,
                            rng.randrange(1, 3 * 1024 * 1024)])
        offset = rng.randrange(0, size - count + 1)
        if i % 2:
            offset = offset // 4096 * 4096
        write(offset, count)
    h.flush()
PY

# read_back IMAGE REF: every reader sees REF's bytes in IMAGE.
read_back ()
{
  python3 "$VHDKIT_SRCDIR/vhdx-spec-read.py" "$1" "$tmp/spec.raw" > \
    "$tmp/spec.out"
  test "$(cut -d' ' -f3 "$tmp/spec.out")" = 4096
  cmp "$2" "$tmp/spec.raw"
  rm -f "$tmp/spec.raw"
  if [ -n "$pyvhdi" ]; then
    $pyvhdi "$tmp/pyvhdi-read.py" "$1" "$tmp/pyvhdi.raw"
    cmp "$2" "$tmp/pyvhdi.raw"
    rm -f "$tmp/pyvhdi.raw"
  fi
}

cat > "$tmp/pyvhdi-read.py" <<'PY'
import sys
import pyvhdi

f = pyvhdi.file()
f.open(sys.argv[1])
assert f.get_bytes_per_sector() == 4096, f.get_bytes_per_sector()
size = f.get_media_size()
with open(sys.argv[2], "wb") as out:
    offset = 0
    while offset < size:
        n = min(4 * 1024 * 1024, size - offset)
        buf = f.read_buffer_at_offset(n, offset)
        assert len(buf) == n, (offset, len(buf))
        out.write(buf)
        offset += n
f.close()
PY

seed=1
for type in dynamic fixed; do
  img=$tmp/$type.vhdx
  ref=$tmp/$type.raw
  vhdtool create --$type --block-size 1M --sector-size 4096 $size "$img"
  vhdtool info --json "$img" > "$tmp/info.json"
  test "$(jq -r '."logical-sector-size"' "$tmp/info.json")" = 4096
  test "$(jq -r '."physical-sector-size"' "$tmp/info.json")" = 4096
  truncate -s $size "$ref"

  tmp=$tmp SIZE=$size SEED=$seed REF=$ref \
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
    --run 'nbdsh -u "$uri" -c - < "$tmp/writes.py"'
  seed=$((seed + 1))

  read_back "$img" "$ref"
  vhdtool check "$img"

  # VHDX to VHDX keeps the 4096-byte sectors and the data.
  vhdtool convert "$img" "$tmp/copy.vhdx"
  test "$(vhdtool info --json "$tmp/copy.vhdx" |
          jq -r '."logical-sector-size"')" = 4096
  read_back "$tmp/copy.vhdx" "$ref"

  # To VHD, or to a VHDX of 512-byte sectors: refused, and no file left.
  status=0
  vhdtool convert "$img" "$tmp/copy.vhd" 2> "$tmp/err" || status=$?
  cat "$tmp/err"
  test $status = 1
  grep -q "has 4096-byte logical sectors, which a VHD cannot have" \
       "$tmp/err"
  test ! -e "$tmp/copy.vhd"
  status=0
  vhdtool convert --sector-size 512 "$img" "$tmp/copy512.vhdx" \
    2> "$tmp/err" || status=$?
  cat "$tmp/err"
  test $status = 1
  grep -q "would change meaning" "$tmp/err"
  test ! -e "$tmp/copy512.vhdx"
  rm -f "$img" "$tmp/copy.vhdx"
done

# A raw disk into a 4096-byte-sector VHDX, sparse.
cp "$tmp/dynamic.raw" "$tmp/src.raw"
vhdtool convert --sector-size 4096 "$tmp/src.raw" "$tmp/fromraw.vhdx"
read_back "$tmp/fromraw.vhdx" "$tmp/src.raw"

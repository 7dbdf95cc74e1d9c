#!/usr/bin/env bash
# nbdinfo --map over a 2040 GiB dynamic image whose 8160 blocks of
# 256 MiB each have a partial sector bitmap (64 KiB each, 510 MiB in all)
# keeps nbdkit's peak RSS flat: the sector bitmap cache is bounded, so the
# walk does not keep every bitmap it read until the image is closed.  The
# file is sparse (one 4 KiB page of bitmap per block is written).  The map
# itself is checked too: the first sector of every block is data, the
# rest of the disk hole and zero.
#
# Peak RSS is asserted in the normal build only: ASan's shadow memory and
# quarantine inflate it (VHDKIT_SANITIZERS=1 in a sanitizer build).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires nbdinfo --version
requires python3 --version
requires /usr/bin/time --version

tmp=$(scratch_dir)
img=$tmp/partial.vhd

# The image, from the VHD specification (nothing of the engine's).
python3 - "$img" <<'PY'
import struct
import sys
import time
import uuid

SECTOR = 512
BS = 256 << 20                      # block size
SIZE = 2040 << 30                   # current size
N = SIZE // BS                      # 8160 entries
BITMAP = BS // SECTOR // 8          # 64 KiB
BAT_AT = 1536
BAT_BYTES = (N * 4 + SECTOR - 1) // SECTOR * SECTOR
FIRST = 1 << 20                     # where block 0 starts


def checksum(b, at):
    b[at:at + 4] = b"\0\0\0\0"
    struct.pack_into(">I", b, at, (~sum(b)) & 0xFFFFFFFF)


def footer():
    f = bytearray(SECTOR)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x10000, 512,
                     int(time.time()) - 946684800)
    f[28:32] = b"test"
    struct.pack_into(">IIQQHBBI", f, 32, 0x10000, 0x5769326B, SIZE, SIZE,
                     65535, 16, 255, 3)
    f[68:84] = uuid.uuid4().bytes
    checksum(f, 64)
    return bytes(f)


def header():
    h = bytearray(1024)
    h[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", h, 8, 0xFFFFFFFFFFFFFFFF, BAT_AT, 0x10000,
                     N, BS)
    checksum(h, 36)
    return bytes(h)


# One footer, written as the copy and as the trailing footer: the two
# must agree (open refuses copies that disagree).
the_footer = footer()
with open(sys.argv[1], "wb") as f:
    f.write(the_footer)
    f.write(header())
    bat = bytearray(b"\xff" * BAT_BYTES)
    for i in range(N):
        start = FIRST + i * (BITMAP + BS)
        struct.pack_into(">I", bat, 4 * i, start // SECTOR)
        f.seek(start)
        f.write(b"\x80")            # sector 0 present, the rest absent
    f.seek(BAT_AT)
    f.write(bat)
    f.seek(FIRST + N * (BITMAP + BS))
    f.write(the_footer)
PY
ls -ls "$img"

/usr/bin/time -v -o "$tmp/time.txt" \
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdinfo --map --totals "$uri"' > "$tmp/totals.txt"
cat "$tmp/time.txt" "$tmp/totals.txt"

# One 512-byte sector of data per block, the rest hole and zero.
data=$((8160 * 512))
grep -E "^ *$data +[0-9.]+% +0 +data\$" "$tmp/totals.txt"

if [ "${VHDKIT_SANITIZERS:-0}" = 1 ]; then
  echo "$0: sanitizer build: peak RSS not asserted"
  exit 0
fi
# Without the bound nbdkit keeps every bitmap: over 510 MiB.  With it,
# the cache's 8 MiB and nbdkit itself.
peak_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' \
            "$tmp/time.txt")
test "$peak_kb" -lt $((96 * 1024))

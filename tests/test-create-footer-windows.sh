#!/usr/bin/env bash
# vhdtool writes the footer that Windows writes: for every size that a
# Windows-written footer among the samples has, a disk that vhdtool creates
# with that size carries the same CHS geometry; and every footer vhdtool
# writes has creator application "win ", creator version 0x000a0000
# (Windows 10), host OS "Wi2k" and a valid checksum.  Footers are decoded
# here straight from the bytes, by the VHD specification, not by vhdkit.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires python3 --version
requires xz --version

samples=$(samples_dir)
tmp=$(scratch_dir)
cd "$tmp"

# Print "SIZE CYLINDERS HEADS SECTORS" for a valid footer that Windows
# wrote (creator "win "), nothing for any other footer.
windows_geometry ()
{
  python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(0, 2)
    f.seek(f.tell() - 512)
    b = f.read(512)
stored, = struct.unpack_from(">I", b, 64)
ok = (~sum(b[:64] + bytes(4) + b[68:])) & 0xffffffff == stored
if b[:8] == b"conectix" and b[28:32] == b"win " and ok:
    size, = struct.unpack_from(">Q", b, 48)
    print(size, *struct.unpack_from(">HBB", b, 56))
PY
}

# Decode a footer vhdtool wrote; fail unless it is what Windows 10 writes
# for that geometry.
check_footer ()
{
  python3 - "$@" <<'PY'
import struct, sys
path = sys.argv[1]
want = tuple(map(int, sys.argv[2:]))
with open(path, "rb") as f:
    f.seek(0, 2)
    f.seek(f.tell() - 512)
    b = f.read(512)
assert b[:8] == b"conectix", b[:8]
stored, = struct.unpack_from(">I", b, 64)
computed = (~sum(b[:64] + bytes(4) + b[68:])) & 0xffffffff
assert stored == computed, "checksum %08x, computed %08x" % (stored, computed)
app, (version,), host = b[28:32], struct.unpack_from(">I", b, 32), b[36:40]
size, = struct.unpack_from(">Q", b, 48)
geometry = struct.unpack_from(">HBB", b, 56)
print("%s: %r 0x%08x %r size %d geometry %d/%d/%d"
      % (path, app, version, host, size, *geometry))
assert (app, version, host) == (b"win ", 0x000a0000, b"Wi2k"), \
    (app, hex(version), host)
assert (size, *geometry) == want, ((size, *geometry), want)
PY
}

# Windows-written footers: the footer samples, and the trailing footers of
# the image samples.
: > windows.txt
for f in "$samples"/footers/*; do
  windows_geometry "$f" >> windows.txt
done
for xzname in $(manifest_files open); do
  name=${xzname%.xz}
  xz -dc "$samples/images/$xzname" | tail -c 512 > footer.bin
  windows_geometry footer.bin >> windows.txt
done
sort -un windows.txt > sizes.txt
cat sizes.txt
# 3 MiB, 100 MiB, 3 GiB and a size at the 65535/16/255 maximum at least.
test "$(wc -l < sizes.txt)" -ge 4

while read -r size c h s; do
  vhdtool create --dynamic "$size" "dynamic-$size.vhd"
  check_footer "dynamic-$size.vhd" "$size" "$c" "$h" "$s"
  rm "dynamic-$size.vhd"
  echo "checked: $size bytes: geometry $c/$h/$s as Windows writes it"
done < sizes.txt

# Fixed and differencing footers are Windows 10's too.
vhdtool create --fixed 3M fixed.vhd
check_footer fixed.vhd 3145728 90 4 17
vhdtool create --parent fixed.vhd child.vhd
check_footer child.vhd 3145728 90 4 17
echo "checked: fixed and differencing footers say \"win \" 0x000a0000 Wi2k"

#!/usr/bin/env bash
# nbdkit vhd dir=DIR serves every VHD or VHDX directly in DIR, whatever its
# extension, as an export named by its file name: the list (which must
# complete although a FIFO named fifo.vhd sits in the folder) holds
# exactly the images, each with its type, size and (differencing) parent;
# each export reads back its image's recorded hash (samples) or what
# qemu-img reads of it; two exports serve clients at once; the default
# export "" is refused with a message saying to name one, and so are
# names that are not a plain regular file in DIR.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires nbdinfo --version
requires nbdcopy --version
requires qemu-img --version
requires qemu-io --version
requires xz --version
requires timeout --version
requires_nbdsh

tmp=$(scratch_dir)
dir=$tmp/images
mkdir "$dir" "$dir/sub"

# Samples with recorded hashes: a fixed disk, and a Windows
# differencing child beside its parent.
decompress_sample win10-fixed.vhd "$dir" > /dev/null
decompress_sample win8.vhd "$dir" > /dev/null
decompress_sample win8-child.vhd "$dir" > /dev/null
# A VHDX that Hyper-V wrote, named without its extension.
decompress_vhdx_sample dissect-dynamic.vhdx "$tmp" > /dev/null
mv "$tmp/dissect-dynamic.vhdx" "$dir/hyperv-disk"
# A dynamic disk that qemu writes, with a name that does not say VHD.
qemu-img create -f vpc -o subformat=dynamic "$dir/qemu-dynamic.disk" 16M
qemu-io -f vpc -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 5M 64k' \
  -c 'write -P 0x33 15M 4k' "$dir/qemu-dynamic.disk"
qemu-img convert -f vpc -O raw "$dir/qemu-dynamic.disk" "$tmp/qemu-dynamic.raw"
qemu-img convert -f vpc -O raw "$dir/win10-fixed.vhd" "$tmp/win10-fixed.raw"
# What is not served: a non-image (even named .vhd), an image in a
# subfolder, a FIFO named like an image, a link to an image.
echo "not an image" > "$dir/notes.txt"
truncate -s 4M "$dir/raw.vhd"
vhdtool create --dynamic 8M "$dir/sub/inner.vhd"
mkfifo "$dir/fifo.vhd"
ln -s win10-fixed.vhd "$dir/link.vhd"

for name in win10-fixed.vhd win8.vhd win8-child.vhd; do
  echo "$name $(manifest_field "$name" sha256_of_current_size_bytes)"
done > "$tmp/expected-hashes"
echo "hyperv-disk $(vhdx_manifest_field dissect-dynamic.vhdx \
                     sha256_of_virtual_disk)" >> "$tmp/expected-hashes"
export dir tmp
cat > "$tmp/client.sh" <<'SH'
set -e
set -x
export unixsocket
uri_of () { echo "nbd+unix:///$1?socket=$unixsocket"; }

# The list, guarded: a FIFO opened without care would hang it.
timeout 60 nbdinfo --list --json "$uri" > "$tmp/list.json"
/usr/bin/python3 - "$tmp/list.json" <<'PY'
import json, os, sys
exports = {e["export-name"]: e.get("description", "")
           for e in json.load(open(sys.argv[1]))["exports"]}
print(exports)
assert sorted(exports) == ["hyperv-disk", "qemu-dynamic.disk",
                           "win10-fixed.vhd", "win8-child.vhd",
                           "win8.vhd"], sorted(exports)
assert exports["hyperv-disk"] == "VHDX dynamic, 10485760 bytes", exports
assert exports["win10-fixed.vhd"] == "VHD fixed, 10485760 bytes"
# qemu rounds the size up to whole CHS geometry: its raw reading says.
size = os.path.getsize(os.environ["tmp"] + "/qemu-dynamic.raw")
assert exports["qemu-dynamic.disk"] == "VHD dynamic, %d bytes" % size
assert exports["win8.vhd"] == "VHD dynamic, 41943040 bytes"
d = exports["win8-child.vhd"]
assert d.startswith("VHD differencing, 41943040 bytes, parent "), d
assert d.endswith("win8.vhd"), d
PY

# Each export by name: the recorded hash, or qemu-img's reading.
while read -r name expected; do
  sum=$(nbdcopy "$(uri_of "$name")" - | sha256sum)
  test "${sum%% *}" = "$expected"
done < "$tmp/expected-hashes"
nbdcopy "$(uri_of qemu-dynamic.disk)" "$tmp/served-dynamic.raw"
cmp "$tmp/qemu-dynamic.raw" "$tmp/served-dynamic.raw"

# Two exports (and two connections to one of them) in use at once.
/usr/bin/python3 - <<'PY'
import nbd, os
sock = os.environ["unixsocket"]
def connect(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h
tmp = os.environ["tmp"]
fixed = open(tmp + "/win10-fixed.raw", "rb").read()
dynamic = open(tmp + "/qemu-dynamic.raw", "rb").read()
a, b, a2 = connect("win10-fixed.vhd"), connect("qemu-dynamic.disk"), \
           connect("win10-fixed.vhd")
step = 256 * 1024
for off in range(0, len(dynamic), step):
    n = min(step, len(dynamic) - off)
    assert b.pread(n, off) == dynamic[off:off + n], off
    o = off % len(fixed)
    n = min(step, len(fixed) - o)
    assert a.pread(n, o) == fixed[o:o + n], o
    assert a2.pread(n, o) == fixed[o:o + n], o
for h in (a, b, a2):
    h.shutdown()
PY

# Refused: the default export, and anything but a plain regular file.
for name in "" ../x a/b . .. sub fifo.vhd link.vhd no-such.vhd; do
  if nbdinfo --size "$(uri_of "$name")"; then
    echo "FAIL: export '$name' was served" >&2
    exit 1
  fi
done
SH

# Guarded as a whole: a listing stuck in an open would hang nbdkit too.
timeout -k 10 300 nbdkit -U - "$VHDKIT_PLUGIN" dir="$dir" \
  --run 'uri=$uri unixsocket=$unixsocket bash "$tmp/client.sh"' \
  2> "$tmp/log" || { cat "$tmp/log"; exit 1; }
cat "$tmp/log"
grep -q "has no default export: name one of its images" "$tmp/log"
grep -q "export '../x' refused: an export name is the name of a file" "$tmp/log"
grep -q "export 'a/b' refused" "$tmp/log"
grep -q "export '.' refused" "$tmp/log"
grep -q "export '..' refused" "$tmp/log"
grep -q "$dir/fifo.vhd is not a regular file" "$tmp/log"
grep -q "$dir/link.vhd is not a regular file" "$tmp/log"
grep -q "export 'no-such.vhd': there is no file of that name in $dir" "$tmp/log"

# dir= and a single image exclude each other.
if nbdkit -U - "$VHDKIT_PLUGIN" dir="$dir" file="$dir/win8.vhd" --run true \
     2> "$tmp/err"; then
  echo "$0: FAIL: dir= and file= were accepted together" >&2
  exit 1
fi
grep -q "cannot be used together" "$tmp/err"

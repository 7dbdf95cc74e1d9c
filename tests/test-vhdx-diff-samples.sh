#!/usr/bin/env bash
# dissect-differencing.avhdx, a real Hyper-V checkpoint (Windows 10 1809,
# partially present blocks, sector-bitmap blocks, a five-key locator),
# whose real parent is not public (samples/vhdx/MANIFEST.tsv).  Alone in
# its folder it is refused by the plugin, vhdtool info and vhdtool
# convert, each naming the parent it looked for (.\Generation 1_....avhdx,
# its parent_linkage) and where it looked (that file in the child's
# folder).  With the synthetic stand-in parent decompressed beside it
# under the name its relative_path gives, the pair reads with the
# manifest's sha256 through the plugin, through vhdtool convert (the
# flattened copy read by qemu-img), through the spec reader and through
# libvhdi; vhdtool info (text and --json) shows both levels, their types,
# the linkage and how the parent was found; and no reader changes either
# file.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires nbdinfo --version
requires xz --version
requires sha256sum --version
requires qemu-img --version
requires python3 --version
# libvhdi's Python module is in the system's python3, which a pyenv or
# virtualenv python3 first on PATH lacks.
pyvhdi_python=
for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
  if "$py" -c 'import pyvhdi' >/dev/null 2>&1; then
    pyvhdi_python=$py
    break
  fi
done
if [ -z "$pyvhdi_python" ]; then
  skip "no python3 with pyvhdi (python3-libvhdi)"
fi

child_name=dissect-differencing.avhdx
standin="standin-parent-of-dissect-differencing.vhdx"
parent_name="Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx"
linkage=ff34003b-11ed-4cf8-a166-b2be05e20b80

test "$(vhdx_manifest_field "$child_name" expect)" = open-with-standin-parent
test "$(vhdx_manifest_field "$standin" expect)" = parent-only
want=$(vhdx_manifest_field "$child_name" sha256_of_virtual_disk)
test "${#want}" -eq 64
size=$(vhdx_manifest_field "$child_name" virtual_size)
# The manifest's own words: the stand-in carries the child's linkage.
vhdx_manifest_field "$standin" notes | grep -qF "DataWriteGuid $linkage"
vhdx_manifest_field "$standin" notes | grep -qF "\"$parent_name\""

tmp=$(scratch_dir)
dir=$(cd "$tmp" && pwd -P)
child=$(decompress_vhdx_sample "$child_name" "$dir")

# sha256_of FILE: the sha256 of a (sparse) raw file.  Python's hashlib
# hashes the 8 GiB of mostly zeros in a few seconds, where sha256sum
# here takes ten times as long; holes are hashed as zeros without being
# read.
sha256_of ()
{
  python3 - "$1" <<'PY'
import hashlib, os, sys
h = hashlib.sha256()
chunk = 16 << 20
zero = bytes(chunk)
with open(sys.argv[1], "rb") as f:
    fd = f.fileno()
    size = os.fstat(fd).st_size
    off = 0
    while off < size:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:                         # only a hole is left
            data = size
        while off < data:
            n = min(chunk, data - off)
            h.update(zero if n == chunk else zero[:n])
            off += n
        if off < size:
            hole = os.lseek(fd, off, os.SEEK_HOLE)
            f.seek(off)
            while off < hole:
                b = f.read(min(chunk, hole - off))
                h.update(b)
                off += len(b)
print(h.hexdigest())
PY
}

# cmp_sparse A B: the raw files A and B hold the same bytes (and are the
# same size).  Where both are holes both read zeros, so only the ranges
# where either holds data are read and compared: the 8 GiB disk here
# holds a few MiB.
cmp_sparse ()
{
  python3 - "$1" "$2" <<'PY'
import os, sys
def data_ranges(fd, size):
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        off = end
a, b = (open(p, "rb") for p in sys.argv[1:3])
size = os.fstat(a.fileno()).st_size
if os.fstat(b.fileno()).st_size != size:
    sys.exit("cmp_sparse: %s and %s differ in size" % tuple(sys.argv[1:3]))
ranges = sorted(list(data_ranges(a.fileno(), size)) +
                list(data_ranges(b.fileno(), size)))
checked = 0
for start, end in ranges:
    a.seek(start)
    b.seek(start)
    while start < end:
        n = min(16 << 20, end - start)
        x, y = a.read(n), b.read(n)
        if x != y:
            i = next(i for i in range(n) if x[i] != y[i])
            sys.exit("cmp_sparse: %s and %s differ at byte %d"
                     % (sys.argv[1], sys.argv[2], start + i))
        start += n
        checked += n
print("cmp_sparse: same %d bytes (%d read)" % (size, checked))
PY
}

echo "check: alone, the child is refused, naming the parent it looked for" \
     "and where"
child_sha=$(sha256sum < "$child")
# Its locator is what the manifest says: the relative path names the
# parent in the child's own folder, the Windows paths only by file name.
vhdtool info --json "$child" > "$tmp/alone.json"
cat "$tmp/alone.json"
test "$(json_field "$tmp/alone.json" type)" = differencing
test "$(json_field "$tmp/alone.json" vhdx.parent-linkage)" = "$linkage"
test "$(json_field "$tmp/alone.json" vhdx.locator.relative_path)" = \
     ".\\$parent_name"
json_field "$tmp/alone.json" parent-error > "$tmp/alone.parent-error"
alone_err="$child: parent .\\$parent_name (parent_linkage {$linkage})"
alone_err+=" could not be opened; tried: $dir/$parent_name (relative_path and"
alone_err+=" absolute_win32_path, by file name and volume_path, by file name):"
alone_err+=" not found"
test "$(cat "$tmp/alone.parent-error")" = "$alone_err"
if json_field "$tmp/alone.json" parent 2>/dev/null ||
   json_field "$tmp/alone.json" parent-found-by 2>/dev/null; then
  echo "$0: FAIL: vhdtool info shows a parent that is not there" >&2
  exit 1
fi
vhdtool info "$child" > "$tmp/alone.txt"
cat "$tmp/alone.txt"
grep -qxF "parent: not opened: $(cat "$tmp/alone.parent-error")" \
  "$tmp/alone.txt"

serve_must_fail "$tmp/alone.serve-err" "$child" readonly=true
must_contain "$tmp/alone.serve-err" "nbdkit: error: $alone_err"
serve_must_fail "$tmp/alone.serve-rw-err" "$child"
must_contain "$tmp/alone.serve-rw-err" "nbdkit: error: $alone_err"

if vhdtool convert "$child" "$tmp/alone-flat.vhdx" 2> "$tmp/alone.convert-err"
then
  echo "$0: FAIL: vhdtool convert flattened a child without its parent" >&2
  exit 1
fi
cat "$tmp/alone.convert-err"
must_contain "$tmp/alone.convert-err" "$alone_err"
test ! -e "$tmp/alone-flat.vhdx"
test "$(sha256sum < "$child")" = "$child_sha"

echo "check: the stand-in parent, under the name the locator gives, is the" \
     "parent the child records"
xz -dc "$VHDKIT_SAMPLES/vhdx/$standin.xz" > "$dir/$parent_name"
parent="$dir/$parent_name"
parent_sha=$(sha256sum < "$parent")
vhdtool info --json "$parent" > "$tmp/parent.json"
test "$(json_field "$tmp/parent.json" type)" = dynamic
test "$(json_field "$tmp/parent.json" vhdx.data-write-guid)" = "$linkage"
test "$(json_field "$tmp/parent.json" virtual-size)" = "$size"

echo "check: vhdtool info shows the chain: both levels, the linkage, how" \
     "the parent was found"
vhdtool info --json "$child" > "$tmp/pair.json"
cat "$tmp/pair.json"
test "$(json_field "$tmp/pair.json" format)" = VHDX
test "$(json_field "$tmp/pair.json" type)" = differencing
test "$(json_field "$tmp/pair.json" virtual-size)" = "$size"
test "$(json_field "$tmp/pair.json" vhdx.creator)" = \
     "$(vhdx_manifest_field "$child_name" creator)"
test "$(json_field "$tmp/pair.json" vhdx.block-states.partially-present)" = 32
test "$(json_field "$tmp/pair.json" vhdx.sector-bitmap-blocks)" = 2
test "$(json_field "$tmp/pair.json" parent-found-by)" = relative_path
test "$(json_field "$tmp/pair.json" parent.path)" = "$parent"
test "$(json_field "$tmp/pair.json" parent.format)" = VHDX
test "$(json_field "$tmp/pair.json" parent.type)" = dynamic
test "$(json_field "$tmp/pair.json" parent.vhdx.data-write-guid)" = \
     "$(json_field "$tmp/pair.json" vhdx.parent-linkage)"
if json_field "$tmp/pair.json" parent-error 2>/dev/null ||
   json_field "$tmp/pair.json" parent.parent 2>/dev/null ||
   json_field "$tmp/pair.json" parent.vhdx.parent-linkage 2>/dev/null; then
  echo "$0: FAIL: vhdtool info shows an error, or a third level" >&2
  exit 1
fi
vhdtool info "$child" > "$tmp/pair.txt"
cat "$tmp/pair.txt"
# Two images, each with its format and type; the child's linkage and
# locator; the parent found, by relative_path, with that DataWriteGuid.
test "$(grep -c '^image: ' "$tmp/pair.txt")" -eq 2
test "$(grep -c '^format: VHDX$' "$tmp/pair.txt")" -eq 2
grep -qxF "image: $child" "$tmp/pair.txt"
grep -qxF "image: $parent" "$tmp/pair.txt"
grep -qxF "type: differencing" "$tmp/pair.txt"
grep -qxF "type: dynamic" "$tmp/pair.txt"
grep -qxF "parent linkage: $linkage" "$tmp/pair.txt"
grep -qxF "locator: relative_path .\\$parent_name" "$tmp/pair.txt"
grep -qxF "parent: $parent (found by relative_path)" "$tmp/pair.txt"
grep -qxF "data write guid: $linkage" "$tmp/pair.txt"
# The parent's section comes after the line that names it.
awk -v p="image: $parent" '$0 == p { found = NR } /^parent: / { at = NR }
  END { exit !(found && at && found > at) }' "$tmp/pair.txt"

echo "check: the plugin reads the pair with the manifest's sha256"
serve_copy "$child" "$tmp/plugin.raw"
test "$(stat -c %s "$tmp/plugin.raw")" -eq "$size"
test "$(sha256_of "$tmp/plugin.raw")" = "$want"
# Read-write too (opened for writing, nothing written).
got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$child" \
        --run 'nbdinfo --size "$uri"')
test "$got" -eq "$size"

echo "check: vhdtool convert flattens the pair into a VHDX that qemu-img" \
     "reads as the plugin does, with the manifest's sha256"
vhdtool convert "$child" "$tmp/flat.vhdx"
vhdtool info --json "$tmp/flat.vhdx" > "$tmp/flat.json"
test "$(json_field "$tmp/flat.json" type)" = dynamic
qemu-img convert -f vhdx -O raw "$tmp/flat.vhdx" "$tmp/qemu.raw"
rm "$tmp/flat.vhdx"
# The same bytes as the plugin's copy, whose sha256 is the manifest's.
cmp_sparse "$tmp/plugin.raw" "$tmp/qemu.raw"
rm "$tmp/qemu.raw"

echo "check: the spec reader reads the pair as the plugin does, with the" \
     "manifest's sha256"
python3 "$VHDKIT_SRCDIR/vhdx-spec-read.py" "$child" "$tmp/spec.raw" \
  "$parent" > "$tmp/spec.out"
cat "$tmp/spec.out"
test "$(cat "$tmp/spec.out")" = "$size 2097152 512 4096"
cmp_sparse "$tmp/plugin.raw" "$tmp/spec.raw"
rm "$tmp/spec.raw" "$tmp/plugin.raw"

echo "check: libvhdi (pyvhdi) reads the pair with the manifest's sha256"
got=$("$pyvhdi_python" - "$child" "$parent" <<'PY'
import hashlib, sys
import pyvhdi
child, parent = pyvhdi.file(), pyvhdi.file()
parent.open(sys.argv[2])
child.open(sys.argv[1])
child.set_parent(parent)
h = hashlib.sha256()
size, chunk = child.get_media_size(), 16 << 20
for off in range(0, size, chunk):
    h.update(child.read_buffer_at_offset(min(chunk, size - off), off))
print(h.hexdigest())
PY
)
test "$got" = "$want"

echo "check: no reader changed either file"
test "$(sha256sum < "$child")" = "$child_sha"
test "$(sha256sum < "$parent")" = "$parent_sha"

#!/usr/bin/env bash
# The real Windows pair: win8-child.vhd (a Windows 10 differencing disk)
# beside its parent win8.vhd.  The child opens through its relative (W2ru)
# locator and reads the MANIFEST's hash; writes through the plugin read
# back; afterwards the child still opens and reads what was written, and
# the parent file is byte-for-byte unchanged.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires xz --version
requires nbdcopy --version
requires sha256sum --version
requires cmp --version
requires_nbdsh

tmp=$(scratch_dir)
child=$(decompress_sample win8-child.vhd "$tmp")
parent=$(decompress_sample win8.vhd "$tmp")
expected=$(manifest_field win8-child.vhd sha256_of_current_size_bytes)
size=$(manifest_field win8-child.vhd current_size)
parent_file_hash=$(sha256sum < "$parent")

echo "check: the child, served through the plugin, reads the MANIFEST's hash"
test "$(serve_sha256 "$child")" = "$expected"

echo "check: vhdtool info finds the parent by the W2ru (relative) locator"
vhdtool info --json "$child" > "$tmp/info.json"
cat "$tmp/info.json"
test "$(json_field "$tmp/info.json" type)" = differencing
test "$(json_field "$tmp/info.json" virtual-size)" = "$size"
test "$(json_field "$tmp/info.json" parent-found-by)" = "W2ru locator"
test "$(json_field "$tmp/info.json" parent.type)" = dynamic
test "$(json_field "$tmp/info.json" parent.path)" -ef "$parent"
test "$(json_field "$tmp/info.json" parent.uuid)" = \
     "$(json_field "$tmp/info.json" parent-uuid)"

echo "check: writes through the plugin (aligned, sub-sector, cross-block," \
     "unaligned, the last bytes) read back, and match a raw model"
serve_copy "$child" "$tmp/model.raw"
test "$(stat -c %s "$tmp/model.raw")" -eq "$size"
cat > "$tmp/write.py" <<'EOF'
import os, random
rng = random.Random(4)
size = h.get_size()
MiB = 1024 * 1024
writes = [
    (0, b"\xa5" * 4096),                          # aligned page
    (12345, b"\x01"),                             # one byte inside a sector
    (2 * MiB - 300, rng.randbytes(1000)),         # crosses a 2 MiB block
    (5 * MiB + 511, rng.randbytes(70000)),        # unaligned, many sectors
    (9 * MiB + 7, rng.randbytes(3)),              # a few bytes mid-sector
    (size - 700, b"\x5a" * 700),                  # the disk's last bytes
    (12345 + 100, b"\x02" * 512),                 # beside the first byte
]
with open(os.environ["MODEL"], "r+b") as model:
    for off, data in writes:
        h.pwrite(data, off)
        model.seek(off)
        model.write(data)
    h.flush()
    for off, data in writes:
        model.seek(off)
        want = model.read(len(data))
        got = h.pread(len(data), off)
        assert got == want, "read back at %d differs" % off
        # and the sectors around each write, which must be untouched
        lo = max(0, (off // 512 - 1) * 512)
        hi = min(size, ((off + len(data)) // 512 + 2) * 512)
        model.seek(lo)
        assert h.pread(hi - lo, lo) == model.read(hi - lo), \
            "the sectors around %d differ" % off
print("wrote and read back %d ranges" % len(writes))
EOF
MODEL="$tmp/model.raw" nbdsh_script "$child" "$tmp/write.py"

echo "check: served again, the child opens and reads exactly the model"
serve_copy "$child" "$tmp/after.raw"
cmp "$tmp/model.raw" "$tmp/after.raw"
vhdtool info --json "$child" > "$tmp/info2.json"
test "$(json_field "$tmp/info2.json" parent-found-by)" = "W2ru locator"

echo "check: the parent file is byte-for-byte unchanged"
test "$(sha256sum < "$parent")" = "$parent_file_hash"
echo "check: the parent alone still reads the MANIFEST's hash"
test "$(serve_sha256 "$parent")" = \
     "$(manifest_field win8.vhd sha256_of_current_size_bytes)"

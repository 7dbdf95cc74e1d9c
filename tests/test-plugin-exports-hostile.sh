#!/usr/bin/env bash
# In a dir= server, a hostile image beside good ones fails only its own
# export, with the engine's message naming the file and the field; the
# good exports keep reading their recorded hashes before and after, and
# the list (taken without opening any export) still completes and names
# every image.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires nbdinfo --version
requires nbdcopy --version
requires xz --version
requires timeout --version
requires_nbdsh

tmp=$(scratch_dir)
dir=$tmp/images
mkdir "$dir"

decompress_sample win10-fixed.vhd "$dir" > /dev/null
decompress_sample qemu-small.vhd "$dir" > /dev/null
# A footer whose checksum does not match (a sample that must be refused).
decompress_sample bad-checksum.vhd "$dir" > /dev/null
# A BAT entry that puts block 0 far past the end of the file.
vhdtool create --dynamic 16M "$dir/bat-past-end.vhd"
/usr/bin/python3 - "$dir/bat-past-end.vhd" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(512)
    header = f.read(1024)
    assert header[:8] == b"cxsparse"
    bat = struct.unpack(">Q", header[16:24])[0]
    f.seek(bat)
    f.write(struct.pack(">I", 0x7fffff00))
PY
for name in win10-fixed.vhd qemu-small.vhd; do
  echo "$name $(manifest_field "$name" sha256_of_current_size_bytes)"
done > "$tmp/expected-hashes"
export tmp

cat > "$tmp/client.sh" <<'SH'
set -e
set -x
uri_of () { echo "nbd+unix:///$1?socket=$unixsocket"; }
good ()
{
  while read -r name expected; do
    sum=$(nbdcopy "$(uri_of "$name")" - | sha256sum)
    test "${sum%% *}" = "$expected"
  done < "$tmp/expected-hashes"
}

# The list alone (no export opened): every image, bad ones included.
unixsocket=$unixsocket timeout 60 /usr/bin/python3 - <<'PY'
import nbd, os
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_unix(os.environ["unixsocket"])
names = []
h.opt_list(lambda name, description: names.append(name) or 0)
h.opt_abort()
assert sorted(names) == ["bad-checksum.vhd", "bat-past-end.vhd",
                         "qemu-small.vhd", "win10-fixed.vhd"], names
PY

good
for bad in bad-checksum.vhd bat-past-end.vhd; do
  if nbdcopy "$(uri_of "$bad")" - > /dev/null; then
    echo "FAIL: hostile export $bad was served" >&2
    exit 1
  fi
  good
done
SH

# Guarded as a whole: a listing stuck in an open would hang nbdkit too.
timeout -k 10 300 nbdkit -U - "$VHDKIT_PLUGIN" dir="$dir" \
  --run 'unixsocket=$unixsocket bash "$tmp/client.sh"' \
  2> "$tmp/log" || { cat "$tmp/log"; exit 1; }
cat "$tmp/log"
grep -q "error: $dir/bad-checksum.vhd: .*checksum" "$tmp/log"
grep -q "error: .*bat-past-end.vhd: BAT: entry 0 .* past the end" "$tmp/log"
# Only the hostile exports failed.
if grep 'error:' "$tmp/log" | grep -vE 'bad-checksum.vhd|bat-past-end.vhd'; then
  echo "$0: FAIL: an error that is not the hostile images' (above)" >&2
  exit 1
fi

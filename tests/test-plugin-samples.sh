#!/usr/bin/env bash
# Every sample image that must open, served read-only by the plugin, reads
# back with the sha256 that MANIFEST.tsv records; the two 127 GiB empty
# disks (hashing them would read 127 GiB of zeros) instead show a single
# hole,zero extent and read zeros where sampled; and every sample that
# must be rejected stops nbdkit from starting with a clear message.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires nbdcopy --version
requires nbdinfo --version
requires sha256sum --version
requires xz --version

tmp=$(scratch_dir)
# All in one folder: win8-child.vhd finds its parent win8.vhd beside it.
for f in $(manifest_files); do
  decompress_sample "$f" "$tmp"
done

# Larger than this, a sample is checked by its extents, not its hash.
hash_limit=$((16 * 1024 * 1024 * 1024))

for f in $(manifest_files open); do
  img=$tmp/${f%.xz}
  size=$(manifest_field "$f" current_size)
  if [ "$size" -le $hash_limit ]; then
    want=$(manifest_field "$f" sha256_of_current_size_bytes)
    got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
            --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      echo "$0: $f: sha256 $got, MANIFEST.tsv says $want"
      exit 1
    fi
  else
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
      --run 'nbdinfo --map "$uri"' > "$tmp/map"
    cat "$tmp/map"
    # One line: offset 0, the whole size, type 3 = hole,zero.
    test "$(wc -l < "$tmp/map")" -eq 1
    read -r offset length type description < "$tmp/map"
    test "$offset" -eq 0
    test "$length" -eq "$size"
    test "$type" -eq 3
    test "$description" = "hole,zero"
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
      --run 'nbdsh -u "$uri" -c "
size = h.get_size()
assert size == '"$size"'
for offset in [0, 512 * 1024 * 1024 + 12345, size // 2, size - 65536]:
    assert h.pread(65536, offset) == bytes(65536), offset
"'
  fi
done

# reject:* samples: nbdkit must not start, and must say why.
check_reject ()
{
  local f=$1 pattern=$2
  if nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/${f%.xz}" readonly=true \
       --run true 2> "$tmp/err"; then
    echo "$0: $f: nbdkit started, but the image must be rejected"
    exit 1
  fi
  cat "$tmp/err"
  grep -qi -- "$pattern" "$tmp/err"
}
for f in $(manifest_files reject:checksum); do
  check_reject "$f" checksum
done
for f in $(manifest_files reject:parent-missing); do
  check_reject "$f" fat-parent.vhd
done
# Make sure that the reject rows were there at all.
test -n "$(manifest_files reject:checksum)"
test -n "$(manifest_files reject:parent-missing)"

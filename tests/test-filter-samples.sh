#!/usr/bin/env bash
# Every sample image that must open reads back through the filter (over
# nbdkit's file plugin) with the sha256 that MANIFEST.tsv records, the
# same as through the plugin; the two 127 GiB empty disks show one
# hole,zero extent; every sample that must be rejected fails the first
# connection with the plugin's message about the same field.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/filter-functions.sh"
set -e
set -x

requires_plugin
requires_filter
requires nbdcopy --version
requires nbdinfo --version
requires sha256sum --version
requires xz --version

tmp=$(scratch_dir)
# All in one folder, which is also the parent folder: win8-child.vhd
# finds its parent win8.vhd there.
for f in $(manifest_files); do
  decompress_sample "$f" "$tmp"
done

hash_limit=$((16 * 1024 * 1024 * 1024))
checked=0

for f in $(manifest_files open); do
  img=$tmp/${f%.xz}
  size=$(manifest_field "$f" current_size)
  if [ "$size" -le $hash_limit ]; then
    want=$(manifest_field "$f" sha256_of_current_size_bytes)
    got=$(sha_through_filter "$img" parent-dir="$tmp")
    if [ "$got" != "$want" ]; then
      echo "$0: $f: sha256 through the filter $got, MANIFEST.tsv says $want"
      exit 1
    fi
  else
    nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$img" \
      --run 'nbdinfo --map "$uri"' > "$tmp/map"
    cat "$tmp/map"
    test "$(wc -l < "$tmp/map")" -eq 1
    read -r offset length type description < "$tmp/map"
    test "$offset" -eq 0
    test "$length" -eq "$size"
    test "$description" = "hole,zero"
  fi
  checked=$((checked + 1))
done
test "$checked" -gt 3

# Every VHDX sample too, the dirty-log ones read with their log replayed
# in memory (the file plugin below is read-only here).
checked=0
for f in $(vhdx_manifest_files open); do
  img=$(decompress_vhdx_sample "$f" "$tmp")
  want=$(vhdx_manifest_field "$f" sha256_of_virtual_disk)
  got=$(sha_through_filter "$img")
  if [ "$got" != "$want" ]; then
    echo "$0: $f: sha256 through the filter $got, MANIFEST.tsv says $want"
    exit 1
  fi
  rm -f "$img"
  checked=$((checked + 1))
done
test "$checked" -ge 10

# A rejected image: nbdkit starts (the filter cannot read the image before
# a client connects), the connection fails, and the log says why, as the
# plugin's start-up failure does.
check_reject ()
{
  local f=$1 pattern=$2 plugin_says filter_says
  if nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/${f%.xz}" readonly=true \
       --run true 2> "$tmp/plugin.err"; then
    echo "$0: $f: the plugin started, but the image must be rejected"
    exit 1
  fi
  if nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$tmp/${f%.xz}" \
       --run 'nbdinfo "$uri"' > /dev/null 2> "$tmp/filter.err"; then
    echo "$0: $f: a client connected through the filter, but the image" \
         "must be rejected"
    exit 1
  fi
  cat "$tmp/plugin.err" "$tmp/filter.err"
  grep -qi -- "$pattern" "$tmp/filter.err"
  plugin_says=$(error_text "$tmp/plugin.err" "$tmp/${f%.xz}")
  filter_says=$(error_text "$tmp/filter.err" "the plugin's disk")
  test -n "$filter_says"
  if [ "$plugin_says" != "$filter_says" ]; then
    echo "$0: $f: the filter says '$filter_says'," \
         "the plugin '$plugin_says'"
    exit 1
  fi
}
for f in $(manifest_files reject:checksum); do
  check_reject "$f" checksum
done
test -n "$(manifest_files reject:checksum)"

#!/usr/bin/env bash
# Every sample image that must open converts to a dynamic image, and to a
# fixed one where it is 1 GiB or smaller, that reads back (through the
# plugin) with the sha256 that MANIFEST.tsv records.  The two 127 GiB
# empty disks convert to dynamic images of a few hundred KiB with no block
# allocated.  A sample under the 3 MiB minimum converts with a size that
# extends it (create --source SRC 3M): its bytes, then zeros.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires sha256sum --version
requires xz --version

tmp=$(scratch_dir)
out=$(scratch_dir)
# All in one folder: win8-child.vhd finds its parent win8.vhd beside it.
for f in $(manifest_files open); do
  decompress_sample "$f" "$tmp"
done

min=$((3 * 1024 * 1024))
fixed_limit=$((1024 * 1024 * 1024))
hash_limit=$((16 * 1024 * 1024 * 1024))

# sha256 of the first N bytes of IMAGE, read through the plugin.
image_sha256 ()
{
  local img=$1 n=$2
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdcopy "$uri" -' | head -c "$n" | sha256sum | cut -d' ' -f1
}

# The rest of IMAGE, from byte N on, reads as zeros.
check_zero_tail ()
{
  local img=$1 n=$2
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdcopy "$uri" -' | tail -c +$((n + 1)) | cmp - /dev/zero 2>&1 |
    grep -q EOF
}

converted=0
for f in $(manifest_files open); do
  name=${f%.xz}
  src=$tmp/$name
  size=$(manifest_field "$f" current_size)
  types=dynamic
  [ "$size" -le $fixed_limit ] && types="dynamic fixed"
  for type in $types; do
    dst=$out/$name.$type.vhd
    if [ "$size" -ge $min ]; then
      vhdtool convert -O "$type" "$src" "$dst"
      test "$(info_field "$dst" virtual-size)" -eq "$size"
    else
      # Too small for a VHD of its own size: convert says how to do it.
      if vhdtool convert -O "$type" "$src" "$dst" 2> "$out/err"; then
        echo "$0: $name: a disk under 3 MiB was converted as it is"
        exit 1
      fi
      cat "$out/err"
      grep -q "under the minimum" "$out/err"
      grep -q "create --source" "$out/err"
      test ! -e "$dst"
      vhdtool create --source "$src" --"$type" 3M "$dst"
      check_zero_tail "$dst" "$size"
    fi
    test "$(info_field "$dst" type)" = "$type"
    if [ "$size" -le $hash_limit ]; then
      want=$(manifest_field "$f" sha256_of_current_size_bytes)
      got=$(image_sha256 "$dst" "$size")
      if [ "$got" != "$want" ]; then
        echo "$0: $name -> $type: sha256 $got, MANIFEST.tsv says $want"
        exit 1
      fi
    else
      # The 127 GiB empty disks: no block, a BAT and little else.
      test "$(info_field "$dst" allocated-blocks)" -eq 0
      test "$(stat -c %s "$dst")" -lt $((512 * 1024))
    fi
    converted=$((converted + 1))
    rm -f "$dst"
  done
done
# Make sure that the samples were there at all.
test $converted -ge 20

#!/usr/bin/env bash
# vhdtool create makes VHDX images that other readers take as they are:
# for fixed and dynamic disks, every block size from the default (32 MiB)
# to 256 MiB, and sizes from the 3 MiB minimum to one that is no multiple
# of any block size, qemu-img reports the requested virtual size and the
# block size as its cluster size and checks the image clean, and libvhdi
# (vhdiinfo) reads its size.  A fixed VHDX has all its space allocated
# and every block FULLY_PRESENT; a 64 TiB dynamic VHDX takes a few MiB.
# The format comes from the extension, or --format.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires qemu-img --version
requires vhdiinfo -V
requires jq --version
requires filefrag -V

tmp=$(scratch_dir)

# KiB of FILE in [START, END) that have space on disk (filefrag's
# extents, in KiB units; unwritten extents from fallocate count: they are
# allocated, only not yet written).
allocated_in ()
{
  filefrag -e -b1024 "$1" | awk -v start=$(($2 / 1024)) -v end=$(($3 / 1024)) '
    $1 ~ /^[0-9]+:$/ {
      split ($0, f, ":"); split (f[2], r, "[. ]+")
      a = r[2] + 0; b = r[3] + 1
      if (a < start) a = start; if (b > end) b = end
      if (b > a) sum += b - a
    }
    END { printf "%.0f\n", sum }'
}
j () { jq -r "$2" "$1"; }

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
sizes="$((3 * MiB)) $GiB $((10 * GiB + 4096))"

for type in dynamic fixed; do
  for bs in 0 1M 2M 256M; do
    case $bs in
      0) want_bs=$((32 * MiB)) ;;
      *M) want_bs=$((${bs%M} * MiB)) ;;
    esac
    for size in $sizes; do
      img=$tmp/$type-$bs-$size.vhdx
      vhdtool create --$type --block-size $bs $size "$img"

      qemu-img info -f vhdx --output=json "$img" > "$tmp/q.json"
      test "$(j "$tmp/q.json" '."virtual-size"')" = $size
      test "$(j "$tmp/q.json" '."cluster-size"')" = $want_bs
      qemu-img check -f vhdx "$img"
      vhdiinfo "$img" > "$tmp/vhdiinfo.txt"
      grep -q "($size bytes)" "$tmp/vhdiinfo.txt"

      vhdtool info --json "$img" > "$tmp/info.json"
      test "$(j "$tmp/info.json" .format)" = VHDX
      test "$(j "$tmp/info.json" .type)" = $type
      test "$(j "$tmp/info.json" '."block-size"')" = $want_bs
      blocks=$(( (size + want_bs - 1) / want_bs ))
      test "$(j "$tmp/info.json" '."max-table-entries"')" = $blocks
      states=$(j "$tmp/info.json" '.vhdx."block-states"
                                   | to_entries | map("\(.key)=\(.value)")
                                   | join(" ")')
      if [ $type = fixed ]; then
        test "$states" = "not-present=0 undefined=0 zero=0 unmapped=0 fully-present=$blocks partially-present=0"
        # No holes where the blocks are (the file's last blocks * block
        # size bytes).
        fsize=$(stat -c %s "$img")
        test "$(allocated_in "$img" $((fsize - blocks * want_bs)) $fsize)" \
             = $((blocks * want_bs / 1024))
      else
        test "$states" = "not-present=$blocks undefined=0 zero=0 unmapped=0 fully-present=0 partially-present=0"
      fi
      rm -f "$img"
    done
  done
done

# The largest dynamic VHDX is metadata only.
vhdtool create 64T "$tmp/huge.vhdx"
test "$(du -k "$tmp/huge.vhdx" | cut -f1)" -lt $((24 * 1024))
qemu-img info -f vhdx --output=json "$tmp/huge.vhdx" > "$tmp/q.json"
test "$(j "$tmp/q.json" '."virtual-size"')" = $((64 * 1024 * GiB))
qemu-img check -f vhdx "$tmp/huge.vhdx"

# The extension picks the format; --format overrides it.
vhdtool create 3M "$tmp/plain.vhd"
vhdtool create --format vhdx 3M "$tmp/forced.img"
vhdtool create --format vhd 3M "$tmp/forced-vhd.vhdx"
test "$(vhdtool info --json "$tmp/plain.vhd" | jq -r .format)" = VHD
test "$(vhdtool info --json "$tmp/forced.img" | jq -r .format)" = VHDX
qemu-img check -f vhdx "$tmp/forced.img"
test "$(vhdtool info --json "$tmp/forced-vhd.vhdx" | jq -r .format)" = VHD
qemu-img info -f vpc "$tmp/forced-vhd.vhdx"

# Block sizes VHDX cannot have are refused by the library, saying why.
for bs in 3M 512K 512M; do
  status=0
  vhdtool create --block-size $bs 1G "$tmp/bad.vhdx" 2> "$tmp/err" || \
    status=$?
  cat "$tmp/err"
  test $status = 1
  grep -q "power of two from 1 MiB to 256 MiB" "$tmp/err"
  test ! -e "$tmp/bad.vhdx"
done
status=0
vhdtool create --format qcow2 1G "$tmp/bad.vhdx" 2> "$tmp/err" || status=$?
test $status = 2

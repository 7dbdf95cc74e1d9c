#!/usr/bin/env bash
# vhdtool info opens every sample image that other writers made (Windows,
# Hyper-V, Virtual PC, Disk2vhd, VirtualBox, XenServer, mkimg, qemu) and
# reports the type and size that MANIFEST.tsv records; it refuses the two
# images whose every footer copy has a bad checksum; and it shows an
# orphaned differencing disk while saying which parent it could not find.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires xz --version
requires python3 --version

samples=$(samples_dir)
tmp=$(scratch_dir)
declare -A type_names=([2]=fixed [3]=dynamic [4]=differencing)

# Differencing samples whose parent is a sample too: the parent is put
# beside the child first.
declare -A parent_of=([win8-child.vhd]=win8.vhd)

n_open=0
for xzname in $(manifest_files open); do
  name=${xzname%.xz}
  dir=$tmp/$name.d
  mkdir "$dir"
  img=$(decompress_sample "$name" "$dir")
  if [ -n "${parent_of[$name]:-}" ]; then
    decompress_sample "${parent_of[$name]}" "$dir" >/dev/null
  fi

  vhdtool info --json "$img" > "$dir/info.json"
  cat "$dir/info.json"
  want_type=${type_names[$(manifest_field "$name" type)]}
  want_size=$(manifest_field "$name" current_size)
  got_type=$(json_field "$dir/info.json" type)
  got_size=$(json_field "$dir/info.json" virtual-size)
  if [ "$got_type" != "$want_type" ] || [ "$got_size" != "$want_size" ]; then
    echo "$0: $name: vhdtool says $got_type, $got_size bytes;" \
         "MANIFEST.tsv says $want_type, $want_size bytes"
    exit 1
  fi
  if [ "$want_type" = differencing ]; then
    # The parent must have been found (through the relative locator).
    test "$(json_field "$dir/info.json" parent.uuid)" = \
         "$(json_field "$dir/info.json" parent-uuid)"
  fi
  # The text form works for every image too.
  vhdtool info "$img" > "$dir/info.txt"
  grep -q "^virtual size: $want_size\$" "$dir/info.txt"
  echo "checked: $name opens as $got_type, $got_size bytes"
  rm -rf "$dir"
  n_open=$((n_open + 1))
done
test "$n_open" -gt 0

n_reject=0
for xzname in $(manifest_files reject:checksum); do
  name=${xzname%.xz}
  dir=$tmp/$name.d
  mkdir "$dir"
  img=$(decompress_sample "$name" "$dir")
  status=0
  vhdtool info --json "$img" > "$dir/out" 2> "$dir/err" || status=$?
  cat "$dir/out" "$dir/err"
  if [ "$status" -ne 1 ]; then
    echo "$0: $name: exit status $status, expected 1 (bad checksum)"
    exit 1
  fi
  if ! grep -qi checksum "$dir/err"; then
    echo "$0: $name: the error does not mention the checksum"
    exit 1
  fi
  echo "checked: $name is refused for its checksum"
  rm -rf "$dir"
  n_reject=$((n_reject + 1))
done
test "$n_reject" -eq 2

# win10-diff-orphan.vhd's parent, fat-parent.vhd, is not among the samples.
for xzname in $(manifest_files reject:parent-missing); do
  name=${xzname%.xz}
  dir=$tmp/$name.d
  mkdir "$dir"
  img=$(decompress_sample "$name" "$dir")
  status=0
  vhdtool info --json "$img" > "$dir/info.json" 2> "$dir/err" || status=$?
  cat "$dir/info.json" "$dir/err"
  # The image itself is fine, so info shows it (status 0) ...
  test "$status" -eq 0
  test "$(json_field "$dir/info.json" type)" = differencing
  test "$(json_field "$dir/info.json" virtual-size)" = \
       "$(manifest_field "$name" current_size)"
  # ... with no parent, and says which one it looked for.
  if json_field "$dir/info.json" parent >/dev/null 2>&1; then
    echo "$0: $name: a parent was found, but none is there"
    exit 1
  fi
  parent_error=$(json_field "$dir/info.json" parent-error)
  case "$parent_error" in
    *fat-parent*) ;;
    *) echo "$0: $name: parent-error '$parent_error' does not name" \
            "fat-parent.vhd"
       exit 1 ;;
  esac
  echo "checked: $name shows, its parent unresolved: $parent_error"
  rm -rf "$dir"
done

#!/usr/bin/env bash
# Every VHDX sample that must open (samples/vhdx/MANIFEST.tsv) reads back
# through the plugin with its recorded sha256: read-only, which for the
# two dirty-log images means the log replayed in memory, with the file
# left byte for byte as it was; and read-write, which replays the log
# into the file, after which qemu-img (which refuses a dirty log) checks
# the file clean and reads the same bytes.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires nbdcopy --version
requires sha256sum --version
requires xz --version
requires qemu-img --version

tmp=$(scratch_dir)
files=$(vhdx_manifest_files open)
test -n "$files"
for f in $files; do
  img=$(decompress_vhdx_sample "$f" "$tmp")
  want=$(vhdx_manifest_field "$f" sha256_of_virtual_disk)
  before=$(sha256sum < "$img")

  got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$want"
  # A read-only open never writes, not even a log replay.
  test "$(sha256sum < "$img")" = "$before"

  got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$want"
  qemu-img check -f vhdx "$img"
  got=$(qemu-img convert -f vhdx -O raw "$img" "$tmp/raw" &&
        sha256sum < "$tmp/raw" | cut -d' ' -f1)
  test "$got" = "$want"
  rm -f "$img" "$tmp/raw"
done

# A reader that skipped the log would read what the notes name instead:
# the dirty-log images must really have needed the replay.
for f in qemu-iotest-dirtylog-10G-4M.vhdx discutils-vhdx-log-replay.vhdx; do
  img=$(decompress_vhdx_sample "$f" "$tmp")
  ! qemu-img info -f vhdx "$img" > /dev/null 2>&1 || \
    ! qemu-img check -f vhdx "$img" > /dev/null 2>&1
  rm -f "$img"
done

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
requires nbdinfo --version

tmp=$(scratch_dir)
files=$(vhdx_manifest_files open)
test -n "$files"
dirty="qemu-iotest-dirtylog-10G-4M.vhdx discutils-vhdx-log-replay.vhdx"
for f in $files; do
  img=$(decompress_vhdx_sample "$f" "$tmp")
  want=$(vhdx_manifest_field "$f" sha256_of_virtual_disk)
  before=$(sha256sum < "$img")

  got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$want"
  # A read-only open never writes, not even a log replay.
  test "$(sha256sum < "$img")" = "$before"

  case " $dirty " in
    *" ${f%.xz} "*)
      # A reader that skipped the log would fail: qemu refuses it as is.
      if qemu-img check -f vhdx "$img"; then
        echo "$0: $f: qemu-img checks it clean before the replay" >&2
        exit 1
      fi
      # Read-write: the log replayed into the file, which then reads the
      # same, and which qemu-img checks clean and reads the same too.
      got=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
              --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
      test "$got" = "$want"
      test "$(sha256sum < "$img")" != "$before"
      qemu-img check -f vhdx "$img"
      got=$(qemu-img convert -f vhdx -O raw "$img" "$tmp/raw" &&
            sha256sum < "$tmp/raw" | cut -d' ' -f1)
      test "$got" = "$want"
      ;;
    *)
      # A read-write open and close of a clean image leaves it clean for
      # qemu-img (no stale log, headers valid).
      nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run 'nbdinfo "$uri"' \
        > /dev/null
      qemu-img check -f vhdx "$img"
      ;;
  esac
  rm -f "$img" "$tmp/raw"
done

# vhdkit: helpers for the filter's shell tests (test-filter-*.sh), sourced
# after functions.sh and plugin-functions.sh.

# error_text LOG NAME
#
# The first error message in nbdkit's LOG, with NAME (the image's name in
# it) replaced by IMAGE: the plugin names the file, the filter the export
# ("the plugin's disk" for the default export), and the rest of the
# message (the field and what is wrong with it) must be the same.
error_text ()
{
  local log=$1 name=$2
  sed -nE 's/^nbdkit: ([^ :]+: )?error: //p' "$log" | head -n 1 |
    NAME=$name python3 -c '
import os, sys
sys.stdout.write(sys.stdin.read().replace(os.environ["NAME"], "IMAGE"))'
}

# sha_through_filter IMG [ARGS...]
#
# The sha256 of the disk inside IMG, read read-only through the filter
# over nbdkit's file plugin (ARGS go to the filter, e.g. parent-dir=).
sha_through_filter ()
{
  local img=$1
  shift
  nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$img" "$@" \
    --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1
}

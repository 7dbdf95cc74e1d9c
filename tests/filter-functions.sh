# vhdkit: helpers for the filter's shell tests (test-filter-*.sh), sourced
# after functions.sh and plugin-functions.sh.

# filter_error_tail LOG
#
# The part of nbdkit's error lines in LOG after the image's name: the
# plugin names the file, the filter the export, and the rest of the
# message (the field and what is wrong with it) must be the same.
filter_error_tail ()
{
  sed -n 's/^nbdkit: [^:]*: error: //p' "$1" |
    sed -E 's#^(/[^:]*|the plugin'"'"'s disk|[^ :]+): ##' | head -n 1
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

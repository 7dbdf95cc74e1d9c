# vhdkit: helpers for the shell tests.  A test starts with
#
#   source "$VHDKIT_SRCDIR/functions.sh"
#   set -e
#   set -x
#
# make check sets VHDKIT_SRCDIR (this folder), VHDKIT_BUILDDIR,
# VHDKIT_SAMPLES (../shared/samples beside the checkout), VHDKIT_PLUGIN
# (the built nbdkit plugin) and puts the built tools/ first on PATH.
#
# Exit status of a test, as the automake harness reads it: 0 passed,
# 77 skipped (something it needs is not installed), anything else failed.
# Every skip goes through skip (below), so that VHDKIT_REQUIRE=all (which
# scripts/check exports under CI=true) turns it into a failure.

# Run by hand (not under make check), find things relative to this file.
: "${VHDKIT_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
: "${VHDKIT_SAMPLES:=$VHDKIT_SRCDIR/../../shared/samples}"

# skip REASON...
#
# This test cannot run here, for REASON: exit 77 (skipped).  Under
# VHDKIT_REQUIRE=all (CI installs everything, so nothing may skip there)
# fail instead, with the reason.  Call it from the test's own shell, not
# from a $(...) subshell, whose exit would only end the subshell.
skip ()
{
  case "${VHDKIT_REQUIRE:-}" in
    all)
      echo "$0: FAIL: $* (VHDKIT_REQUIRE=all: no test may skip)" >&2
      exit 1 ;;
    '') ;;
    *)
      echo "$0: FAIL: VHDKIT_REQUIRE='$VHDKIT_REQUIRE': the only value is" \
           "'all' (or unset); the test would skip: $*" >&2
      exit 1 ;;
  esac
  echo "$0: $*: skipping this test"
  exit 77
}

# skip_part REASON...
#
# Part of this test cannot run here, for REASON: say so and return (the
# caller leaves that part out and goes on).  Under VHDKIT_REQUIRE=all fail
# the whole test instead, as skip does:
#   if have_it; then the_part; else skip_part "no such thing"; fi
skip_part ()
{
  if [ -n "${VHDKIT_REQUIRE:-}" ]; then
    skip "$* (a part of this test)"
  fi
  echo "$0: $*: that part of this test is left out"
}

# requires CMD [ARGS...]
#
# Skip the test unless CMD ARGS runs successfully, for instance
# 'requires qemu-img --version'.  With no ARGS, CMD only has to be on PATH.
requires ()
{
  if [ $# -eq 1 ]; then
    if ! command -v "$1" >/dev/null 2>&1; then
      skip "'$1' is not installed"
    fi
  elif ! "$@" >/dev/null 2>&1; then
    skip "'$*' failed"
  fi
}

# requires_plugin
#
# Skip unless nbdkit is installed and can load the vhd plugin just built.
requires_plugin ()
{
  requires nbdkit --version
  if [ -z "${VHDKIT_PLUGIN:-}" ] || [ ! -f "$VHDKIT_PLUGIN" ]; then
    skip "the vhd plugin is not built (VHDKIT_PLUGIN=${VHDKIT_PLUGIN:-})"
  fi
  requires nbdkit "$VHDKIT_PLUGIN" --dump-plugin
}

# requires_filter
#
# Skip unless nbdkit is installed and can load the vhd filter just built
# (over its file plugin, which every nbdkit has).
requires_filter ()
{
  requires nbdkit --version
  if [ -z "${VHDKIT_FILTER:-}" ] || [ ! -f "$VHDKIT_FILTER" ]; then
    skip "the vhd filter is not built (VHDKIT_FILTER=${VHDKIT_FILTER:-})"
  fi
  requires nbdkit --filter="$VHDKIT_FILTER" file --dump-plugin
}

# cleanup_fn CMD [ARGS...]
#
# Run CMD ARGS when the test exits, however it exits (last registered runs
# first).  The exit status of the test is kept.
_vhdkit_cleanup_hooks=()

cleanup_fn ()
{
  local quoted
  printf -v quoted '%q ' "$@"
  _vhdkit_cleanup_hooks+=("$quoted")
}

_vhdkit_run_cleanup_hooks ()
{
  local status=$? i
  set +e
  trap '' INT QUIT TERM EXIT
  for (( i = ${#_vhdkit_cleanup_hooks[@]} - 1; i >= 0; i-- )); do
    eval "${_vhdkit_cleanup_hooks[i]}"
  done
  exit $status
}
trap _vhdkit_run_cleanup_hooks INT QUIT TERM EXIT

# Every scratch folder of a test lives under one root, made here in the
# test's own shell so that its removal is registered even when scratch_dir
# runs in a subshell.
_vhdkit_scratch_root=$(mktemp -d "${TMPDIR:-/tmp}/vhdkit-test.XXXXXXXX")
cleanup_fn rm -rf "$_vhdkit_scratch_root"

# scratch_dir
#
# Make a private temporary folder, removed when the test exits, and print
# its name: tmp=$(scratch_dir)
scratch_dir ()
{
  mktemp -d "$_vhdkit_scratch_root/scratch.XXXXXX"
}

# samples_dir
#
# Print the folder of sample images.  Missing samples fail the test rather
# than skip it: they are part of the repository's contract
# (../shared/samples beside the checkout, or $VHDKIT_SAMPLES).
samples_dir ()
{
  if [ ! -f "$VHDKIT_SAMPLES/MANIFEST.tsv" ] || \
     [ ! -d "$VHDKIT_SAMPLES/images" ]; then
    echo "$0: the sample images are missing: no $VHDKIT_SAMPLES/MANIFEST.tsv" \
         "or $VHDKIT_SAMPLES/images (set VHDKIT_SAMPLES)" >&2
    return 1
  fi
  echo "$VHDKIT_SAMPLES"
}

# decompress_sample NAME DESTDIR
#
# Decompress sample NAME (as MANIFEST.tsv names it, with or without .xz)
# into DESTDIR/NAME-without-.xz, and print that path.
decompress_sample ()
{
  local name=${1%.xz} dest=$2 samples
  samples=$(samples_dir) || return 1
  if [ ! -f "$samples/images/$name.xz" ]; then
    echo "$0: no sample $samples/images/$name.xz" >&2
    return 1
  fi
  xz -dc "$samples/images/$name.xz" > "$dest/$name"
  echo "$dest/$name"
}

# manifest_field NAME COLUMN
#
# Print one field of MANIFEST.tsv: the row whose file is NAME (with or
# without .xz), the column named COLUMN in the header line (file, type,
# creator, current_size, chs_size, expect, sha256_of_current_size_bytes,
# source_repo, source_path).  Fails if there is no such row or column.
manifest_field ()
{
  local samples
  samples=$(samples_dir) || return 1
  awk -F '\t' -v name="${1%.xz}.xz" -v column="$2" '
    NR == 1 {
      sub(/^# */, "")
      for (i = 1; i <= NF; i++)
        if ($i == column)
          col = i
      if (!col) {
        print "manifest_field: no column " column > "/dev/stderr"
        exit 1
      }
      next
    }
    $1 == name { print $col; found = 1; exit }
    END {
      if (col && !found) {
        print "manifest_field: no row " name > "/dev/stderr"
        exit 1
      }
    }
  ' "$samples/MANIFEST.tsv"
}

# manifest_files [EXPECT]
#
# Print the file names (with .xz) in MANIFEST.tsv, one a line; with EXPECT,
# only the rows whose expect column is exactly that.
manifest_files ()
{
  local samples
  samples=$(samples_dir) || return 1
  awk -F '\t' -v expect="${1:-}" '
    /^#/ { next }
    expect == "" || $6 == expect { print $1 }
  ' "$samples/MANIFEST.tsv"
}

# vhdx_manifest_files [EXPECT]
#
# The VHDX samples (samples/vhdx/MANIFEST.tsv), all or those whose expect
# column is EXPECT (open, open-with-standin-parent, parent-only).
vhdx_manifest_files ()
{
  local samples
  samples=$(samples_dir) || return 1
  awk -F '\t' -v expect="${1:-}" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == "expect") col = i; next }
    expect == "" || $col == expect { print $1 }
  ' "$samples/vhdx/MANIFEST.tsv"
}

# vhdx_manifest_field NAME COLUMN
#
# One field of samples/vhdx/MANIFEST.tsv (file, kind, creator,
# virtual_size, block_size, logical_sector_size, expect,
# sha256_of_virtual_disk, ...).
vhdx_manifest_field ()
{
  local samples
  samples=$(samples_dir) || return 1
  awk -F '\t' -v name="${1%.xz}.xz" -v column="$2" '
    NR == 1 {
      sub(/^# */, "")
      for (i = 1; i <= NF; i++) if ($i == column) col = i
      if (!col) { print "vhdx_manifest_field: no column " column > "/dev/stderr"; exit 1 }
      next
    }
    $1 == name { print $col; found = 1; exit }
    END { if (col && !found) { print "vhdx_manifest_field: no row " name > "/dev/stderr"; exit 1 } }
  ' "$samples/vhdx/MANIFEST.tsv"
}

# decompress_vhdx_sample NAME DESTDIR
#
# Decompress VHDX sample NAME into DESTDIR (without .xz); print the path.
decompress_vhdx_sample ()
{
  local name=${1%.xz} dest=$2 samples
  samples=$(samples_dir) || return 1
  xz -dc "$samples/vhdx/$name.xz" > "$dest/$name" || return 1
  echo "$dest/$name"
}

# json_field FILE KEY[.KEY...]
#
# Print one value from a JSON document (vhdtool info --json,
# qemu-img info --output=json), following nested keys with dots.  Strings
# print bare, true/false as true/false, a missing key fails.
json_field ()
{
  python3 - "$1" "$2" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    v = json.load(f)
for k in sys.argv[2].split("."):
    if not isinstance(v, dict) or k not in v:
        sys.exit("json_field: no key %r in %s" % (sys.argv[2], sys.argv[1]))
    v = v[k]
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (dict, list)):
    print(json.dumps(v))
else:
    print(v)
PY
}

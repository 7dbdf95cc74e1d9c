#!/usr/bin/env bash
# vhdtool create refuses sizes and block sizes that CreateVirtualDisk
# refuses (and sizes that are not sizes at all): each fails with a
# message, exit status 1 (refused) or 2 (usage), and creates no file.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

tmp=$(scratch_dir)
cd "$tmp"

# refused ARGS...: vhdtool create ARGS new.vhd fails cleanly, no new.vhd.
refused ()
{
  local status=0
  vhdtool create "$@" new.vhd 2> err || status=$?
  cat err
  case "$status" in
    1|2) ;;
    0) echo "$0: create $* succeeded"; exit 1 ;;
    *) echo "$0: create $*: exit status $status (crashed?)"; exit 1 ;;
  esac
  if [ ! -s err ]; then
    echo "$0: create $* failed without a message"
    exit 1
  fi
  if [ -e new.vhd ] || [ -n "$(ls -A | grep -v '^err$')" ]; then
    echo "$0: create $* left files behind:"; ls -la
    exit 1
  fi
  echo "checked: create $* refused with status $status"
}

# Under the 3 MiB minimum.
refused --dynamic 2M
refused --fixed 2M
refused --dynamic 0
# Not a multiple of the 512-byte sector.
refused --dynamic 1000000001
refused --fixed 1000000001
# Over the 2040 GiB maximum (only dynamic: a fixed one that slipped
# through would try to allocate 3 TB).
refused --dynamic 3000G
refused --dynamic 2041G
# Not sizes.
refused --dynamic junk
refused --dynamic 10X
refused --dynamic 1.5G
refused --dynamic ''
refused --dynamic 99999999999999999999T
# Block sizes other than 512 KiB and 2 MiB.
refused --dynamic --block-size 1M 100M
refused --dynamic --block-size 4M 100M
refused --dynamic --block-size junk 100M
# Contradictions and missing arguments.
refused --fixed --dynamic 100M
refused --dynamic
refused --parent no-such-parent.vhd
refused --uuid not-a-uuid 100M

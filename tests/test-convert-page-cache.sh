#!/usr/bin/env bash
# vhdtool convert (and create --source) leaves neither its target nor the
# part of its source that it read itself in the page cache, and keeps the
# source's pages that were cached before it started.  An image left
# cached in the large folios of a sequential write serves random 4 KiB
# writes at a third of the rate of the same file uncached (scripts/bench,
# row pagecache).  fincore (util-linux) is the oracle.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/convert-functions.sh"
set -e
set -x

requires fincore --version
requires python3 --version
requires qemu-img --version

tmp=$(scratch_dir)
# tmpfs keeps every page in memory: there is no cache to drop.
case $(stat -f -c %T "$tmp") in
  tmpfs|ramfs) skip "the scratch folder $tmp is on $(stat -f -c %T "$tmp")" ;;
esac

size=$((48 * 1024 * 1024))
limit=$((1024 * 1024))
make_half_zero_raw "$tmp/src.raw" $size 11

cached ()
{
  fincore --bytes --noheadings --output RES "$1" | tr -d ' '
}

# drop_cache FILE: write it out and drop its pages, as if cold.
drop_cache ()
{
  python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
  test "$(cached "$1")" -eq 0
}

# Whether this kernel tells what a file holds in the cache (cachestat,
# Linux 6.5): without it, convert leaves the source's cache as it is.
kernel_has_cachestat ()
{
  python3 - "$1" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
rng = (ctypes.c_uint64 * 2)(0, 0)
cs = (ctypes.c_uint64 * 5)()
nr = 561 if os.uname().machine == "alpha" else 451
sys.exit(0 if libc.syscall(nr, fd, rng, cs, 0) == 0 else 1)
PY
}
source_drop=yes
kernel_has_cachestat "$tmp/src.raw" || source_drop=no

for type in fixed dynamic; do
  # A cold source: convert reads it all, and drops what it read.
  drop_cache "$tmp/src.raw"
  vhdtool convert -O $type "$tmp/src.raw" "$tmp/$type.vhd"
  test "$(cached "$tmp/$type.vhd")" -le $limit
  if [ $source_drop = yes ]; then
    test "$(cached "$tmp/src.raw")" -le $limit
  fi
done
if [ $source_drop = no ]; then
  skip_part "this kernel has no cachestat (Linux 6.5): the source's cache is not checked"
fi

# A source cached by its user before convert stays cached.
cat "$tmp/src.raw" > /dev/null
test "$(cached "$tmp/src.raw")" -eq $size
vhdtool create --source "$tmp/src.raw" --fixed "$tmp/created.vhd"
test "$(cached "$tmp/created.vhd")" -le $limit
test "$(cached "$tmp/src.raw")" -eq $size

# Dropping the cache lost nothing: the images read back as the source.
for img in fixed dynamic created; do
  qemu-img compare -f vpc -F raw "$tmp/$img.vhd" "$tmp/src.raw"
done

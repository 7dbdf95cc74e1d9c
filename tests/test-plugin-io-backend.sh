#!/usr/bin/env bash
# Which system calls move the data: a request that maps to one file
# segment is one pread/pwrite (a buffered write submitted through io_uring
# is punted to a kernel worker thread, which costs more than the call it
# replaces), and a request of several segments (here: a read across a
# block boundary, whose two blocks lie apart in the file) goes to the
# thread's io_uring as one batch, unless VHDKIT_IO=pread.  strace counts
# io_uring_enter and the 4 KiB preads and pwrites of the engine.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires strace -V
# ptrace may be forbidden (a container without CAP_SYS_PTRACE).
requires strace -f -o /dev/null true

tmp=$(scratch_dir)
img=$tmp/disk.vhd
block=$((2 * 1024 * 1024))

vhdtool create --dynamic --block-size "$block" 8M "$img"
# Allocate block 1 before block 0: the file holds them in that order, so
# a read across their boundary is two segments apart in the file.
fill="h.pwrite(b'\\x11' * $block, $block); h.pwrite(b'\\x22' * $block, 0)"
fill=$fill nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh -u "$uri" -c "$fill" -c "h.flush()"'
test "$(json_field <(vhdtool info --json "$img") allocated-blocks)" = 2

# serve_traced NAME NBDSH_CODE [ENV...]: serve the image under strace and
# run NBDSH_CODE against it; the trace is $tmp/NAME.strace.
serve_traced ()
{
  local name=$1 code=$2
  shift 2
  env "$@" strace -f -o "$tmp/$name.strace" \
    -e trace=io_uring_enter,pread64,pwrite64 \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
    --run "nbdsh -u \"\$uri\" -c '$code'"
}

# count NAME REGEX: how many lines of the trace match.
count ()
{
  grep -cE "$2" "$tmp/$1.strace" || true
}

data_pread='pread64\([0-9]+, .*, 4096, [0-9]+\) += 4096'
data_pwrite='pwrite64\([0-9]+, .*, 4096, [0-9]+\) += 4096'

# One segment each: a 4 KiB read and a 4 KiB write inside block 0.
serve_traced single '
assert h.pread(4096, 8192) == b"\x22" * 4096
h.pwrite(b"\x33" * 4096, 8192)
h.flush()
'
test "$(count single 'io_uring_enter')" -eq 0
test "$(count single "$data_pread")" -ge 1
test "$(count single "$data_pwrite")" -ge 1

# Two segments: 8 KiB across the boundary of blocks 0 and 1.
cross="assert h.pread(8192, $block - 4096) == b\"\\x22\" * 4096 + b\"\\x11\" * 4096"
uring=$(nbdkit "$VHDKIT_PLUGIN" --dump-plugin | sed -n 's/^vhd_io_uring=//p')
if [ "$uring" = yes ]; then
  serve_traced cross "$cross"
  test "$(count cross 'io_uring_enter')" -ge 1
  test "$(count cross "$data_pread")" -eq 0
else
  # A kernel or container without io_uring: the pread path below is all
  # that can be checked, which must not pass for a test of the ring on CI.
  skip_part "io_uring is not available here (vhd_io_uring=$uring):" \
    "the ring's path is not checked"
fi

serve_traced cross-pread "$cross" VHDKIT_IO=pread
test "$(count cross-pread 'io_uring_enter')" -eq 0
test "$(count cross-pread "$data_pread")" -ge 2

rm -rf "$tmp"

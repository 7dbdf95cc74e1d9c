#!/usr/bin/env bash
# vhdtool convert stays interruptible while it opens its source.  The
# source is a differencing VHD whose parent file was replaced by a FIFO
# (so the open of the parent would wait for a writer for ever); SIGINT is
# sent soon after the start, and SIGTERM too if it is still running: the
# convert must end (refused, or interrupted) and leave no file behind,
# where before only SIGKILL ended it.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires vhdtool --version

tmp=$(scratch_dir)
vhdtool create --dynamic 4M "$tmp/p.vhd"
vhdtool create --parent "$tmp/p.vhd" "$tmp/c.vhd"
rm "$tmp/p.vhd"
mkfifo "$tmp/p.vhd"

vhdtool convert "$tmp/c.vhd" "$tmp/out.vhd" 2> "$tmp/err" &
pid=$!
cleanup_fn kill -9 $pid

# ended_within N: the convert has exited within N tenths of a second.
ended_within ()
{
  for i in $(seq "$1"); do
    kill -0 $pid 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

ended_within 5 || kill -INT $pid 2>/dev/null || :
ended_within 300 || kill -TERM $pid 2>/dev/null || :
if ! ended_within 300; then
  echo "$0: FAIL: vhdtool convert ignored SIGINT and SIGTERM" >&2
  exit 1
fi
status=0
wait $pid || status=$?
cat "$tmp/err"
test $status -ne 0
grep -Eq "is a FIFO|interrupted" "$tmp/err"
test ! -e "$tmp/out.vhd"

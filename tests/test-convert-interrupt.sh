#!/usr/bin/env bash
# SIGINT or SIGTERM during vhdtool convert cancels it: exit status 130,
# a message, and nothing left under the target's name (nor a temporary
# file beside it).  The signal is sent as soon as the copy has started;
# the source is large (1 GiB of data) so that it finds the copy running,
# and if this machine converts it before the signal lands, the test is
# skipped rather than passed.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

tmp=$(scratch_dir)
yes vhdkit | head -c $((1024 * 1024 * 1024)) > "$tmp/src.raw"

for sig in INT TERM; do
  for type in dynamic fixed; do
    dst=$tmp/out-$sig-$type.vhd
    vhdtool convert -O $type "$tmp/src.raw" "$dst" 2> "$tmp/err" &
    pid=$!
    # Once the library's worker thread runs, vhdtool catches the signal.
    for i in $(seq 1000); do
      [ "$(ls /proc/$pid/task 2>/dev/null | wc -l)" -ge 2 ] && break
      sleep 0.01
    done
    kill -$sig $pid
    status=0
    wait $pid || status=$?
    cat "$tmp/err"
    if [ $status -eq 0 ]; then
      skip "the convert finished before SIG$sig"
    fi
    test $status -eq 130
    grep -q "interrupted" "$tmp/err"
    test ! -e "$dst"
    # Only the source is left in the folder.
    test "$(ls -A "$tmp")" = "$(printf '%s\n' err src.raw)"
  done
done

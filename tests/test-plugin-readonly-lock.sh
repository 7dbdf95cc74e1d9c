#!/usr/bin/env bash
# While one nbdkit serves an image read-write, a second read-write server
# on the same image is refused with a message saying that the image is in
# use, and so is a read-only one (a reader would not see the writer's
# later changes: qemu refuses it too); force-share=true lets a read-only
# one in anyway.  While a read-only server runs, other readers share the
# image and a writer is refused.  Once the servers have stopped, a
# read-write server starts again.  The first server runs in the
# background as nbdkit normally does (it forks after opening the image),
# so this also proves that the lock outlives that fork.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires nbdinfo --version

tmp=$(scratch_dir)
img=$tmp/disk.vhd
pidfile=$tmp/nbdkit.pid
vhdtool create --dynamic 16M "$img"

stop_server ()
{
  local pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || :
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$pidfile" "$tmp/sock"
}
cleanup_fn stop_server

nbdkit -P "$pidfile" -U "$tmp/sock" "$VHDKIT_PLUGIN" file="$img"
nbdinfo --size "nbd+unix:///?socket=$tmp/sock"

if nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run true 2> "$tmp/err"; then
  echo "$0: a second read-write server started on an image in use"
  exit 1
fi
cat "$tmp/err"
grep -Eqi 'in use|locked' "$tmp/err"
grep -q "$img" "$tmp/err"

if nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true --run true \
     2> "$tmp/err"; then
  echo "$0: a read-only server started on an image served read-write"
  exit 1
fi
cat "$tmp/err"
grep -q "open for writing" "$tmp/err"
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true force-share=true \
  --run 'nbdinfo --size "$uri"'

stop_server
nbdkit -P "$pidfile" -U "$tmp/sock" "$VHDKIT_PLUGIN" file="$img" readonly=true
nbdinfo --size "nbd+unix:///?socket=$tmp/sock"
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
  --run 'nbdinfo --size "$uri"'
if nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run true 2> "$tmp/err"; then
  echo "$0: a read-write server started on an image served read-only"
  exit 1
fi
cat "$tmp/err"
grep -q "open read-only" "$tmp/err"

stop_server
nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run 'nbdinfo --size "$uri"'

#!/usr/bin/env bash
# The parent of a chain that is open (served read-write or read-only) is
# locked as any read-only image is: other readers share it, every writer
# (a read-write nbdkit, vhdtool check --repair, qemu-io -f vpc) is
# refused, so that nobody changes it under the child.  Once the chain is
# closed the parent opens for writing again.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdinfo --version

tmp=$(scratch_dir)
vhdtool create --dynamic 16M "$tmp/base.vhd"
vhdtool create --parent "$tmp/base.vhd" "$tmp/mid.vhd"
vhdtool create --parent "$tmp/mid.vhd" "$tmp/top.vhd"

pidfile=$tmp/nbdkit.pid
stop_server ()
{
  local pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || :
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile" "$tmp/sock"
}
cleanup_fn stop_server

refused ()
{
  if timeout 60 "$@" > "$tmp/out" 2> "$tmp/err"; then
    echo "$0: FAIL: '$*' opened a parent of a served chain for writing" >&2
    exit 1
  fi
  cat "$tmp/err"
  grep -qiE "open read-only|write" "$tmp/err"
}

for mode in readonly=false readonly=true; do
  nbdkit -P "$pidfile" -U "$tmp/sock" "$VHDKIT_PLUGIN" "$tmp/top.vhd" $mode
  nbdinfo --size "nbd+unix:///?socket=$tmp/sock"

  for parent in mid base; do
    refused nbdkit -U - "$VHDKIT_PLUGIN" "$tmp/$parent.vhd" --run true
    refused vhdtool check --repair "$tmp/$parent.vhd"
    if command -v qemu-io > /dev/null; then
      refused qemu-io -f vpc -c 'write 0 512' "$tmp/$parent.vhd"
    fi
    # Readers share it.
    vhdtool info "$tmp/$parent.vhd" > /dev/null
    nbdkit -U - "$VHDKIT_PLUGIN" "$tmp/$parent.vhd" readonly=true \
      --run 'nbdinfo --size "$uri"'
  done
  # The top image itself is a writer's (refuses readers) or a reader's.
  if [ $mode = readonly=false ]; then
    if vhdtool info "$tmp/top.vhd" 2> "$tmp/err"; then
      echo "$0: FAIL: a plain reader opened an image served read-write" >&2
      exit 1
    fi
    grep -q "open for writing" "$tmp/err"
  fi
  stop_server
done

# No chain is open now: the parent is writable again.
nbdkit -U - "$VHDKIT_PLUGIN" "$tmp/base.vhd" --run 'nbdinfo --size "$uri"'

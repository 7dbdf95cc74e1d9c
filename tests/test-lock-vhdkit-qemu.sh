#!/usr/bin/env bash
# Image locking follows qemu's contract, on qemu's lock bytes, so that
# vhdkit and qemu keep each other out both ways:
#  - an image open for writing (vhdkit or qemu) refuses a second writer
#    and a plain reader;
#  - an image open read-only admits other readers and refuses every
#    writer;
#  - force-share (vhdtool -U, the plugin's force-share=true, qemu's -U)
#    lets a reader in anyway, read-only.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdinfo --version
requires qemu-img --version
requires qemu-io --version
requires qemu-nbd --version

tmp=$(scratch_dir)
img=$tmp/disk.vhd
vhdtool create --dynamic 16M "$img"
qemu-io -f vpc -c 'write -P 0x5a 0 1M' "$img"

pids=()
stop_all ()
{
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || :
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  pids=()
}
cleanup_fn stop_all

# serve_vhdkit ARGS...: a background nbdkit on $tmp/sock (it has opened
# and locked the image when it returns).
serve_vhdkit ()
{
  rm -f "$tmp/nbdkit.pid" "$tmp/sock"
  nbdkit -P "$tmp/nbdkit.pid" -U "$tmp/sock" "$VHDKIT_PLUGIN" "$@"
  pids+=("$(cat "$tmp/nbdkit.pid")")
  nbdinfo --size "nbd+unix:///?socket=$tmp/sock"
}

# serve_qemu ARGS...: a background qemu-nbd on $tmp/qsock.
serve_qemu ()
{
  rm -f "$tmp/qemu.pid" "$tmp/qsock"
  qemu-nbd --fork --persistent -k "$tmp/qsock" --pid-file "$tmp/qemu.pid" \
    -f vpc "$@"
  pids+=("$(cat "$tmp/qemu.pid")")
}

# guarded CMD...: CMD (a program or one of the functions below, which
# guard themselves) with a generous timeout against a hang.
guarded ()
{
  if declare -F "$1" > /dev/null; then
    "$@"
  else
    timeout 60 "$@"
  fi
}

# refused SAY CMD...: CMD fails and its stderr contains SAY.
refused ()
{
  local say=$1
  shift
  if guarded "$@" > "$tmp/out" 2> "$tmp/err"; then
    echo "$0: FAIL: '$*' was let in" >&2
    exit 1
  fi
  cat "$tmp/err"
  grep -qiF -- "$say" "$tmp/err"
}

admitted ()
{
  guarded "$@"
}

rw_server ()
{
  timeout 60 nbdkit -U - "$VHDKIT_PLUGIN" "$img" \
    --run 'nbdinfo --size "$uri"'
}
ro_server ()
{
  timeout 60 nbdkit -U - "$VHDKIT_PLUGIN" "$img" readonly=true "$@" \
    --run 'nbdinfo --size "$uri"'
}

echo "== vhdkit writes: qemu's and vhdkit's writers and plain readers are out"
serve_vhdkit "$img"
refused "write" qemu-io -f vpc -c 'read 0 512' "$img"
refused "write" qemu-img info "$img"
admitted qemu-img info -U "$img"
admitted qemu-io -f vpc -r -U -c 'read -P 0x5a 0 512' "$img"
refused "open for writing" vhdtool info "$img"
admitted vhdtool info -U "$img"
refused "open for writing" vhdtool check "$img"
admitted vhdtool check -U "$img"
refused "open for writing" rw_server
refused "open for writing" ro_server
admitted ro_server force-share=true
refused "needs readonly=true" \
  nbdkit -U - "$VHDKIT_PLUGIN" "$img" force-share=true --run true
stop_all

echo "== qemu writes: vhdkit's writers and plain readers are out"
serve_qemu "$img"
refused "open for writing" rw_server
refused "open for writing" ro_server
refused "open for writing" vhdtool info "$img"
refused "open for writing" vhdtool check --repair "$img"
admitted vhdtool info -U "$img"
admitted ro_server force-share=true
stop_all

echo "== qemu reads: vhdkit's readers share, its writers are out"
serve_qemu -r "$img"
refused "open read-only" rw_server
refused "open read-only" vhdtool check --repair "$img"
admitted ro_server
admitted vhdtool info "$img"
admitted vhdtool check "$img"
stop_all

echo "== vhdkit reads: qemu's readers share, its writers are out"
serve_vhdkit "$img" readonly=true
refused "write" qemu-io -f vpc -c 'write 0 512' "$img"
admitted qemu-img info "$img"
admitted qemu-io -f vpc -r -c 'read -P 0x5a 0 512' "$img"
refused "open read-only" rw_server
admitted ro_server
admitted vhdtool info "$img"
stop_all

echo "== nobody holds it: everyone gets in again"
rw_server
qemu-io -f vpc -c 'write 0 512' "$img"

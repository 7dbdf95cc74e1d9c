#!/usr/bin/env bash
# scripts/vhd-attach handles its arguments and the cases where it cannot
# attach with a clear message and no side effect, without a kernel nbd
# driver: --help, usage errors, a bad device name, not root, a missing
# image, no nbd module, and --detach of a device it did not attach (where
# it must not kill a process that is not its own nbdkit).  The attaching
# itself is exercised in the test guest (guest/test-guest-nbd.sh).

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

script=$VHDKIT_SRCDIR/../scripts/vhd-attach
tmp=$(scratch_dir)
rundir=$tmp/run
export VHD_ATTACH_RUNDIR=$rundir
: > "$tmp/image.vhd"

# expect STATUS PATTERN CMD...: CMD exits with STATUS and says PATTERN
# (an extended regular expression) on stdout or stderr.
expect ()
{
  local want=$1 pattern=$2 status=0
  shift 2
  "$@" > "$tmp/out" 2>&1 || status=$?
  cat "$tmp/out"
  if [ "$status" -ne "$want" ]; then
    echo "$0: '$*' exited $status, not $want" >&2
    exit 1
  fi
  if ! grep -Eq -- "$pattern" "$tmp/out"; then
    echo "$0: '$*' did not say /$pattern/" >&2
    exit 1
  fi
}

# Argument errors come first, for anyone, and exit 2.
expect 0 '^Usage:' "$script" --help
expect 0 'vhd-attach --detach /dev/nbdN' "$script" -h
expect 2 'no image given' "$script"
expect 2 "unknown option '--frobnicate'" "$script" "$tmp/image.vhd" --frobnicate
expect 2 "'/dev/sda' is not an nbd device" "$script" "$tmp/image.vhd" /dev/sda
expect 2 "'nbdx' is not an nbd device" "$script" --detach nbdx
expect 2 '--detach takes one device' "$script" --detach
expect 2 'more than one image' "$script" "$tmp/image.vhd" other.vhd
expect 2 'more than one device' "$script" "$tmp/image.vhd" /dev/nbd0 /dev/nbd1
expect 2 'not a plugin parameter' "$script" "$tmp/image.vhd" -- parent-dir
expect 2 'give the image as IMAGE' "$script" "$tmp/image.vhd" file=x.vhd

# Not root: refused before anything is looked at or started.
as_nobody=()
if [ "$(id -u)" -eq 0 ]; then
  requires setpriv --version
  as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
expect 1 'must be run as root' \
  "${as_nobody[@]}" env VHD_ATTACH_RUNDIR="$rundir" "$script" "$tmp/image.vhd"
expect 1 'must be run as root' \
  "${as_nobody[@]}" env VHD_ATTACH_RUNDIR="$rundir" "$script" --detach /dev/nbd0
test ! -e "$rundir"

if [ "$(id -u)" -ne 0 ]; then
  echo "$0: not root: the rest of the checks need root"
  exit 0
fi

# Stand-ins for the programs vhd-attach runs, first on PATH, recording
# each call: no real module is loaded, no server started, no device
# touched.
fake=$tmp/bin
mkdir "$fake"
for program in modprobe nbd-client nbdkit; do
  cat > "$fake/$program" <<EOF
#!/bin/sh
echo "$program \$*" >> "$tmp/calls"
case "$program" in
  modprobe) echo "modprobe: FATAL: Module nbd not found (stand-in)" >&2; exit 1 ;;
  nbdkit) exit 1 ;;
esac
EOF
  chmod +x "$fake/$program"
done
export PATH=$fake:$PATH
export VHD_PLUGIN=/nonexistent/nbdkit-vhd-plugin.so

expect 1 "$tmp/missing.vhd: no such file" "$script" "$tmp/missing.vhd"
expect 1 'not a regular file' "$script" "$tmp"
test ! -e "$tmp/calls"

# No nbd module: modprobe's own words, then ours; nothing is started.
if [ ! -d /sys/module/nbd ]; then
  expect 1 'this kernel has no nbd driver' "$script" "$tmp/image.vhd"
  grep -q 'Module nbd not found (stand-in)' "$tmp/out"
  grep -qx 'modprobe nbd' "$tmp/calls"
  if grep -q '^nbdkit' "$tmp/calls"; then
    echo "$0: nbdkit was started without an nbd module" >&2
    exit 1
  fi
  test ! -e "$rundir/nbd0.pid"
else
  echo "$0: nbd is loaded here: not checking the no-module message"
fi

# --detach of a device that vhd-attach did not attach: refused, and
# nbd-client is not asked to disconnect it.
rm -f "$tmp/calls"
expect 1 'was not attached by vhd-attach' "$script" --detach /dev/nbd7
test ! -e "$tmp/calls"

# A pid file whose pid is not our nbdkit (a stale file, the pid reused):
# that process must survive --detach, and the stale files are removed.
mkdir -p "$rundir"
sleep 120 &
bystander=$!
cleanup_fn kill "$bystander"
echo "$bystander" > "$rundir/nbd7.pid"
: > "$rundir/nbd7.sock"
expect 0 "not stopping pid $bystander" "$script" --detach /dev/nbd7
kill -0 "$bystander"
test ! -e "$rundir/nbd7.pid"
test ! -e "$rundir/nbd7.sock"

# A pid file whose pid is an nbdkit serving that device's socket (a
# stand-in with the same command line): --detach stops it.
sock=$rundir/nbd7.sock
cat > "$tmp/server" <<'EOF'
trap 'kill $!; exit 143' TERM
sleep 120 &
wait
EOF
(exec -a nbdkit bash "$tmp/server" -U "$sock") &
server=$!
for _ in $(seq 50); do
  [ "$(head -c 6 "/proc/$server/cmdline")" = nbdkit ] && break
  sleep 0.1
done
cleanup_fn kill "$server"
echo "$server" > "$rundir/nbd7.pid"
"$script" --detach nbd7
# It was our child, so reap it; it must have ended through SIGTERM.
status=0
wait "$server" || status=$?
test "$status" -eq $((128 + 15))
test ! -e "$rundir/nbd7.pid"

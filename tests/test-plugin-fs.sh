#!/usr/bin/env bash
# A real filesystem on the served disk: nbdfuse exposes the export as a
# file, losetup makes a block device of it, and ext4 is made, mounted,
# written and checked.  The image then still fscks clean and reads the
# files back when served again by a new nbdkit, and qemu-img (an
# independent reader) sees the same clean filesystem in it.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires nbdfuse --version
requires fusermount3 --version
requires losetup --version
requires mkfs.ext4 -V
requires e2fsck -V
requires mount --version
requires mountpoint --version
requires umount --version
requires qemu-img --version
requires sha256sum --version
if [ "$(id -u)" -ne 0 ]; then
  skip "needs root (losetup, mount)"
fi
if [ ! -c /dev/fuse ] || [ ! -e /dev/loop-control ]; then
  skip "needs /dev/fuse and loop devices"
fi

tmp=$(scratch_dir)
img=$tmp/disk.vhd
sock=$tmp/sock
nbdkit_pid=$tmp/nbdkit.pid
mkdir "$tmp/fuse" "$tmp/mnt"
vhdtool create --dynamic 256M "$img"

# Undo whatever is set up, in reverse order; safe to run at any point and
# more than once (cleanup_fn runs it on exit, failure included).
loopdev=
teardown ()
{
  if mountpoint -q "$tmp/mnt"; then umount "$tmp/mnt"; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev"; loopdev=; fi
  # The loop device may let go of the file a moment after losetup -d.
  for i in $(seq 50); do
    mountpoint -q "$tmp/fuse" || break
    fusermount3 -u "$tmp/fuse" && break
    sleep 0.2
  done
  # nbdfuse exits once unmounted; if it never mounted, stop it.
  if [ -n "${nbdfuse_pid:-}" ]; then
    mountpoint -q "$tmp/fuse" || kill "$nbdfuse_pid" 2>/dev/null || :
    wait "$nbdfuse_pid" || :
    nbdfuse_pid=
  fi
  if [ -f "$nbdkit_pid" ]; then
    local pid
    pid=$(cat "$nbdkit_pid")
    kill "$pid" 2>/dev/null || :
    # The next server may open the image only once this one has let go.
    for i in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$nbdkit_pid"
  fi
}
cleanup_fn teardown

# attach rw|ro: serve the image (read-write, or read-only), expose it
# with nbdfuse and set up a loop device on it in $loopdev.
attach ()
{
  local ro=()
  if [ "$1" = ro ]; then ro=(-r); fi
  rm -f "$sock"
  nbdkit -P "$nbdkit_pid" -U "$sock" "$VHDKIT_PLUGIN" file="$img" \
    readonly=$([ "$1" = ro ] && echo true || echo false)
  nbdfuse "${ro[@]}" "$tmp/fuse" --unix "$sock" &
  nbdfuse_pid=$!
  for i in $(seq 100); do
    [ -f "$tmp/fuse/nbd" ] && break
    sleep 0.1
  done
  test "$(stat -c %s "$tmp/fuse/nbd")" -eq $((256 * 1024 * 1024))
  loopdev=$(losetup "${ro[@]}" -f --show "$tmp/fuse/nbd")
}

attach rw
mkfs.ext4 -q "$loopdev"
mount "$loopdev" "$tmp/mnt"
head -c 5000000 /dev/urandom > "$tmp/mnt/random"
seq 1 200000 > "$tmp/mnt/numbers"
mkdir "$tmp/mnt/dir"
echo hello > "$tmp/mnt/dir/hello"
(cd "$tmp/mnt" && sha256sum random numbers dir/hello) > "$tmp/sums"
umount "$tmp/mnt"
e2fsck -fn "$loopdev"
# fsync on the nbdfuse file sends a flush to nbdkit.
sync "$tmp/fuse/nbd"
teardown

# Served again by a new nbdkit: still clean, and the files read back.
attach ro
e2fsck -fn "$loopdev"
mount -o ro "$loopdev" "$tmp/mnt"
(cd "$tmp/mnt" && sha256sum -c "$tmp/sums")
teardown

# And qemu-img reads the same filesystem out of the image file.
qemu-img convert -f vpc -O raw "$img" "$tmp/disk.raw"
e2fsck -fn "$tmp/disk.raw"

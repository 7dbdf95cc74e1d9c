#!/usr/bin/env bash
# A real filesystem across a differencing child: mkfs.ext4 on a dynamic
# base served through nbdkit + nbdfuse + a loop device, files written,
# then a child created with vhdtool and mounted in its place: files
# modified, added and deleted there, e2fsck clean.  The base alone still
# fscks clean and holds the old files; the child holds the new ones.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdfuse --version
requires fusermount3 --version
requires losetup --version
requires mkfs.ext4 -V
requires e2fsck -V
requires mount --version
requires mountpoint --version
requires sha256sum --version
if [ "$(id -u)" -ne 0 ]; then
  skip "needs root (loop devices, mount)"
fi
if [ ! -c /dev/fuse ]; then
  skip "no /dev/fuse"
fi
if ! losetup -f >/dev/null 2>&1; then
  skip "no free loop device"
fi

tmp=$(scratch_dir)
fuse="$tmp/fuse"
mnt="$tmp/mnt"
mkdir "$fuse" "$mnt"
loop=
nbdfuse_pid=

# detach: unmount, drop the loop device, unmount the FUSE file and let
# nbdfuse (and the nbdkit under it) exit.  Safe to call at any point, and
# again.
detach ()
{
  local i
  if mountpoint -q "$mnt"; then
    umount "$mnt" || umount -l "$mnt"
  fi
  if [ -n "$loop" ]; then
    losetup -d "$loop" || true
    # the loop device lets go of the file asynchronously
    for i in $(seq 50); do
      losetup -j "$fuse/nbd" 2>/dev/null | grep -q . || break
      sleep 0.1
    done
    loop=
  fi
  if mountpoint -q "$fuse"; then
    for i in $(seq 50); do
      fusermount3 -u "$fuse" 2>/dev/null && break
      sleep 0.1
    done
    mountpoint -q "$fuse" && fusermount3 -uz "$fuse"
  fi
  if [ -n "$nbdfuse_pid" ]; then
    for i in $(seq 100); do
      kill -0 "$nbdfuse_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$nbdfuse_pid" 2>/dev/null; then
      kill "$nbdfuse_pid"
    fi
    wait "$nbdfuse_pid" 2>/dev/null || true
    nbdfuse_pid=
  fi
}
cleanup_fn detach

# attach IMG [ro]: serve IMG (nbdkit under nbdfuse, read-only with ro) and
# set up $loop over the FUSE file.
attach ()
{
  local img=$1 ro=${2:-} i
  local nbdkit_ro=() nbdfuse_ro=() losetup_ro=()
  if [ "$ro" = ro ]; then
    nbdkit_ro=(readonly=true)
    nbdfuse_ro=(-r)
    losetup_ro=(-r)
  fi
  rm -f "$tmp/nbdfuse.pid"
  nbdfuse "${nbdfuse_ro[@]}" -P "$tmp/nbdfuse.pid" "$fuse" \
    --command nbdkit -s --exit-with-parent "$VHDKIT_PLUGIN" file="$img" \
    "${nbdkit_ro[@]}" &
  nbdfuse_pid=$!
  for i in $(seq 300); do
    [ -s "$tmp/nbdfuse.pid" ] && break
    kill -0 "$nbdfuse_pid" || { echo "$0: nbdfuse exited" >&2; return 1; }
    sleep 0.1
  done
  test -s "$tmp/nbdfuse.pid"
  test "$(stat -c %s "$fuse/nbd")" -eq $((256 * 1024 * 1024))
  loop=$(losetup -f --show "${losetup_ro[@]}" "$fuse/nbd")
  test -b "$loop"
}

vhdtool create --dynamic 256M "$tmp/base.vhd"

echo "step: mkfs.ext4 on the base and write files"
attach "$tmp/base.vhd"
mkfs.ext4 -q -F "$loop"
mount "$loop" "$mnt"
head -c $((5 * 1024 * 1024)) /dev/urandom > "$mnt/big.bin"
head -c $((1024 * 1024 + 77)) /dev/urandom > "$mnt/doomed.bin"
mkdir "$mnt/dir"
echo "written to the base" > "$mnt/dir/note.txt"
for i in $(seq 20); do
  head -c $((i * 3000)) /dev/urandom > "$mnt/dir/small$i"
done
(cd "$mnt" && find . -type f ! -path './lost+found/*' -print0 |
   sort -z | xargs -0 sha256sum) > "$tmp/base.sums"
umount "$mnt"
e2fsck -fn "$loop"
detach
base_file_hash=$(sha256sum < "$tmp/base.vhd")

echo "step: create a child; mount it; modify, add and delete files"
vhdtool create --parent "$tmp/base.vhd" "$tmp/child.vhd"
attach "$tmp/child.vhd"
mount "$loop" "$mnt"
(cd "$mnt" && sha256sum -c --quiet "$tmp/base.sums")
dd if=/dev/urandom of="$mnt/big.bin" bs=4096 seek=100 count=50 \
   conv=notrunc status=none
echo "appended in the child" >> "$mnt/dir/note.txt"
head -c $((3 * 1024 * 1024 + 5)) /dev/urandom > "$mnt/new.bin"
rm "$mnt/doomed.bin"
(cd "$mnt" && find . -type f ! -path './lost+found/*' -print0 |
   sort -z | xargs -0 sha256sum) > "$tmp/child.sums"
umount "$mnt"

echo "check: the child's filesystem fscks clean"
e2fsck -fn "$loop"
detach

echo "check: the base file did not change"
test "$(sha256sum < "$tmp/base.vhd")" = "$base_file_hash"

echo "check: the base alone (read-only) fscks clean and holds the old files"
attach "$tmp/base.vhd" ro
e2fsck -fn "$loop"
mount -o ro,noload "$loop" "$mnt"
(cd "$mnt" && sha256sum -c --quiet "$tmp/base.sums")
test ! -e "$mnt/new.bin"
test "$(cat "$mnt/dir/note.txt")" = "written to the base"
umount "$mnt"
detach

echo "check: the child again (read-only) holds the new files"
attach "$tmp/child.vhd" ro
e2fsck -fn "$loop"
mount -o ro,noload "$loop" "$mnt"
(cd "$mnt" && sha256sum -c --quiet "$tmp/child.sums")
test ! -e "$mnt/doomed.bin"
test -f "$mnt/new.bin"
grep -q "appended in the child" "$mnt/dir/note.txt"
if cmp -s "$tmp/base.sums" "$tmp/child.sums"; then
  echo "$0: FAIL: the child's files are the base's" >&2
  exit 1
fi
umount "$mnt"
detach

#!/usr/bin/env bash
# VHD images served by the plugin work as real block devices in a Linux
# guest, through the kernel's NBD client (nbd-client, /dev/nbd0) and
# through qemu's (-drive driver=nbd, /dev/vda), for a fixed, a dynamic and
# a differencing image, and so do a dynamic VHDX through /dev/nbd0
# (with blocks of 1 MiB, so that the filesystem allocates many and the
# VHDX log carries their BAT entries) and a differencing VHDX over it
# (2 MiB blocks, as Hyper-V's checkpoints: the filesystem's small writes
# leave PARTIALLY_PRESENT blocks, read through the sector bitmaps): the
# guest makes an ext4 filesystem (or, on a differencing image, finds its
# parent's), writes files, checks it with e2fsck and reads the files back;
# then the host reads the image with independent tools (qemu-img, e2fsck,
# debugfs; for the differencing VHDX, which qemu cannot read, libvhdi's
# vhdimount) and finds the same files, and a parent is byte for byte what
# it was.  Last, scripts/vhd-attach attaches an image inside the guest.
#
# The guest is Debian's kernel and a busybox initramfs (build-initramfs.sh,
# init), booted by qemu-system-x86_64 with no network device: nbd-client
# reaches the host's nbdkit through a virtio-serial port bridged by socat.
# It runs under TCG unless the CPU has vmx/svm and the kvm_pvm module is
# not loaded.  The kernel and initramfs are cached in $VHDKIT_GUEST_CACHE
# (/var/tmp/vhdkit-guest-cache; scripts/install-deps fills it).  Skips when
# qemu-system-x86_64, busybox, socat, nbd-client or the kernel package
# cannot be had, and fails then under VHDKIT_REQUIRE=all (CI).

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

guest=$VHDKIT_SRCDIR/guest
script=$VHDKIT_SRCDIR/../scripts/vhd-attach
# nbd-client, mke2fs and e2fsck live in sbin.
PATH=$PATH:/usr/sbin:/sbin

requires_plugin
requires qemu-system-x86_64 --version
requires busybox
requires socat -V
requires nbd-client
requires mke2fs -V
requires e2fsck -V
requires debugfs -V
requires cpio --version
requires qemu-img --version
requires nbdcopy --version
requires vhdtool --help
requires bash --version

tmp=$(scratch_dir)

# ---- The guest's kernel and initramfs --------------------------------

cache=${VHDKIT_GUEST_CACHE:-/var/tmp/vhdkit-guest-cache}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/vhdkit-guest
fi
status=0
"$guest/build-initramfs.sh" "$cache" > "$tmp/boot" || status=$?
case "$status" in
  0) ;;
  77) skip "the guest cannot be built here (build-initramfs.sh says why, above)" ;;
  *) echo "$0: build-initramfs.sh failed" >&2; exit 1 ;;
esac
{ read -r kernel; read -r base_initramfs; } < "$tmp/boot"

# The files the guest writes, with their checksums: set A on a new
# filesystem, set B added on the differencing image.  Sizes that cross the
# 2 MiB blocks of a dynamic image, and odd ones.
overlay=$tmp/overlay
payload=$overlay/payload
mkdir -p "$payload/A" "$payload/B" "$overlay/vhdkit"
printf 'vhdkit guest test\n' > "$payload/A/hello.txt"
: > "$payload/A/empty"
head -c $((1024 * 1024 + 123)) /dev/urandom > "$payload/A/random-1M"
head -c $((4 * 1024 * 1024 + 4097)) /dev/urandom > "$payload/A/random-4M"
head -c $((3 * 1024 * 1024)) /dev/urandom > "$payload/B/random-3M"
seq 1 20000 > "$payload/B/numbers.txt"
for set in A B; do
  (cd "$payload/$set" && sha256sum -- * > "../$set.sha256")
done

# vhd-attach runs in the guest too, with nbdkit, this plugin and bash;
# not in a sanitizer build, whose plugin needs the ASan runtime preloaded
# (the host's nbdkit is a wrapper that does that: see tests/Makefile.am).
guest_attach=yes
if [ "${VHDKIT_SANITIZERS:-}" = 1 ]; then
  guest_attach=no
  echo "$0: sanitizer build: vhd-attach is not run inside the guest"
fi
install -m 755 "$script" "$overlay/vhdkit/vhd-attach"
if [ "$guest_attach" = yes ]; then
  install -m 755 "$VHDKIT_PLUGIN" "$overlay/vhdkit/nbdkit-vhd-plugin.so"
  "$guest/build-initramfs.sh" --overlay "$tmp/overlay.cpio" "$overlay" \
    "$(command -v nbdkit)" "$(command -v bash)" "$(realpath "$VHDKIT_PLUGIN")"
else
  "$guest/build-initramfs.sh" --overlay "$tmp/overlay.cpio" "$overlay" \
    "$(command -v bash)"
fi

# The kernel unpacks an uncompressed archive appended to another only at
# a 4-byte boundary.
initramfs=$tmp/initramfs.cpio
cp "$base_initramfs" "$initramfs"
truncate -s $(( ($(stat -c %s "$initramfs") + 3) / 4 * 4 )) "$initramfs"
cat "$tmp/overlay.cpio" >> "$initramfs"

# TCG unless KVM can really run this kernel: /dev/kvm may be a software
# hypervisor (kvm_pvm) that cannot.
if grep -Eqw 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ] &&
   [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  accel=(-accel kvm -cpu host)
else
  accel=(-accel tcg -cpu max)
fi

# ---- One boot --------------------------------------------------------

nbdkit_pid=
stop_server ()
{
  if [ -n "$nbdkit_pid" ]; then
    kill "$nbdkit_pid" 2>/dev/null || true
    wait "$nbdkit_pid" || true
    nbdkit_pid=
  fi
}
cleanup_fn stop_server

timings=()

# run_guest PATH TYPE MODE IMAGE [PLUGIN-PARAMETER...]: boot the guest to
# test IMAGE through PATH (nbd0, vda or attach; see init), and fail unless
# it reports PASS.  nbdkit has stopped, and the image is closed, when this
# returns.
run_guest ()
{
  local path=$1 type=$2 mode=$3 img=$4 sock=$tmp/nbd.sock
  local log=$tmp/guest-$path-$type.log start i status=0
  local -a disk
  shift 4

  case "$path" in
    nbd0|vda)
      rm -f "$sock" "$tmp/nbdkit.pid"
      nbdkit -f -U "$sock" -P "$tmp/nbdkit.pid" \
        "$VHDKIT_PLUGIN" file="$img" "$@" &
      nbdkit_pid=$!
      for ((i = 0; i < 100; i++)); do
        [ ! -s "$tmp/nbdkit.pid" ] || break
        kill -0 "$nbdkit_pid"
        sleep 0.1
      done
      test -S "$sock"
      ;;
  esac
  case "$path" in
    nbd0)
      # qemu connects to nbdkit's socket once, at start; the guest's socat
      # bridges the port to the socket that nbd-client connects to.
      disk=(-device virtio-serial
            -chardev "socket,id=nbd0,path=$sock"
            -device virtserialport,chardev=nbd0,name=nbd0) ;;
    vda)
      disk=(-drive "driver=nbd,server.type=unix,server.path=$sock,if=virtio") ;;
    attach)
      [ "$(basename "$img")" = disk.vhd ]
      disk=(-fsdev "local,id=host,path=$(dirname "$img"),security_model=none"
            -device virtio-9p-pci,fsdev=host,mount_tag=host) ;;
  esac

  # no_timer_check: under TCG on a busy host the kernel's early check
  # that the timer interrupt arrives through the IO-APIC can miss its few
  # ticks and panic ("IO-APIC + timer doesn't work!"); qemu's timer works.
  start=$SECONDS
  timeout 150 qemu-system-x86_64 "${accel[@]}" -m 512M \
    -nodefaults -display none -no-reboot -serial "file:$log" \
    -kernel "$kernel" -initrd "$initramfs" \
    -append "console=ttyS0 quiet panic=-1 cryptomgr.notests no_timer_check vhdkit.path=$path vhdkit.type=$type vhdkit.mode=$mode" \
    "${disk[@]}" < /dev/null || status=$?
  stop_server
  timings+=("$path $type: $((SECONDS - start)) s")

  tr -d '\r' < "$log" | sed 's/^/guest: /'
  if [ "$status" -ne 0 ]; then
    echo "$0: qemu exited with status $status" \
         "(124: it ran out of time)" >&2
    return 1
  fi
  if ! tr -d '\r' < "$log" | grep -qx "VHDKIT-GUEST: PASS $path $type"; then
    echo "$0: the guest did not report PASS for $path $type" >&2
    return 1
  fi
}

# check_image TYPE IMAGE SET...: read IMAGE on the host, without the
# guest: the filesystem passes e2fsck -fn and holds the files of each SET.
# qemu-img reads fixed and dynamic images; a differencing chain is read
# through the plugin (qemu's vpc driver does not follow parents, and its
# vhdx driver refuses a differencing VHDX), and a differencing VHDX's also
# through libvhdi (compare_vhdimount).
check_image ()
{
  local type=$1 img=$2 raw=$tmp/check.raw out=$tmp/readback set
  shift 2
  rm -rf "$raw" "$out"
  case "$type" in
    differencing|differencing-vhdx)
      nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
        --run "nbdcopy \"\$uri\" '$raw'" ;;
    dynamic-vhdx)
      qemu-img check -f vhdx "$img"
      qemu-img convert -f vhdx -O raw "$img" "$raw" ;;
    *)
      qemu-img convert -f vpc -O raw "$img" "$raw" ;;
  esac
  e2fsck -fn "$raw"
  mkdir "$out"
  for set in "$@"; do
    debugfs -R "rdump /$set $out" "$raw"
    (cd "$out/$set" && sha256sum -c "$payload/$set.sha256")
  done
  vhdtool check "$img"
  if [ "$type" = differencing-vhdx ]; then
    compare_vhdimount "$img" "$raw"
  fi
  rm -rf "$raw" "$out"
}

# compare_vhdimount CHILD RAW: libvhdi, which shares no code with vhdkit,
# reads the chain of CHILD (a differencing VHDX over a dynamic one, the
# parent beside it) as RAW, what the plugin read, and the parent as
# qemu-img does.  vhdimount shows one file per level, vhdi1 the parent and
# vhdi2 the child's view; each is checked against its own reference, so a
# swapped order would show.  vhdimount opens the parent by the child's
# absolute_win32_path (what follows its last backslash: all of the Linux
# path vhdkit stores there) joined to the folder of the path it was given,
# so an absolute path there gives FOLDER/ABSOLUTE-PATH, which does not
# exist: run it from the child's folder with the bare name, as
# test-diff-chains-vhdimount.sh does.  libvhdi 20210425 misreads a chunk
# whose sector bitmap block is not allocated (it takes the bitmap from the
# start of the file, so the first block's first sectors read as zeros, not
# as the parent's): the caller has checked that the guest's writes
# allocated one, and this 128 MiB disk is one chunk.  Needs FUSE.
compare_vhdimount ()
{
  local child=$1 raw=$2 mnt=$tmp/vhdi-mnt parent=$tmp/vhdi-parent.raw
  local parent_img sum_parent sum_child
  if ! command -v vhdimount >/dev/null || ! command -v fusermount >/dev/null ||
     [ ! -c /dev/fuse ]; then
    skip_part "no vhdimount, fusermount or /dev/fuse: libvhdi does not read the differencing VHDX"
    return 0
  fi
  parent_img=$(dirname "$child")/dynamic.vhdx
  qemu-img convert -f vhdx -O raw "$parent_img" "$parent"
  sum_parent=$(sha256sum < "$parent" | cut -d' ' -f1)
  sum_child=$(sha256sum < "$raw" | cut -d' ' -f1)
  rm -f "$parent"
  # The guest wrote set B: the two levels must differ, or the comparison
  # below could not tell them apart.
  [ "$sum_parent" != "$sum_child" ]
  mkdir "$mnt"
  (cd "$(dirname "$child")" && vhdimount "$(basename "$child")" "$mnt")
  vhdi_mnt=$mnt
  ls -l "$mnt"
  test ! -e "$mnt/vhdi3"
  test "$(stat -c %s "$mnt/vhdi1")" -eq "$(stat -c %s "$raw")"
  test "$(stat -c %s "$mnt/vhdi2")" -eq "$(stat -c %s "$raw")"
  test "$(sha256sum < "$mnt/vhdi1" | cut -d' ' -f1)" = "$sum_parent"
  test "$(sha256sum < "$mnt/vhdi2" | cut -d' ' -f1)" = "$sum_child"
  unmount_vhdi
  rmdir "$mnt"
}

vhdi_mnt=
unmount_vhdi ()
{
  if [ -n "$vhdi_mnt" ]; then
    fusermount -u "$vhdi_mnt" || umount -l "$vhdi_mnt"
    vhdi_mnt=
  fi
}
cleanup_fn unmount_vhdi

# ---- The runs --------------------------------------------------------

total_start=$SECONDS
for path in nbd0 vda; do
  dir=$tmp/$path
  mkdir "$dir"

  vhdtool create --fixed 64M "$dir/fixed.vhd"
  run_guest "$path" fixed fresh "$dir/fixed.vhd"
  check_image fixed "$dir/fixed.vhd" A

  vhdtool create --dynamic 128M "$dir/dynamic.vhd"
  run_guest "$path" dynamic fresh "$dir/dynamic.vhd"
  check_image dynamic "$dir/dynamic.vhd" A

  # The dynamic image, with its filesystem, is the parent: the guest finds
  # set A there and adds set B, and the parent does not change.
  vhdtool create --parent "$dir/dynamic.vhd" "$dir/child.vhd"
  parent_sum=$(sha256sum < "$dir/dynamic.vhd")
  run_guest "$path" differencing reuse "$dir/child.vhd"
  test "$(sha256sum < "$dir/dynamic.vhd")" = "$parent_sum"
  check_image differencing "$dir/child.vhd" A B
done

# A dynamic VHDX, through the kernel's NBD client.
mkdir "$tmp/vhdx"
vhdtool create --format vhdx --dynamic --block-size 1M 128M \
  "$tmp/vhdx/dynamic.vhdx"
run_guest nbd0 dynamic-vhdx fresh "$tmp/vhdx/dynamic.vhdx"
check_image dynamic-vhdx "$tmp/vhdx/dynamic.vhdx" A

# A differencing VHDX (AVHDX) over that dynamic VHDX, through the kernel's
# NBD client, as the differencing VHD above: the guest finds set A in the
# parent's filesystem and adds set B; the parent does not change.
vhdtool create --parent "$tmp/vhdx/dynamic.vhdx" "$tmp/vhdx/child.avhdx"
# info goes on with the parent after a blank line: keep the child's part.
vhdtool info "$tmp/vhdx/child.avhdx" | sed '/^$/q' > "$tmp/vhdx/child.info"
grep -qx 'format: VHDX' "$tmp/vhdx/child.info"
grep -qx 'type: differencing' "$tmp/vhdx/child.info"
parent_sum=$(sha256sum < "$tmp/vhdx/dynamic.vhdx")
run_guest nbd0 differencing-vhdx reuse "$tmp/vhdx/child.avhdx"
test "$(sha256sum < "$tmp/vhdx/dynamic.vhdx")" = "$parent_sum"
# The filesystem's writes, smaller than the child's blocks, went to
# PARTIALLY_PRESENT blocks: the sector bitmaps were written and read.
vhdtool info "$tmp/vhdx/child.avhdx" | sed '/^$/q' | tee "$tmp/vhdx/child.info"
grep -q '^block states:.*partially-present [1-9]' "$tmp/vhdx/child.info"
grep -q '^sector bitmap blocks: [1-9]' "$tmp/vhdx/child.info"
check_image differencing-vhdx "$tmp/vhdx/child.avhdx" A B

# scripts/vhd-attach in the guest: nbdkit and nbd-client there, on an
# image shared from here.
if [ "$guest_attach" = yes ]; then
  mkdir "$tmp/attach"
  vhdtool create --dynamic 128M "$tmp/attach/disk.vhd"
  run_guest attach dynamic fresh "$tmp/attach/disk.vhd"
  check_image dynamic "$tmp/attach/disk.vhd" A
fi

set +x
echo
echo "guest test run times (${accel[*]}):"
for timing in "${timings[@]}"; do
  echo "  $timing"
done
echo "  total: $((SECONDS - total_start)) s"

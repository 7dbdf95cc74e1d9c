#!/usr/bin/env bash
# vhdkit: build the kernel and initramfs of the throw-away test guest.
#
#   build-initramfs.sh CACHE
#       Print two lines, the guest's kernel and its base initramfs, both
#       under CACHE (made when missing, reused when their inputs are
#       unchanged).  The kernel is Debian's linux-image-amd64 (downloaded
#       with apt-get download, unpacked with dpkg-deb -x); the initramfs
#       holds busybox, the kernel modules that the guest needs (nbd,
#       virtio, ext4, 9p and what they depend on), nbd-client, socat,
#       mke2fs and e2fsck with their shared libraries, and ./init.
#
#   build-initramfs.sh --overlay OUT.cpio ROOT [PROGRAM...]
#       Copy each PROGRAM (a path) and the shared libraries it loads into
#       ROOT at the same path, then write ROOT as an uncompressed cpio
#       archive OUT.cpio.  The kernel unpacks archives appended to the
#       base initramfs over it, so a test adds its files this way without
#       rebuilding the base.
#
# Exit status: 0 done, 77 something needed cannot be had (a message says
# what: the caller skips), 1 any other failure.
#
# Environment: VHDKIT_GUEST_KERNEL_DEB=FILE uses that linux-image .deb
# instead of downloading one; VHDKIT_GUEST_REFRESH=1 asks apt for the
# current kernel even when one is cached.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATH=$PATH:/usr/sbin:/sbin

# The modules that the guest loads; their dependencies are found through
# modules.dep.  crc32c_generic is only a soft dependency of ext4 and jbd2
# (they ask the crypto API for "crc32c"), so it is named here.
module_roots=(
  virtio_pci virtio_console virtio_blk nbd
  crc32c_generic ext4
  9pnet_virtio 9p
)

# The programs the guest runs, besides busybox.
guest_programs=(nbd-client socat mke2fs e2fsck)

skip ()
{
  echo "build-initramfs: $*" >&2
  exit 77
}

die ()
{
  echo "build-initramfs: $*" >&2
  exit 1
}

find_program ()
{
  local dir
  if command -v "$1" 2>/dev/null; then
    return 0
  fi
  for dir in /usr/sbin /sbin /usr/bin /bin; do
    if [ -x "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  return 1
}

# copy_with_libs ROOT PROGRAM: copy PROGRAM and every shared library that
# ldd says it loads (the dynamic loader included) into ROOT, each at its
# own path, with mode 755.  A static program has no libraries to copy.
copy_with_libs ()
{
  local root=$1 program=$2 lib
  install -D -m 755 "$program" "$root$program"
  while read -r lib; do
    [ -e "$root$lib" ] || install -D -m 755 "$lib" "$root$lib"
  done < <(ldd "$program" 2>/dev/null |
             sed -n -e 's,.*=> \(/[^ ]*\) .*,\1,p' -e 's,^[[:space:]]*\(/[^ ]*\) .*,\1,p')
}

# write_cpio ROOT OUT: ROOT as a newc archive owned by root.
write_cpio ()
{
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
     cpio --quiet -o -H newc -R 0:0) > "$2"
}

if [ "${1:-}" = --overlay ]; then
  [ $# -ge 3 ] || die "usage: build-initramfs.sh --overlay OUT.cpio ROOT [PROGRAM...]"
  out=$2 root=$3
  shift 3
  for program in "$@"; do
    copy_with_libs "$root" "$program"
  done
  write_cpio "$root" "$out"
  exit 0
fi

[ $# -eq 1 ] || die "usage: build-initramfs.sh CACHE"
cache=$1
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

for tool in dpkg-deb cpio ldd perl; do
  find_program "$tool" >/dev/null || skip "'$tool' is not installed"
done
busybox=$(find_program busybox) || skip "busybox is not installed (busybox-static)"
declare -A program_path
for program in "${guest_programs[@]}"; do
  program_path[$program]=$(find_program "$program") \
    || skip "'$program' is not installed"
done
if depmod=$(find_program depmod); then
  :
else
  depmod="$busybox depmod"
fi

# ---- The kernel ------------------------------------------------------

# Unpack the kernel and the closure of module_roots from DEB into
# $cache/kernel-VERSION, then drop the unpacked package.
unpack_kernel ()
{
  local deb=$1 tmp version dest
  tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  dpkg-deb -x "$deb" "$tmp" || { rm -rf "$tmp"; die "dpkg-deb -x $deb failed"; }
  version=$(cd "$tmp/lib/modules" && ls | head -n 1)
  [ -n "$version" ] && [ -f "$tmp/boot/vmlinuz-$version" ] \
    || { rm -rf "$tmp"; die "$deb holds no kernel"; }
  $depmod -b "$tmp" "$version" || { rm -rf "$tmp"; die "depmod failed"; }

  dest=$cache/kernel-$version
  rm -rf "$dest"
  mkdir -p "$dest/modules"
  cp "$tmp/boot/vmlinuz-$version" "$tmp/boot/config-$version" "$dest/"
  extract_vmlinux "$dest/vmlinuz-$version" "$dest/vmlinux-$version"
  modules_in_load_order "$tmp/lib/modules/$version/modules.dep" \
    "${module_roots[@]}" > "$dest/modules.list" \
    || { rm -rf "$tmp" "$dest"; die "cannot resolve the guest's modules"; }
  while read -r path; do
    install -D -m 644 "$tmp/lib/modules/$version/$path" \
      "$dest/modules/$version/$path"
  done < "$dest/modules.list"
  cp "$tmp/lib/modules/$version"/modules.{order,builtin,builtin.modinfo} \
    "$dest/modules/$version/"
  rm -rf "$tmp"
  echo "$version" > "$dest/version"
  echo "$dest"
}

# extract_vmlinux VMLINUZ VMLINUX: the uncompressed kernel inside the
# bzImage VMLINUZ (Debian's are xz-compressed), which qemu boots through
# its PVH entry point without decompressing it: under TCG that saves ~10 s
# a boot.  Nothing is written when that is not possible; the bzImage is
# used then.
extract_vmlinux ()
{
  local offset
  command -v xz >/dev/null 2>&1 || return 0
  offset=$(perl -0777 -ne 'print index($_, "\xfd7zXZ\x00")' "$1") || return 0
  [ "$offset" -ge 0 ] 2>/dev/null || return 0
  tail -c +$((offset + 1)) "$1" | xz -dc 2>/dev/null > "$2.tmp" || true
  # xz complains about the bzImage's bytes after the stream: what counts
  # is that an ELF image with Xen's PVH note came out.
  if [ "$(head -c 4 "$2.tmp" | od -An -c | tr -d ' ')" = '177ELF' ] &&
     grep -q 'Xen' "$2.tmp"; then
    mv "$2.tmp" "$2"
  else
    rm -f "$2.tmp"
  fi
}

# modules_in_load_order MODULES.DEP NAME...: print the paths of the NAMEd
# modules and of everything they depend on, each after its dependencies.
# A name built into the kernel (in modules.builtin beside MODULES.DEP) is
# left out; a name that is neither is an error.
modules_in_load_order ()
{
  awk -v roots="${*:2}" '
    function key(path,   k) {
      k = path
      sub(/.*\//, "", k); sub(/\.ko.*$/, "", k); gsub(/-/, "_", k)
      return k
    }
    function visit(k,   n, i, d) {
      if (k in done || !(k in path)) return
      done[k] = 1
      n = split(deps[k], d, " ")
      for (i = 1; i <= n; i++) visit(key(d[i]))
      print path[k]
    }
    FILENAME ~ /modules\.builtin$/ { builtin[key($1)] = 1; next }
    {
      p = $1; sub(/:$/, "", p)
      k = key(p); path[k] = p
      deps[k] = $0; sub(/^[^:]*:[ ]*/, "", deps[k])
    }
    END {
      n = split(roots, r, " ")
      for (i = 1; i <= n; i++) {
        gsub(/-/, "_", r[i])
        if (!(r[i] in path) && !(r[i] in builtin)) {
          print "no module " r[i] > "/dev/stderr"; bad = 1
        }
        visit(r[i])
      }
      exit bad
    }
  ' "$1" "$(dirname "$1")/modules.builtin"
}

# Print the folder of the unpacked kernel, fetching it when needed.
kernel_dir ()
{
  local cached meta name debs
  cached=$(ls -d "$cache"/kernel-*/version 2>/dev/null | LC_ALL=C sort -V | tail -n 1)
  cached=${cached%/version}

  if [ -n "${VHDKIT_GUEST_KERNEL_DEB:-}" ]; then
    [ -f "$VHDKIT_GUEST_KERNEL_DEB" ] || die "no file $VHDKIT_GUEST_KERNEL_DEB"
    name=$(dpkg-deb -f "$VHDKIT_GUEST_KERNEL_DEB" Package)
    if [ -f "$cache/kernel-${name#linux-image-}/version" ] &&
       [ "$cache/kernel-${name#linux-image-}/version" -nt "$VHDKIT_GUEST_KERNEL_DEB" ]; then
      echo "$cache/kernel-${name#linux-image-}"
    else
      unpack_kernel "$VHDKIT_GUEST_KERNEL_DEB"
    fi
    return
  fi

  if [ -n "$cached" ] && [ -z "${VHDKIT_GUEST_REFRESH:-}" ]; then
    echo "$cached"
    return
  fi

  find_program apt-get >/dev/null || skip "no apt-get to download the kernel"
  debs=$cache/debs
  mkdir -p "$debs"
  rm -f "$debs"/linux-image-amd64_*.deb
  # apt-get download works as any user; as root it warns that the _apt
  # user cannot write here, which is harmless.
  # Package lists that are missing or out of date (the archive has moved
  # on to a newer kernel) make the download fail: as root, update them once.
  if ! (cd "$debs" && apt-get -q download linux-image-amd64) >&2 &&
     ! { [ "$(id -u)" -eq 0 ] && apt-get -q update >&2 &&
         (cd "$debs" && apt-get -q download linux-image-amd64) >&2; }; then
    if [ -n "$cached" ]; then
      echo "$cached"
      return
    fi
    skip "cannot download linux-image-amd64 (run apt-get update?)"
  fi
  meta=$(ls "$debs"/linux-image-amd64_*.deb)
  name=$(dpkg-deb -f "$meta" Depends | sed 's/[ ,(].*//')
  case "$name" in
    linux-image-*) ;;
    *) die "linux-image-amd64 depends on '$name', not a kernel package" ;;
  esac
  if [ -f "$cache/kernel-${name#linux-image-}/version" ]; then
    echo "$cache/kernel-${name#linux-image-}"
    return
  fi
  rm -f "$debs"/linux-image-[0-9]*.deb
  (cd "$debs" && apt-get -q download "$name") >&2 \
    || skip "cannot download $name"
  unpack_kernel "$(ls "$debs/$name"_*.deb)"
  # The package is 70 MB and everything needed is now unpacked.
  rm -f "$debs/$name"_*.deb
}

kdir=$(kernel_dir)
version=$(cat "$kdir/version")
[ -f "$kdir/vmlinux-$version" ] ||
  extract_vmlinux "$kdir/vmlinuz-$version" "$kdir/vmlinux-$version"

# ---- The initramfs ---------------------------------------------------

# Rebuild only when an input changed: this script, the guest's init, the
# kernel, or one of the programs copied in.
key=$( {
  cat "${BASH_SOURCE[0]}" "$here/init" "$kdir/modules.list"
  echo "$version"
  for program in "$busybox" "${program_path[@]}"; do
    ls -lL "$program"
  done
} | sha256sum | cut -c1-16)
# Uncompressed: unpacking 11 MB of gzip takes the guest ~3 s under TCG.
initramfs=$cache/initramfs-$version-$key.cpio

if [ ! -f "$initramfs" ]; then
  root=$(mktemp -d "$cache/root.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,mnt,etc,lib/modules}
  # A dynamically linked busybox works too, with its libraries.
  copy_with_libs "$root" "$busybox"
  [ "$busybox" = /bin/busybox ] || install -m 755 "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    case "$applet" in
      # The real programs, copied below, must win over these applets.
      mke2fs|mkfs.ext2|nbd-client|socat) continue ;;
    esac
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  for program in "${guest_programs[@]}"; do
    copy_with_libs "$root" "${program_path[$program]}"
    # /init runs each by name, with /sbin first on PATH.
    [ "${program_path[$program]}" = "/sbin/$program" ] ||
      ln -s "${program_path[$program]}" "$root/sbin/$program"
  done
  ln -s "${program_path[mke2fs]}" "$root/sbin/mkfs.ext4"
  [ ! -f /etc/mke2fs.conf ] || install -m 644 /etc/mke2fs.conf "$root/etc/"
  # Debian's loader finds libraries in the multiarch folders by itself;
  # this makes sure of it for copies of other layouts.
  printf '%s\n' /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu \
    > "$root/etc/ld.so.conf"

  cp -a "$kdir/modules/$version" "$root/lib/modules/"
  $depmod -b "$root" "$version" || die "depmod failed on the initramfs"
  sed "s,^,/lib/modules/$version/," "$kdir/modules.list" > "$root/etc/vhdkit-modules"
  echo "$version" > "$root/etc/vhdkit-kernel"

  install -m 755 "$here/init" "$root/init"
  write_cpio "$root" "$initramfs.tmp" || die "cpio failed"
  rm -f "$cache"/initramfs-*.cpio "$cache"/initramfs-*.cpio.gz
  mv "$initramfs.tmp" "$initramfs"
fi

if [ -f "$kdir/vmlinux-$version" ]; then
  echo "$kdir/vmlinux-$version"
else
  echo "$kdir/vmlinuz-$version"
fi
echo "$initramfs"

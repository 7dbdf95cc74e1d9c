#!/usr/bin/env bash
# make install (into DESTDIR) puts the plugin where nbdkit looks for
# plugins by name, the folder that nbdkit's pkg-config file names (or the
# one configure was given with --with-nbdkit-plugindir, as make distcheck
# does), and installs a library that a program can build against with
# nothing but <vhdkit.h> and pkg-config vhdkit: a tiny program built
# that way reads an image that qemu-io wrote, and sees the version that
# vhdtool --version and the installed plugin print.
#
# That "nbdkit vhd" then finds the plugin by name cannot be tried without
# installing into the real folder: instead the folder is checked to be
# nbdkit's own plugindir (nbdkit --dump-config), which is where nbdkit
# looks for "vhd".

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires qemu-io --version
requires qemu-img --version
requires pkg-config --version
requires pkg-config --exists nbdkit
requires make --version

for v in VHDKIT_TOP_BUILDDIR VHDKIT_NBDKIT_PLUGINDIR \
         VHDKIT_NBDKIT_PLUGINDIR_FROM VHDKIT_LIBDIR VHDKIT_INCLUDEDIR \
         VHDKIT_BINDIR VHDKIT_CC; do
  if [ -z "${!v:-}" ]; then
    echo "$0: FAIL: $v is not set (make check sets it)" >&2
    exit 1
  fi
done

tmp=$(scratch_dir)
dest=$tmp/dest

# Install the parts that make install installs (tests/ installs nothing,
# and is the folder running this test), in a make of its own.
for sub in lib plugin filter tools; do
  if [ -f "$VHDKIT_TOP_BUILDDIR/$sub/Makefile" ]; then
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
      make -C "$VHDKIT_TOP_BUILDDIR/$sub" install DESTDIR="$dest" >/dev/null
  fi
done
find "$dest" -type f -o -type l | sort

# The plugin: in the configured folder, which is nbdkit's own unless an
# option named another.
plugindir=$VHDKIT_NBDKIT_PLUGINDIR
nbdkit_plugindir=$(pkg-config --variable=plugindir nbdkit)
case "$VHDKIT_NBDKIT_PLUGINDIR_FROM" in
  pkg-config)
    test "$plugindir" = "$nbdkit_plugindir" ;;
  option)
    echo "$0: configured with --with-nbdkit-plugindir=$plugindir:" \
         "checking that folder, not nbdkit's $nbdkit_plugindir" ;;
  *)
    echo "$0: FAIL: VHDKIT_NBDKIT_PLUGINDIR_FROM=$VHDKIT_NBDKIT_PLUGINDIR_FROM" >&2
    exit 1 ;;
esac
plugin=$dest$plugindir/nbdkit-vhd-plugin.so
test -f "$plugin"

# pkg-config's plugindir is the folder that nbdkit itself searches.
nbdkit_config_plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
test "$nbdkit_config_plugindir" = "$nbdkit_plugindir"

# The filter, once there is one.
if [ -f "$VHDKIT_TOP_BUILDDIR/filter/Makefile" ]; then
  test -n "${VHDKIT_NBDKIT_FILTERDIR:-}"
  if [ "$VHDKIT_NBDKIT_PLUGINDIR_FROM" = pkg-config ]; then
    test "$VHDKIT_NBDKIT_FILTERDIR" = "$(pkg-config --variable=filterdir nbdkit)"
  fi
  test -f "$dest$VHDKIT_NBDKIT_FILTERDIR/nbdkit-vhd-filter.so"
fi

# The installed plugin loads, by path.
libdir=$dest$VHDKIT_LIBDIR
dump=$(LD_LIBRARY_PATH="$libdir" nbdkit "$plugin" --dump-plugin)
echo "$dump"
plugin_version=$(sed -n 's/^vhd_version=//p' <<<"$dump")

# The headers and pkg-config file.
test -f "$dest$VHDKIT_INCLUDEDIR/vhdkit.h"
test -f "$dest$VHDKIT_INCLUDEDIR/vhdkit-version.h"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$dest"
pkg-config --exists vhdkit
# A static link needs liburing: the .pc file says so.
pkg-config --static --libs vhdkit | grep -q -- '-luring'

# An image with known data, written by qemu.
img=$tmp/disk.vhd
vhdtool create --dynamic 8M "$img"
qemu-io -f vpc -c 'write -P 0xa5 1048576 65536' "$img"
size=$(qemu-img info --output=json "$img" |
       python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')

cat > "$tmp/reader.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vhdkit.h>

int
main (int argc, char **argv)
{
  static unsigned char buf[3 * 65536];
  vhd_disk *disk;
  int r;

  if (argc != 2)
    return 2;
  r = vhd_open (argv[1], &(struct vhd_open_options) { .readonly = true },
                &disk);
  if (r < 0) {
    fprintf (stderr, "vhd_open: %s\n", vhd_last_error ());
    return 1;
  }
  /* 64 KiB of zeros, qemu's 64 KiB of 0xa5, 64 KiB of zeros. */
  r = vhd_pread (disk, buf, sizeof buf, 1048576 - 65536);
  if (r < 0) {
    fprintf (stderr, "vhd_pread: %s\n", vhd_last_error ());
    return 1;
  }
  for (size_t i = 0; i < sizeof buf; i++) {
    unsigned char want = i / 65536 == 1 ? 0xa5 : 0;
    if (buf[i] != want) {
      fprintf (stderr, "byte %zu is 0x%02x, not 0x%02x\n", i, buf[i], want);
      return 1;
    }
  }
  printf ("size=%llu\n", (unsigned long long) vhd_get_size (disk));
  printf ("version=%s\n", vhd_get_version ());
  printf ("header=%s %d.%d.%d\n", VHDKIT_VERSION_STRING,
          VHDKIT_VERSION_MAJOR, VHDKIT_VERSION_MINOR, VHDKIT_VERSION_MICRO);
  vhd_close (disk);
  return 0;
}
C

# -I/-L come only from pkg-config (pointing into DESTDIR), never from the
# build tree.
read -r -a cflags <<< "${VHDKIT_CFLAGS:-}"
read -r -a ldflags <<< "${VHDKIT_LDFLAGS:-}"
read -r -a pc <<< "$(pkg-config --cflags --libs vhdkit)"
echo "pkg-config: ${pc[*]}"
$VHDKIT_CC -std=c11 -Wall -Wextra -Werror "${cflags[@]}" \
  "$tmp/reader.c" -o "$tmp/reader" "${pc[@]}" "${ldflags[@]}" \
  -Wl,-rpath,"$libdir"
out=$("$tmp/reader" "$img")
echo "$out"
grep -qx "size=$size" <<<"$out"
version=$(sed -n 's/^version=//p' <<<"$out")
test -n "$version"
grep -qx "header=$version $version" <<<"$out"

# The installed vhdtool (with the installed library) and the installed
# plugin say the same version.
tool=$(LD_LIBRARY_PATH="$libdir" "$dest$VHDKIT_BINDIR/vhdtool" --version)
test "$tool" = "vhdtool $version"
test "$plugin_version" = "$version"

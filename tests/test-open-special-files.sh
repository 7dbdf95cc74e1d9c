#!/usr/bin/env bash
# A FIFO, a character device, a directory or a socket, used as an image
# named .vhd or .vhdx (vhdtool info, vhdtool check, the plugin), as the parent of a
# differencing child (the parent's file replaced by it, so that the
# child's locators lead there) or as vhdtool convert's source, is refused
# with a message naming what it is, and never hangs the open: a FIFO's
# open waits for a writer unless it is opened with O_NONBLOCK.  Each run
# is guarded with a generous timeout; what is asserted is the refusal.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires python3 --version
requires timeout --version

tmp=$(scratch_dir)

# make_special KIND PATH: a special file of that kind at PATH.
make_special ()
{
  case $1 in
  fifo) mkfifo "$2" ;;
  chardev) mknod "$2" c 1 5 ;;          # /dev/zero's numbers
  directory) mkdir "$2" ;;
  socket)
    # The socket outlives the process that bound it (nobody listens).
    python3 -c 'import socket, sys
s = socket.socket (socket.AF_UNIX, socket.SOCK_STREAM)
s.bind (sys.argv[1])' "$2" ;;
  esac
}

# A character device node where this filesystem allows opening one
# (nodev mounts do not): otherwise use /dev/zero itself where a path is
# enough.
kinds="fifo directory socket chardev"

# refused WHAT LOG CMD...: CMD fails, within the timeout, saying WHAT.
refused ()
{
  local what=$1 log=$2 status=0
  shift 2
  timeout 60 "$@" > "$log" 2>&1 || status=$?
  cat "$log"
  if [ $status -eq 0 ]; then
    echo "$0: FAIL: '$*' accepted $what" >&2
    exit 1
  fi
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    echo "$0: FAIL: '$*' hung on $what (killed by timeout)" >&2
    exit 1
  fi
  if ! grep -qF "$what" "$log"; then
    echo "$0: FAIL: '$*' does not say it is $what" >&2
    exit 1
  fi
}

what_of ()
{
  case $1 in
  fifo) echo "a FIFO" ;;
  chardev) echo "a character device" ;;
  directory) echo "a directory" ;;
  socket) echo "a socket" ;;
  esac
}

for kind in $kinds; do
  what=$(what_of "$kind")
  d=$tmp/$kind
  mkdir "$d"

  # As the image itself, named as a VHD and as a VHDX (the name picks
  # the format's driver, and each must refuse before it reads).
  for ext in vhd vhdx; do
  img=$d/image.$ext
  if [ "$kind" = chardev ]; then
    make_special "$kind" "$img"
    # A nodev filesystem refuses to open device nodes at all: use the
    # real /dev/zero then.
    if ! timeout 10 head -c1 "$img" > /dev/null 2>&1; then
      rm "$img"
      ln -s /dev/zero "$img"
    fi
  else
    make_special "$kind" "$img"
  fi
  refused "$what" "$d/info-$ext.log" vhdtool info "$img"
  refused "$what" "$d/check-$ext.log" vhdtool check "$img"
  refused "$what" "$d/serve-$ext.log" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true --run true
  refused "$what" "$d/serve-rw-$ext.log" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$img" --run true
  refused "$what" "$d/convert-$ext.log" vhdtool convert "$img" "$d/out.vhd"
  test ! -e "$d/out.vhd"
  done

  # As the parent of a differencing child: the locators (W2ru .\p.vhd,
  # W2ku with the absolute path) and the parent name all lead to p.vhd,
  # which is now a special file.
  vhdtool create --dynamic 4M "$d/p.vhd"
  vhdtool create --parent "$d/p.vhd" "$d/c.vhd"
  rm "$d/p.vhd"
  if [ "$kind" = chardev ] && [ -L "$img" ]; then
    # A symlink out of the folder would be refused for confinement, not
    # for what it is: only a node in the folder tests the type.
    echo "$0: character device nodes cannot be opened here:" \
         "skipping the chardev parent"
    continue
  fi
  make_special "$kind" "$d/p.vhd"
  timeout 60 vhdtool info "$d/c.vhd" > "$d/info-child.log" 2>&1
  cat "$d/info-child.log"
  grep -q "^parent: not opened: .*$what" "$d/info-child.log"
  refused "$what" "$d/serve-child.log" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$d/c.vhd" readonly=true --run true
  refused "$what" "$d/check-child.log" vhdtool check "$d/c.vhd"
  refused "$what" "$d/convert-child.log" \
    vhdtool convert "$d/c.vhd" "$d/out-child.vhd"
  test ! -e "$d/out-child.vhd"
done

#!/usr/bin/env bash
# vhdtool create never overwrites: over an existing file it fails with
# exit status 1 and a message, and leaves the file's bytes as they were.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

tmp=$(scratch_dir)
cd "$tmp"

head -c 100000 /dev/urandom > data.bin
vhdtool create --dynamic 3M existing.vhd
vhdtool create --fixed 3M parent.vhd

# try_over FILE CREATE-ARGS...: vhdtool create CREATE-ARGS FILE must fail
# with status 1, say so on stderr and leave FILE unchanged.
try_over ()
{
  local file=$1 before after status
  shift
  before=$(sha256sum < "$file")
  status=0
  vhdtool create "$@" "$file" 2> err || status=$?
  cat err
  if [ "$status" -ne 1 ]; then
    echo "$0: create $* over $file: exit status $status, expected 1"
    exit 1
  fi
  if [ ! -s err ]; then
    echo "$0: create $* over $file failed without a message"
    exit 1
  fi
  after=$(sha256sum < "$file")
  if [ "$before" != "$after" ]; then
    echo "$0: create $* changed the existing $file"
    exit 1
  fi
  echo "checked: create $* over $file: status 1, file unchanged"
}

try_over data.bin --dynamic 3M
try_over data.bin --fixed 3M
try_over existing.vhd --dynamic 3M
try_over existing.vhd --fixed 100M
try_over data.bin --parent parent.vhd
try_over existing.vhd --parent parent.vhd

# A dangling symlink is not followed into a new file either.
ln -s nowhere.vhd link.vhd
status=0
vhdtool create --dynamic 3M link.vhd || status=$?
test "$status" -eq 1
test ! -e nowhere.vhd
echo "checked: create over a dangling symlink fails and creates nothing"

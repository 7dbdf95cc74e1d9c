#!/usr/bin/env bash
# test-crash-kill9.sh on a dynamic VHDX: nbdkit killed with SIGKILL at
# random moments while a client writes, zeroes, trims and flushes; after
# every kill the image checks clean (a log to replay allowed), qemu-img
# reads it (after replaying its log in a copy), and everything a flush
# covered reads back.

# 20 rounds unless told otherwise: the VHD run already covers the
# server's side at 50; these cover the VHDX log (a longer run:
# VHDKIT_KILL9_ROUNDS=200).
VHDKIT_KILL9_ROUNDS=${VHDKIT_KILL9_ROUNDS:-20} \
VHDKIT_KILL9_FORMAT=vhdx exec "$VHDKIT_SRCDIR/test-crash-kill9.sh"

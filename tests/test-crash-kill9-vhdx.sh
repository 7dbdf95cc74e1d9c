#!/usr/bin/env bash
# test-crash-kill9.sh on a dynamic VHDX, then on a differencing VHDX
# over a dynamic VHDX parent: nbdkit killed with SIGKILL at random
# moments while a client writes, zeroes, trims and flushes; after every
# kill the image checks clean (a log to replay allowed), qemu-img reads
# the dynamic one (after replaying its log in a copy), everything a
# flush covered reads back, and the differencing child's parent is
# unchanged (its sha256) and shows through every block never written.

set -e

# 20 rounds of each unless told otherwise: the VHD run already covers
# the server's side at 50; these cover the VHDX log, and the child's
# sector bitmaps and two chunks (longer runs: VHDKIT_KILL9_ROUNDS=200,
# VHDKIT_KILL9_DIFF_ROUNDS=200).
VHDKIT_KILL9_ROUNDS=${VHDKIT_KILL9_ROUNDS:-20} \
VHDKIT_KILL9_FORMAT=vhdx "$VHDKIT_SRCDIR/test-crash-kill9.sh"
VHDKIT_KILL9_ROUNDS=${VHDKIT_KILL9_DIFF_ROUNDS:-20} \
VHDKIT_KILL9_FORMAT=vhdx-diff exec "$VHDKIT_SRCDIR/test-crash-kill9.sh"

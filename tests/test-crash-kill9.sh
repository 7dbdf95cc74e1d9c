#!/usr/bin/env bash
# nbdkit serving a dynamic image is killed with SIGKILL at random moments
# while a client writes (several requests in flight), zeroes, trims and
# flushes; after every kill:
#  - `vhdtool check` finds no corruption (leaked space is allowed),
#  - qemu-img still reads the image,
#  - a restarted nbdkit reads back everything that a flush (or a FUA
#    write) covered before the kill, and the same bytes as qemu-img
#    (but where a kill left a clear bitmap bit over unflushed data:
#    qemu's vpc driver ignores a dynamic disk's bitmaps).
# Bytes that unflushed requests touched may read either way after a kill,
# but must then stay as they read: the client adopts them as its
# reference.  Requests in flight together never overlap, but often share
# a sector (unaligned, back to back), which the server must handle.
# nbdkit itself must end each round killed by the test's SIGKILL (status
# 137), not by anything before it (a sanitizer abort, a crash: the
# client sees a dead server either way), and its log must hold no
# sanitizer report and no error (nbdkit_reap in plugin-functions.sh).
# 50 rounds (VHDKIT_KILL9_ROUNDS), a fresh image every 25; the kill
# moments are random, the data seeded (VHDKIT_KILL9_SEED, printed).  A
# failure keeps the image, reference, request log and nbdkit's logs in
# $TMPDIR/vhdkit-kill9-failure.  VHDKIT_KILL9_SIGNAL (KILL) is for
# test-crash-kill9-detects-abort.sh only: another signal stands for an
# nbdkit that dies on its own during the writes, and must fail the test.
# VHDKIT_KILL9_FORMAT=vhdx (test-crash-kill9-vhdx.sh) runs the same on a
# dynamic VHDX in 1 MiB blocks made by qemu-img: a kill leaves its log in
# use, so qemu-img reads a copy after its own `check -r all` has replayed
# that log (qemu refuses an image with a log to replay otherwise), which
# also checks that another implementation replays our entries the same.
# VHDKIT_KILL9_FORMAT=vhdx-diff runs it on a differencing VHDX (1 MiB
# blocks) over a dynamic VHDX parent of 4 GiB + 8 MiB that holds random
# data around 0 and 4 GiB, where the client writes (so that both sector
# bitmap chunks of the child get blocks, and writes cross 4 GiB): every
# block that the client never wrote must read as the parent, the
# parent's file must keep its sha256, and half the rounds put each page
# of a flush in a log entry of its own (VHDKIT_VHDX_LOG_ENTRY_PAGES=1).
# In both VHDX runs, every third round caps a log sequence at 8 sectors
# (VHDKIT_VHDX_LOG_SEQUENCE_PAGES), so that flushes checkpoint often.
# qemu opens no differencing VHDX: nothing is compared with it there.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e

requires_plugin
requires_nbdsh
requires qemu-img --version
requires vhdtool --help

rounds=${VHDKIT_KILL9_ROUNDS:-50}
signal=${VHDKIT_KILL9_SIGNAL:-KILL}
format=${VHDKIT_KILL9_FORMAT:-vhd}
case $format in
  vhd) qemu_format=vpc ;;
  vhdx) qemu_format=vhdx ;;
  vhdx-diff) qemu_format= ;;
  *) echo "$0: VHDKIT_KILL9_FORMAT=$format: vhd, vhdx or vhdx-diff" >&2
     exit 1 ;;
esac
per_image=25            # rounds on one image before a fresh one
size=$((128 * 1024 * 1024))
tmp=$(scratch_dir)
img=$tmp/disk.${format%-diff}
base=$tmp/base.vhdx     # vhdx-diff: img's parent
if [ "$format" = vhdx-diff ]; then
  # Two sector bitmap chunks of 4 GiB (2^23 sectors of 512 bytes).
  size=$(( (4096 + 8) * 1024 * 1024 ))
fi
sock=$tmp/nbd.sock
pidfile=$tmp/nbdkit.pid
ref=$tmp/reference.raw
state=$tmp/state.json
seed=${VHDKIT_KILL9_SEED:-$RANDOM}
RANDOM=$seed
echo "$0: seed $seed (VHDKIT_KILL9_SEED), $rounds rounds on a $format image"

new_image ()
{
  rm -f "$img" "$ref" "$tmp/requests.log"
  if [ "$format" = vhd ]; then
    vhdtool create --dynamic --block-size 512K "$size" "$img"
  elif [ "$format" = vhdx ]; then
    qemu-img create -q -f vhdx -o subformat=dynamic,block_size=1M \
      "$img" "$size"
  else
    new_chain
    return
  fi
  truncate -s "$size" "$ref"
  echo '{"dontcare": [], "touched": [], "qemu_differs": []}' > "$state"
}

# vhdx-diff: a parent holding random data in parts of the 512 KiB blocks
# of [0, 8 MiB) and [4 GiB - 8 MiB, 4 GiB + 8 MiB), written from a raw
# file that becomes the reference, and a child over it.  Those blocks
# start as "touched", so that the client writes there (the parent's
# data, the chunk boundary) and seldom elsewhere.
new_chain ()
{
  rm -f "$base" "$tmp/base.raw"
  python3 - "$tmp/base.raw" "$size" "$seed" "$state" <<'PY'
import json, random, sys
path, size, seed, state = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
MiB, BLOCK = 1 << 20, 512 * 1024
rng = random.Random("parent " + seed)
windows = [(0, 8 * MiB), (4096 * MiB - 8 * MiB, size)]
touched, with_data = [], []
with open(path, "wb") as f:
    f.truncate(size)
    for start, end in windows:
        for b in range(start // BLOCK, end // BLOCK):
            touched.append(b)
            if rng.random() < 0.25:
                continue        # a hole in the parent too
            off = rng.randrange(BLOCK // 2)
            n = rng.randrange(1, BLOCK - off + 1)
            f.seek(b * BLOCK + off)
            f.write(rng.randbytes(n))
            with_data.append(b)
json.dump({"dontcare": [], "touched": touched, "qemu_differs": [],
           "parent_blocks": with_data}, open(state, "w"))
PY
  vhdtool create --source "$tmp/base.raw" --dynamic --block-size 1M \
    "$size" "$base" > /dev/null
  vhdtool create --parent "$base" --block-size 1M "$img" > /dev/null
  cp --sparse=always "$tmp/base.raw" "$ref"
  rm -f "$tmp/base.raw"
  base_sum=$(sha256sum < "$base")
}

stop_server ()
{
  if [ -n "$nbdkit_pid" ]; then
    kill -9 "$nbdkit_pid" 2>/dev/null || true
    wait "$nbdkit_pid" 2>/dev/null || true
    nbdkit_pid=
  fi
}
cleanup_fn stop_server

# Each server's stderr is $tmp/nbdkit.log, checked when it ends, then
# added to $tmp/nbdkit-all.log.
start_server ()
{
  if [ -f "$tmp/nbdkit.log" ]; then
    cat "$tmp/nbdkit.log" >> "$tmp/nbdkit-all.log"
  fi
  # vhdx-diff: every other round, a log entry for each page of a flush.
  if [ "$format" = vhdx-diff ] && (( round % 2 == 0 )); then
    export VHDKIT_VHDX_LOG_ENTRY_PAGES=1
  else
    unset VHDKIT_VHDX_LOG_ENTRY_PAGES
  fi
  # Both VHDX formats: every third round, a log of 8 sectors a sequence,
  # so that flushes checkpoint and a kill leaves sequences of several
  # entries, some begun by a checkpoint, to replay.
  if [ "$format" != vhd ] && (( round % 3 == 1 )); then
    export VHDKIT_VHDX_LOG_SEQUENCE_PAGES=8
  else
    unset VHDKIT_VHDX_LOG_SEQUENCE_PAGES
  fi
  nbdkit_start_bg "$sock" "$pidfile" "$tmp/nbdkit.log" file="$img"
}

# reap_server HOW ROUND: nbdkit ended as HOW (nbdkit_reap), with a clean
# log; or the round fails.
reap_server ()
{
  if ! nbdkit_reap "$1" "$tmp/nbdkit.log"; then
    echo "$0: round $2: nbdkit did not end as $1 by the test, or its log" \
         "is not clean (seed $seed)" >&2
    keep_failure
    exit 1
  fi
}

# The client: verify what the restarted server reads, then write until the
# server dies.  reference.raw (sparse) holds what flushes covered; the
# state file the ranges of requests that were not flushed when the server
# died (don't care) and the 512 KiB blocks that any request touched
# (every other block must read as zeros).  About one request in 60 goes to
# an untouched block, so that blocks are still being allocated when the
# server dies, round after round; a fresh image every 25 rounds.
cat > "$tmp/client.py" <<'PY'
import json, os, random, sys
import nbd

sock, ref_path, state_path, qemu_raw, started, seed = sys.argv[1:7]
verify_only = sys.argv[7:] == ["verify-only"]
rng = random.Random(int(seed))
SECTOR = 512
BLOCK = 512 * 1024

def merge(ranges):
    out = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out

def subtract(ranges, s, e):
    out = []
    for a, b in ranges:
        if a < s:
            out.append([a, min(b, s)])
        if b > e:
            out.append([max(a, e), b])
    return out

def differs(x, y, start, end, skip):
    """The first offset in [start, end) outside the skip ranges where
    x and y (holding bytes from start) differ, or None."""
    at = start
    for s, e in skip + [[end, end]]:
        s, e = max(s, start), min(e, end)
        if s < at and e <= at:
            continue
        if s > at and x[at - start:s - start] != y[at - start:s - start]:
            return next(i for i in range(at, s)
                        if x[i - start] != y[i - start])
        at = max(at, e)
        if at >= end:
            break
    return None

def fail(msg):
    sys.exit("%s (client seed %s)" % (msg, seed))

def shared_sector(byte):
    """Requests of one batch that shared byte's sector (a hint: they
    were in flight together, and each was read-modify-written)."""
    log = os.path.join(os.path.dirname(state_path), "requests.log")
    sector, batch, found = byte // SECTOR, [], []
    for line in open(log) if os.path.exists(log) else []:
        words = line.split()
        if len(words) == 2 and "+" in words[1]:
            o, n = map(int, words[1].split("+"))
            if o // SECTOR <= sector <= (o + n - 1) // SECTOR:
                batch.append(line.strip())
        else:
            if len(batch) > 1:
                found.append(" & ".join(batch))
            batch = []
    return ("; requests that shared its sector in one batch: "
            + " | ".join(found)) if found else ""

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_unix(sock)
size = h.get_size()
nblocks = size // BLOCK
with open(state_path) as f:
    state = json.load(f)
dontcare = merge(state["dontcare"])
touched = set(state["touched"])
ref = open(ref_path, "r+b")
# "-": no other reader (qemu opens no differencing VHDX).
qemu = open(qemu_raw, "rb") if qemu_raw != "-" else None

# 1. Every touched block: the plugin reads the reference outside the
# don't-care ranges, and reads what qemu-img read outside the ranges
# where they may differ.  What the plugin reads becomes the reference:
# unflushed bytes may read either way after a kill, but must then stay as
# they read.  qemu's vpc driver ignores the sector bitmaps of a dynamic
# disk, so where a kill left a clear bit over unflushed data, qemu reads
# the data and vhdkit zeros (both are allowed) until a flushed request
# covers those bytes again: "qemu_differs" keeps those ranges.
adopted = sum(e - s for s, e in dontcare)
qemu_differs = merge(state.get("qemu_differs", []) + dontcare)
for b in sorted(touched):
    off = b * BLOCK
    disk = h.pread(BLOCK, off)
    ref.seek(off)
    want = ref.read(BLOCK)
    i = differs(disk, want, off, off + BLOCK, dontcare)
    if i is not None:
        fail("LOST FLUSHED DATA: byte %d reads 0x%02x, the last flush"
             " covering it wrote 0x%02x%s" % (i, disk[i - off], want[i - off],
                                             shared_sector(i)))
    if qemu:
        qemu.seek(off)
        q = qemu.read(BLOCK)
        i = differs(disk, q, off, off + BLOCK, qemu_differs)
        if i is not None:
            fail("qemu-img reads 0x%02x at byte %d, the plugin 0x%02x"
                 % (q[i - off], i, disk[i - off]))
    ref.seek(off)
    ref.write(disk)
dontcare = []

# 2. Every other block reads as zeros (a child's: as its parent, which
# the reference holds there), through both readers.
parent_blocks = state.get("parent_blocks", [])
def zero_block(b, what, read):
    if b in touched:
        return
    ref.seek(b * BLOCK)
    if read(b * BLOCK, BLOCK) != ref.read(BLOCK):
        fail("%s: block %d, never written, does not read as %s"
             % (what, b, "the parent" if parent_blocks else "zeros"))

# The parent's data, whatever the extents say.
for b in parent_blocks:
    zero_block(b, "plugin", lambda o, n: h.pread(n, o))

extents = []
def on_extent(context, offset, entries, err):
    if context == nbd.CONTEXT_BASE_ALLOCATION:
        for i in range(0, len(entries), 2):
            extents.append((entries[i], entries[i + 1]))
    return 0
at = 0
while at < size:
    extents.clear()
    # A request is at most 4 GiB - 1 (NBD's 32-bit length).
    h.block_status(min(size - at, 1 << 31), at, on_extent)
    for length, flags in extents:
        if not flags & nbd.STATE_ZERO:
            for b in range(at // BLOCK, min(nblocks, -(-(at + length) // BLOCK))):
                zero_block(b, "plugin", lambda o, n: h.pread(n, o))
        at += length
fd = qemu.fileno() if qemu else None
at = 0
while qemu:
    try:
        at = os.lseek(fd, at, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, at, os.SEEK_HOLE)
    for b in range(at // BLOCK, min(nblocks, -(-end // BLOCK))):
        zero_block(b, "qemu-img",
                   lambda o, n: (qemu.seek(o), qemu.read(n))[1])
    at = end

if verify_only:
    h.shutdown()
    ref.close()
    sys.exit(0)

# 3. Write until the server dies.
open(started, "w").close()
pending = []            # (offset, length, bytes or None) not yet flushed
counts = dict(writes=0, zeros=0, trims=0, flushes=0, fua=0, new_blocks=0)

def covered(offset, data):
    global qemu_differs
    ref.seek(offset)
    ref.write(data)
    qemu_differs = subtract(qemu_differs, offset, offset + len(data))

def pick_range(taken):
    while True:
        n = rng.choice([1, 511, 4096, 65536, rng.randrange(1, 600000)])
        fresh = [b for b in range(nblocks) if b not in touched]
        if fresh and (not touched or rng.random() < 0.015):
            b = rng.choice(fresh)
        else:
            b = rng.choice(sorted(touched))
        off = b * BLOCK + rng.randrange(BLOCK)
        if taken and rng.random() < 0.2:
            # Right after another request of the batch, often inside the
            # same sector: the two are in flight together, and the
            # server must not lose either one's bytes.
            off = rng.choice(taken)[1]
        elif rng.random() < 0.5:
            off -= off % SECTOR
            n = max(SECTOR, n - n % SECTOR)
        off = min(off, size - 1)
        n = min(n, size - off)
        # Mostly inside the block; one request in ten may run on.
        if rng.random() < 0.9:
            n = max(1, min(n, (off // BLOCK + 1) * BLOCK - off))
        if all(off + n <= a or off >= b for a, b in taken):
            new = set(range(off // BLOCK, (off + n - 1) // BLOCK + 1))
            counts["new_blocks"] += len(new - touched)
            touched.update(new)
            return off, n

# The log of requests and of the flushes that returned (kept with the
# image when the test fails).
log = open(os.path.join(os.path.dirname(state_path), "requests.log"), "a")
log.write("round with client seed %s\n" % seed)

err = ""
try:
    while True:
        taken = []
        cookies = []
        for _ in range(rng.randrange(1, 9)):
            off, n = pick_range(taken)
            taken.append((off, off + n))
            kind = rng.random()
            log.write("  %s %d+%d\n" % ("write" if kind < 0.75 else
                                        "zero" if kind < 0.9 else "trim",
                                        off, n))
            if kind < 0.75:
                data = rng.randbytes(n)
                fua = rng.random() < 0.1
                pending.append((off, n, data))
                c = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)),
                                 off, flags=nbd.CMD_FLAG_FUA if fua else 0)
                cookies.append((c, fua, (off, n, data)))
                counts["writes"] += 1
            elif kind < 0.9:
                pending.append((off, n, bytes(n)))
                # Without NO_HOLE the server may punch (VHD_IO_MAY_TRIM).
                c = h.aio_zero(n, off, flags=nbd.CMD_FLAG_NO_HOLE
                               if rng.random() < 0.5 else 0)
                cookies.append((c, False, None))
                counts["zeros"] += 1
            else:
                # The engine documents that a dynamic disk's trimmed whole
                # sectors read as zeros; the ragged edges are untouched.
                s = -(-off // SECTOR) * SECTOR
                e = (off + n) // SECTOR * SECTOR
                pending.append((off, n, None))
                if e > s:
                    pending.append((s, e - s, bytes(e - s)))
                c = h.aio_trim(n, off)
                cookies.append((c, False, None))
                counts["trims"] += 1
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c, fua, req in cookies:
            h.aio_command_completed(c)      # raises if it failed
            if fua:
                # A FUA write that returned is durable on its own.
                covered(req[0], req[2])
                pending.remove(req)
                counts["fua"] += 1
        h.flush()
        log.write("flushed\n")
        for off, n, data in pending:
            if data is not None:
                covered(off, data)
        pending = []
        counts["flushes"] += 1
except (nbd.Error, OSError, RuntimeError) as e:
    err = str(e) or type(e).__name__

log.write("server died: %s\n" % err.splitlines()[0])
log.close()
ref.close()
state = dict(dontcare=merge([[o, o + n] for o, n, d in pending]),
             touched=sorted(touched), qemu_differs=qemu_differs,
             parent_blocks=parent_blocks)
with open(state_path + ".new", "w") as f:
    json.dump(state, f)
os.replace(state_path + ".new", state_path)
print("verified %d blocks (%d don't-care bytes adopted); then %s until the"
      " server died (%s); %d bytes don't care"
      % (len(touched) - counts["new_blocks"], adopted, counts,
         err.splitlines()[0], sum(e - s for s, e in state["dontcare"])))
PY

# Keep what a failure needs to be looked at (the scratch folder goes).
keep_failure ()
{
  local keep=${TMPDIR:-/tmp}/vhdkit-kill9-failure
  rm -rf "$keep"
  mkdir -p "$keep"
  cp --sparse=always "$img" "$base" "$ref" "$state" "$tmp/qemu.raw" \
    "$tmp/nbdkit.log" \
    "$tmp/nbdkit-all.log" "$tmp/requests.log" "$tmp/client.py" "$keep/" \
    2>/dev/null || true
  echo "$0: the image, reference and state are kept in $keep" >&2
}

check_image ()
{
  local status=0
  vhdtool check "$img" > "$tmp/check.out" 2>&1 || status=$?
  case $status in
    0) ;;
    5) leaks=$((leaks + 1)) ;;  # leaked space, which a kill may leave
    *)
      cat "$tmp/check.out" >&2
      echo "$0: after round $1: vhdtool check exits $status (4 = corrupt;" \
           "seed $seed)" >&2
      keep_failure
      exit 1
      ;;
  esac
  if [ "$format" = vhdx-diff ]; then
    if [ "$(sha256sum < "$base")" != "$base_sum" ]; then
      echo "$0: after round $1: the parent $base changed (seed $seed)" >&2
      keep_failure
      exit 1
    fi
  elif [ "$format" = vhd ]; then
    qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
  else
    # qemu replays the log that the kill left in a copy, and must find
    # nothing else to repair.
    cp --sparse=always "$img" "$tmp/qemu-copy.vhdx"
    if ! qemu-img check -q -r all -f vhdx "$tmp/qemu-copy.vhdx" \
         > "$tmp/qemu-check.out" 2>&1; then
      cat "$tmp/qemu-check.out" >&2
      echo "$0: after round $1: qemu-img check -r all refuses the copy" \
           "(seed $seed)" >&2
      keep_failure
      exit 1
    fi
    qemu-img convert -f vhdx -O raw "$tmp/qemu-copy.vhdx" "$tmp/qemu.raw"
    rm -f "$tmp/qemu-copy.vhdx"
  fi
}

client ()
{
  python3 "$tmp/client.py" "$sock" "$ref" "$state" \
    "$([ -n "$qemu_format" ] && echo "$tmp/qemu.raw" || echo -)" \
    "$tmp/started" "$seed$1" "${@:2}"
}

# Check the image that the last kill left, then verify it through a
# server that is stopped cleanly afterwards.
verify_and_stop ()
{
  check_image "$1"
  start_server
  if ! client "$1" verify-only; then
    echo "$0: after round $1: verification failed (seed $seed)" >&2
    keep_failure
    exit 1
  fi
  kill "$nbdkit_pid" 2>/dev/null || true
  reap_server stopped "$1"
}

start=$SECONDS
leaks=0
for (( round = 1; round <= rounds; round++ )); do
  if (( (round - 1) % per_image == 0 )); then
    if (( round > 1 )); then
      verify_and_stop $((round - 1))
    fi
    new_image
  fi
  check_image $((round - 1))
  start_server
  rm -f "$tmp/started"
  client "$round" > "$tmp/client.out" 2>&1 &
  client_pid=$!
  # Kill only once the client has verified and begun to write.
  while [ ! -e "$tmp/started" ] && kill -0 "$client_pid" 2>/dev/null; do
    sleep 0.01
  done
  sleep "$(printf '0.%03d' $((50 + RANDOM % 451)))"
  # An nbdkit that died on its own is gone already (bash may have reaped
  # it): the kill then fails, and reap_server says how nbdkit ended.
  kill -s "$signal" "$nbdkit_pid" 2>/dev/null || true
  reap_server killed "$round"
  if ! wait "$client_pid"; then
    cat "$tmp/client.out" >&2
    echo "$0: round $round failed (seed $seed)" >&2
    keep_failure
    exit 1
  fi
  echo "$round: $(cat "$tmp/client.out")"
done
verify_and_stop "$rounds"
if [ "$format" = vhdx-diff ]; then
  # The rounds reached both chunks: each has its sector bitmap block.
  sb=$(vhdtool info "$img" | sed -n 's/^sector bitmap blocks: //p')
  if [ "${sb:-0}" -lt 2 ]; then
    echo "$0: the child has ${sb:-no} sector bitmap blocks: the rounds" \
         "did not write into both chunks (seed $seed)" >&2
    exit 1
  fi
fi

echo "$0: $format: $rounds kill -9 rounds in $((SECONDS - start)) s ($leaks checks" \
     "found leaked space, allowed after a kill); flushed data intact, no" \
     "corruption; nbdkit died of the kill every round, its log clean"

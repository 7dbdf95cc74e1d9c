#!/usr/bin/env bash
# nbdkit serving an image through the filter (over the file plugin) is
# killed with SIGKILL while a client writes and flushes; after every kill
# the image still opens (vhdtool check finds no corruption), and what a
# flush covered before the kill reads back, through the filter and with
# qemu-img.  Bytes of writes not yet covered by a flush may read either
# way, and the client adopts what they read.  nbdkit must end each round
# killed by the test (status 137) with a clean log.  A fixed image, and a
# dynamic one whose blocks are all allocated, by the plugin writing their
# first half only (the filter's writes to the second halves then set
# bitmap bits; qemu's vpc driver ignores bitmaps, so there qemu-img may
# read an unflushed write that vhdkit does not, and each reader is held
# to the flushed data on its own).  12 rounds each (VHDKIT_KILL9_ROUNDS),
# seeded (VHDKIT_KILL9_SEED, printed).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e

requires_plugin
requires_filter
requires_nbdsh
requires qemu-img --version
requires qemu-io --version
requires vhdtool --help

rounds=${VHDKIT_KILL9_ROUNDS:-12}
seed=${VHDKIT_KILL9_SEED:-$RANDOM}
RANDOM=$seed
echo "$0: seed $seed (VHDKIT_KILL9_SEED), $rounds rounds per image"
size=$((32 * 1024 * 1024))
tmp=$(scratch_dir)
sock=$tmp/nbd.sock
pidfile=$tmp/nbdkit.pid

stop_server ()
{
  if [ -n "$nbdkit_pid" ]; then
    kill -9 "$nbdkit_pid" 2>/dev/null || true
    wait "$nbdkit_pid" 2>/dev/null || true
    nbdkit_pid=
  fi
}
cleanup_fn stop_server

# The client writes until the server dies.  After each flush returns, the
# writes before it are applied to the reference; at the end, the ranges
# of writes not yet covered by a flush go to the don't-care file.
cat > "$tmp/client.py" <<'PY'
import json, random, sys
import nbd

sock, ref_path, dontcare_path, seed, block, started = sys.argv[1:7]
rng = random.Random(int(seed))
block = int(block)
h = nbd.NBD()
h.connect_unix(sock)
# Connected: only now does the test start the clock that kills the
# server (under load, starting python can take longer than the delay).
open(started, "w").close()
size = h.get_size()
pending = []
try:
    while True:
        for _ in range(rng.randrange(1, 12)):
            count = rng.choice([1, 512, 4096, 65536, rng.randrange(1, 200000)])
            offset = rng.randrange(0, size - count + 1)
            data = rng.randbytes(count)
            pending.append((offset, data))
            h.pwrite(data, offset)
        h.flush()
        with open(ref_path, "r+b") as ref:
            for offset, data in pending:
                ref.seek(offset)
                ref.write(data)
        pending = []
except nbd.Error:
    pass
with open(dontcare_path, "w") as f:
    json.dump([[o, o + len(d)] for o, d in pending], f)
PY

# verify GOT REF DONTCARE WHAT [adopt]: GOT (the disk as one reader read
# it) equals REF outside DONTCARE; with adopt, REF then takes GOT's bytes
# there (what the next round must keep reading).
cat > "$tmp/verify.py" <<'PY'
import json, sys
got_path, ref_path, dontcare_path, what = sys.argv[1:5]
adopt = sys.argv[5:] == ["adopt"]
dontcare = json.load(open(dontcare_path))
got = open(got_path, "rb").read()
ref = bytearray(open(ref_path, "rb").read())
mask = bytearray(len(ref))
for s, e in dontcare:
    mask[s:e] = b"\x01" * (e - s)
for i in range(0, len(ref), 65536):
    if got[i:i + 65536] != ref[i:i + 65536]:
        for j in range(i, min(i + 65536, len(ref))):
            if got[j] != ref[j] and not mask[j]:
                sys.exit("%s: byte %d reads %d, a flush covered %d" %
                         (what, j, got[j], ref[j]))
if adopt:
    for s, e in dontcare:
        ref[s:e] = got[s:e]
    open(ref_path, "wb").write(ref)
PY

run_image ()
{
  local img=$1 block=$2 r ms
  local ref=$tmp/ref.raw
  qemu-img convert -f vpc -O raw "$img" "$ref"
  for (( r = 1; r <= rounds; r++ )); do
    nbdkit_start_stack_bg "$sock" "$pidfile" "$tmp/nbdkit.log" \
      --filter="$VHDKIT_FILTER" file file="$img"
    rm -f "$tmp/started"
    python3 "$tmp/client.py" "$sock" "$ref" "$tmp/dontcare.json" \
      "$RANDOM" "$block" "$tmp/started" &
    client=$!
    while [ ! -e "$tmp/started" ] && kill -0 "$client" 2>/dev/null; do
      sleep 0.01
    done
    ms=$(( RANDOM % 900 + 100 ))
    sleep "$(printf '0.%03d' "$ms")"
    kill -9 "$nbdkit_pid"
    if ! nbdkit_reap killed "$tmp/nbdkit.log"; then
      echo "$0: $img round $r: nbdkit did not end killed by the test," \
           "or its log is not clean (seed $seed)" >&2
      exit 1
    fi
    wait "$client"
    vhdtool check "$img" > "$tmp/check.log" 2>&1 || {
      cat "$tmp/check.log"
      echo "$0: $img round $r: vhdtool check fails (seed $seed)" >&2
      exit 1
    }
    qemu-img convert -f vpc -O raw "$img" "$tmp/qemu.raw"
    python3 "$tmp/verify.py" "$tmp/qemu.raw" "$ref" "$tmp/dontcare.json" \
      "$img round $r (seed $seed), qemu-img"
    tmp=$tmp nbdkit -U - -r --filter="$VHDKIT_FILTER" file file="$img" \
      --run 'nbdcopy "$uri" "$tmp/filter.raw"'
    python3 "$tmp/verify.py" "$tmp/filter.raw" "$ref" "$tmp/dontcare.json" \
      "$img round $r (seed $seed), the filter" adopt
  done
  echo "$0: $img: $rounds kills, flushed data intact"
}

vhdtool create --fixed "$size" "$tmp/fixed.vhd"
run_image "$tmp/fixed.vhd" 0

bs=$((512 * 1024))
vhdtool create --dynamic --block-size 512K "$size" "$tmp/dynamic.vhd"
BS=$bs nbdkit -U - "$VHDKIT_PLUGIN" file="$tmp/dynamic.vhd" \
  --run 'nbdsh -u "$uri" -c "
import os
bs = int(os.environ[\"BS\"])
for b in range(h.get_size() // bs):
    h.pwrite(bytes([b % 200 + 1]) * (bs // 2), b * bs)
h.flush()
"'
run_image "$tmp/dynamic.vhd" "$bs"

# vhdkit: helpers for the plugin's shell tests (test-plugin-*.sh), sourced
# after functions.sh.

# requires_nbdsh
#
# Skip unless nbdsh works.  nbdsh runs "python3 -m nbd" with the first
# python3 on PATH, and a python3 from pyenv or a virtualenv lacks the nbd
# module that python3-libnbd installs for the system's python: then put
# the system's python3 first on PATH for this test.
requires_nbdsh ()
{
  local bin
  requires nbdsh
  if ! nbdsh -c pass >/dev/null 2>&1 &&
     /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1; then
    bin=$(scratch_dir)
    ln -s /usr/bin/python3 "$bin/python3"
    PATH="$bin:$PATH"
  fi
  requires nbdsh -c pass
}

# The write round trip of test-plugin-roundtrip-*.sh.
#
# roundtrip TYPE SIZE SEED: create a fresh TYPE (fixed or dynamic) image
# of SIZE bytes, write a seeded random pattern to it through the plugin
# with nbdsh (and the same writes to a raw reference file), then check
# that the image reads back equal to the reference three ways: through
# the plugin with nbdcopy, through the plugin again after a restart, and
# with qemu-img (an independent reader) once nbdkit has stopped.

roundtrip ()
{
  local type=$1 size=$2 seed=$3
  local format=${ROUNDTRIP_FORMAT:-vhd} qemu_format
  local tmp img ref
  tmp=$(scratch_dir)
  img=$tmp/disk.$format
  ref=$tmp/reference.raw

  # ROUNDTRIP_FORMAT: vhd or vhdx (vhdtool picks by the extension), or
  # qemu-vhdx for an image that qemu-img made.
  case $format in
    vhd) qemu_format=vpc
         vhdtool create --"$type" "$size" "$img" ;;
    vhdx) qemu_format=vhdx
          vhdtool create --"$type" "$size" "$img" ;;
    qemu-vhdx) qemu_format=vhdx
               qemu-img create -q -f vhdx -o subformat="$type" "$img" "$size" ;;
  esac
  truncate -s "$size" "$ref"

  cat > "$tmp/writes.py" <<'PY'
import os
import random

size = h.get_size()
assert size == int(os.environ["SIZE"]), size
rng = random.Random(int(os.environ["SEED"]))
BLOCK = 2 * 1024 * 1024
nblocks = size // BLOCK

with open(os.environ["REF"], "r+b") as ref:
    def write(offset, count, flags=0):
        buf = rng.randbytes(count)
        h.pwrite(buf, offset, flags)
        ref.seek(offset)
        ref.write(buf)

    def zero(offset, count, flags=0):
        h.zero(count, offset, flags)
        ref.seek(offset)
        ref.write(bytes(count))

    # Ranges that cross a block boundary, unaligned at both ends.
    for b in rng.sample(range(1, nblocks), min(8, nblocks - 1)):
        write(b * BLOCK - rng.randrange(1, 70000), rng.randrange(70000, 140000))
    # One request over several whole blocks, unaligned at both ends.
    write(BLOCK + 4097, 3 * BLOCK + 12345)
    # The first and last bytes of the disk, and a ragged tail.
    write(0, 1)
    write(size - 1, 1)
    write(size - 4097, 4095)
    # Many writes of every shape, some of them FUA, overlapping earlier ones.
    for i in range(300):
        count = rng.choice([1, 511, 512, 513, 4096, 65536,
                            rng.randrange(1, 300000)])
        offset = rng.choice([rng.randrange(0, size - count + 1),
                             rng.randrange(0, size // 512) * 512])
        offset = min(offset, size - count)
        write(offset, count, nbd.CMD_FLAG_FUA if i % 17 == 0 else 0)
    # Zeroes over data and over never-written space.
    for i in range(10):
        count = rng.randrange(1, 3 * BLOCK)
        zero(rng.randrange(0, size - count + 1), count)
    # A whole block written with zero bytes reads back as zeros.
    h.pwrite(bytes(BLOCK), (nblocks - 2) * BLOCK)
    ref.seek((nblocks - 2) * BLOCK)
    ref.write(bytes(BLOCK))
    h.flush()

    # Read everything back through the export while it is still open.
    step = 4 * 1024 * 1024
    for offset in range(0, size, step):
        count = min(step, size - offset)
        ref.seek(offset)
        assert h.pread(count, offset) == ref.read(count), \
            "mismatch in [%d, %d)" % (offset, offset + count)
PY

  # --run's command sees these through its environment.
  tmp=$tmp SIZE=$size SEED=$seed REF=$ref \
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" \
    --run 'nbdsh -u "$uri" -c - < "$tmp/writes.py" &&
           nbdcopy "$uri" "$tmp/nbdcopy.raw"'
  cmp "$ref" "$tmp/nbdcopy.raw"

  # The image as written opens again and reads back the same.
  tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdcopy "$uri" "$tmp/reopened.raw"'
  cmp "$ref" "$tmp/reopened.raw"

  qemu-img convert -f $qemu_format -O raw "$img" "$tmp/qemu.raw"
  cmp "$ref" "$tmp/qemu.raw"
  if [ $qemu_format = vhdx ]; then
    qemu-img check -f vhdx "$img"
  fi

  rm -rf "$tmp"
}

# roundtrip_both_backends TYPE SIZE: the round trip with io_uring (when the
# kernel allows it: skip_part otherwise, which fails on CI) and again with
# pread/pwrite.
roundtrip_both_backends ()
{
  local type=$1 size=$2 uring
  uring=$(nbdkit "$VHDKIT_PLUGIN" --dump-plugin | sed -n 's/^vhd_io_uring=//p')
  echo "vhd_io_uring=$uring"
  if [ "$uring" != yes ]; then
    skip_part "io_uring is not available here (vhd_io_uring=$uring):" \
      "the first round trip runs on pread/pwrite too"
  fi
  roundtrip "$type" "$size" 1
  VHDKIT_IO=pread roundtrip "$type" "$size" 2
}

# nbdkit_start_bg SOCK PIDFILE LOG [ARGS...]
#
# Start nbdkit in the foreground of a background job (-f), serving the vhd
# plugin with ARGS on the unix socket SOCK, its stderr in LOG, and wait
# until it listens.  Sets nbdkit_pid.  The pid that nbdkit writes to
# PIDFILE must be the job's own: then the status that nbdkit_reap waits
# for is nbdkit's, not a wrapper's (the sanitizer build's nbdkit on PATH is
# a script that execs the real one, in the same process).
nbdkit_pid=
nbdkit_start_bg ()
{
  local sock=$1 pidfile=$2 log=$3
  shift 3
  nbdkit_start_stack_bg "$sock" "$pidfile" "$log" "$VHDKIT_PLUGIN" "$@"
}

# nbdkit_start_stack_bg SOCK PIDFILE LOG NBDKIT-ARGS...
#
# As nbdkit_start_bg, but NBDKIT-ARGS name the plugin (and any filters)
# themselves: nbdkit_start_stack_bg ... --filter="$VHDKIT_FILTER" file F
nbdkit_start_stack_bg ()
{
  local sock=$1 pidfile=$2 log=$3 i
  shift 3
  rm -f "$sock" "$pidfile"
  nbdkit -U "$sock" -P "$pidfile" -f "$@" 2> "$log" &
  nbdkit_pid=$!
  for (( i = 0; i < 300; i++ )); do
    if [ -s "$pidfile" ] && [ -S "$sock" ]; then
      if [ "$(cat "$pidfile")" != "$nbdkit_pid" ]; then
        echo "$0: FAIL: nbdkit wrote pid $(cat "$pidfile") to $pidfile," \
             "but the process started is $nbdkit_pid: its exit status" \
             "would not be nbdkit's" >&2
        return 1
      fi
      return 0
    fi
    if ! kill -0 "$nbdkit_pid" 2>/dev/null; then
      break
    fi
    sleep 0.05
  done
  echo "$0: nbdkit did not start ($*)" >&2
  cat "$log" >&2
  return 1
}

# nbdkit_log_clean LOG
#
# LOG, nbdkit's stderr, holds no sanitizer report (ASan, LeakSanitizer,
# UBSan's "runtime error:") and no error line (nbdkit_error prints
# "nbdkit: PLUGIN[CONN]: error: ..."; the server's own "nbdkit: error:").
# nbdkit's normal log, without -v, is empty; its debug lines (-v) say
# "debug:" and do not count.  Prints the offending lines.
nbdkit_log_clean ()
{
  local log=$1 bad=0
  if grep -nE 'ERROR: [A-Za-z]*Sanitizer|LeakSanitizer|runtime error:|SUMMARY: [A-Za-z]*Sanitizer' \
       "$log" >&2; then
    echo "$0: FAIL: a sanitizer report in nbdkit's log $log (above)" >&2
    bad=1
  fi
  if grep -nE '^nbdkit: ([^ :]+: )?error: ' "$log" >&2; then
    echo "$0: FAIL: an error in nbdkit's log $log (above)" >&2
    bad=1
  fi
  return "$bad"
}

# nbdkit_reap HOW LOG
#
# Wait for nbdkit_pid (nbdkit_start_bg) and require that it ended as HOW
# says: "killed" by our SIGKILL (status 137: 128 + 9), or "stopped" by our
# SIGTERM (nbdkit then exits 0); an nbdkit that died on its own first (a
# sanitizer abort: 134, a crash: 139, an exit) fails, whatever the client
# saw.  Then LOG must be clean (nbdkit_log_clean).  Clears nbdkit_pid.
nbdkit_reap ()
{
  local how=$1 log=$2 status=0 want
  case "$how" in
    killed) want=137 ;;
    stopped) want=0 ;;
    *) echo "nbdkit_reap: HOW is killed or stopped, not '$how'" >&2; return 2 ;;
  esac
  wait "$nbdkit_pid" || status=$?
  nbdkit_pid=
  if [ "$status" -ne "$want" ]; then
    cat "$log" >&2
    if [ "$status" -gt 128 ]; then
      echo "$0: FAIL: nbdkit died of signal $((status - 128))" \
           "($(kill -l "$((status - 128))" 2>/dev/null || echo '?')," \
           "status $status), not $how by the test (status $want)" >&2
    else
      echo "$0: FAIL: nbdkit exited with status $status, not $how by the" \
           "test (status $want)" >&2
    fi
    return 1
  fi
  nbdkit_log_clean "$log"
}

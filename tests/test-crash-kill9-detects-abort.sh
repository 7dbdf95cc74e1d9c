#!/usr/bin/env bash
# The kill -9 test (test-crash-kill9.sh) fails when nbdkit dies on its own
# during the writes, or when its log holds a sanitizer report or an error,
# although the client sees a dead server either way:
#  - nbdkit_reap and nbdkit_log_clean (plugin-functions.sh), the checks
#    that it runs after every round, reject an nbdkit that died of SIGABRT
#    (what a sanitizer's abort_on_error does) or SIGSEGV before the test's
#    kill, and logs with an ASan, LeakSanitizer or UBSan report or an
#    error line; they accept nbdkit's own normal log, -v included;
#  - the kill -9 test itself, one round, fails when the server dies of
#    SIGABRT instead of the kill (VHDKIT_KILL9_SIGNAL=ABRT), and when
#    nbdkit writes a sanitizer report to its log (an nbdkit first on PATH
#    that prints one, then execs the real one in the same process); and
#    passes as it is.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
set -e
set -x

requires_plugin
requires_nbdsh
requires qemu-img --version
requires vhdtool --help

# No core files from the aborts below.
ulimit -c 0

tmp=$(scratch_dir)
img=$tmp/disk.vhd
vhdtool create --dynamic 8M "$img"
cleanup_fn eval '[ -z "$nbdkit_pid" ] || { kill -9 "$nbdkit_pid"; wait "$nbdkit_pid"; }'

# must_contain FILE TEXT...: each TEXT (a fixed string) is in FILE.
must_contain ()
{
  local file=$1 text
  shift
  for text in "$@"; do
    if ! grep -qF -- "$text" "$file"; then
      echo "$0: FAIL: $file does not say '$text'" >&2
      exit 1
    fi
  done
}

# must_reject WHAT CMD...: CMD fails (status 1, not a usage error).
must_reject ()
{
  local what=$1 status=0
  shift
  "$@" 2> "$tmp/reject.err" || status=$?
  cat "$tmp/reject.err"
  if [ "$status" -ne 1 ]; then
    echo "$0: FAIL: $what: the check exits $status, not 1" >&2
    exit 1
  fi
}

echo "check: a server killed by the test passes, and its log is clean"
nbdkit_start_bg "$tmp/s.sock" "$tmp/s.pid" "$tmp/killed.log" file="$img"
nbdsh -u "nbd+unix:///?socket=$tmp/s.sock" \
  -c 'h.pwrite(b"\x5a" * 4096, 4096)' -c 'h.flush()'
kill -9 "$nbdkit_pid"
nbdkit_reap killed "$tmp/killed.log"

echo "check: a server that dies of SIGABRT or SIGSEGV before the kill fails"
for sig in ABRT SEGV; do
  nbdkit_start_bg "$tmp/s.sock" "$tmp/s.pid" "$tmp/$sig.log" file="$img"
  kill -s "$sig" "$nbdkit_pid"
  # No kill -9 here: under ASan's preload (a sanitizer build) nbdkit
  # takes a while to print its SEGV report and abort, and a kill in that
  # time would be a kill (the report in the log still fails the check).
  must_reject "SIG$sig" nbdkit_reap killed "$tmp/$sig.log"
  # Under ASan's preload (a sanitizer build) a SEGV is reported, then
  # aborts: signal 6 rather than 11.
  must_contain "$tmp/reject.err" "died of signal" "not killed by the test"
done

echo "check: a server stopped by SIGTERM passes as stopped, not as killed"
nbdkit_start_bg "$tmp/s.sock" "$tmp/s.pid" "$tmp/stopped.log" file="$img"
kill "$nbdkit_pid"
nbdkit_reap stopped "$tmp/stopped.log"
nbdkit_start_bg "$tmp/s.sock" "$tmp/s.pid" "$tmp/stopped.log" file="$img"
kill "$nbdkit_pid"
must_reject "SIGTERM as a kill" nbdkit_reap killed "$tmp/stopped.log"

echo "check: nbdkit's normal log, debug lines included, is clean"
nbdkit -v -U - "$VHDKIT_PLUGIN" file="$img" \
  --run 'nbdsh -u "$uri" -c "h.pwrite(b\"\\x11\" * 70000, 1000)" -c "h.flush()"
         nbdsh -u "$uri" -c "h.pread(1, 8 * 1024 * 1024)" || true' \
  2> "$tmp/verbose.log"
grep -c 'debug:' "$tmp/verbose.log"
nbdkit_log_clean "$tmp/verbose.log"

echo "check: each kind of report in the log fails"
n=0
for line in \
  '==1234==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010' \
  '==1234==ERROR: LeakSanitizer: detected memory leaks' \
  '../../lib/io.c:321:7: runtime error: load of misaligned address' \
  'SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior ../../lib/map.c:10:3' \
  'nbdkit: vhd[3]: error: disk.vhd: BAT entry 7: block lies past the end of the file' \
  'nbdkit: vhd: error: disk.vhd: footer: bad checksum' \
  'nbdkit: error: cannot open plugin'; do
  n=$((n + 1))
  { cat "$tmp/verbose.log"; echo "$line"; } > "$tmp/bad$n.log"
  must_reject "log line '$line'" nbdkit_log_clean "$tmp/bad$n.log"
done

# The kill -9 test, one round, with its checks as they are.
kill9=$VHDKIT_SRCDIR/test-crash-kill9.sh
run_kill9 ()
{
  local name=$1 status=0
  shift
  env VHDKIT_KILL9_ROUNDS=1 "$@" bash "$kill9" > "$tmp/$name.out" 2>&1 \
    || status=$?
  tail -n 30 "$tmp/$name.out"
  return "$status"
}

echo "check: the kill -9 test passes as it is (one round)"
run_kill9 plain

echo "check: the kill -9 test fails when nbdkit dies of SIGABRT during the writes"
status=0
run_kill9 abort VHDKIT_KILL9_SIGNAL=ABRT || status=$?
test "$status" -ne 0 && test "$status" -ne 77
must_contain "$tmp/abort.out" "died of signal 6 (ABRT" "not killed by the test"

echo "check: the kill -9 test fails when nbdkit's log holds a sanitizer report"
real_nbdkit=$(command -v nbdkit)
mkdir "$tmp/bin"
cat > "$tmp/bin/nbdkit" <<EOF
#!/bin/sh
echo '==1==ERROR: AddressSanitizer: heap-buffer-overflow (planted by $0)' >&2
exec '$real_nbdkit' "\$@"
EOF
chmod +x "$tmp/bin/nbdkit"
status=0
run_kill9 report PATH="$tmp/bin:$PATH" || status=$?
test "$status" -ne 0 && test "$status" -ne 77
must_contain "$tmp/report.out" "a sanitizer report in nbdkit's log"

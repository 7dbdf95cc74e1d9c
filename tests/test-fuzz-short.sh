#!/usr/bin/env bash
# A short libFuzzer run over open + info + read + write + check of
# arbitrary bytes as an image, seeded with the small sample images and a
# child/parent pair and every VHDX sample as a template patch, plus every
# input in fuzz/regressions that once crashed the engine.  Any crash or
# sanitizer report fails the test.
# VHDKIT_FUZZ_SECONDS sets the run's length (default 60).

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

requires xz --version

top_builddir=$VHDKIT_BUILDDIR/..
top_srcdir=$VHDKIT_SRCDIR/..
# The clang that make fuzz uses (configure's CLANG).
clang=$(sed -n 's/^CLANG = //p' "$top_builddir/Makefile")
if [ -z "$clang" ] || [ "$clang" = no ]; then
  skip "configure found no clang (apt-get install clang libclang-rt-14-dev)"
fi
# Only a clang without libFuzzer (its runtime, libclang-rt-14-dev, is a
# package of its own) may skip the test: a harness that does not compile,
# or a library that does not build, fails it.  Probe the runtime with an
# empty fuzz target built with make fuzz's sanitizer flags.
probe=$(scratch_dir)
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
  'int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);' \
  'int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)' \
  '{ (void) data; (void) size; return 0; }' > "$probe/probe.c"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$probe/probe.c" \
       -o "$probe/probe" 2> "$probe/probe.err"; then
  cat "$probe/probe.err"
  skip "$clang cannot link a libFuzzer program (libclang-rt-14-dev?)"
fi
if ! make -C "$top_builddir" fuzz; then
  echo "$0: FAIL: make fuzz failed although $clang links libFuzzer" \
       "programs: the harness or the library does not build" >&2
  exit 1
fi
fuzzer=$top_builddir/fuzz/fuzz-open

tmp=$(scratch_dir)
mkdir "$tmp/seeds" "$tmp/corpus" "$tmp/pair"
# Every VHDX sample as a template that "VHDXTMPL" inputs patch
# (fuzz/fuzz-vhdx-template.h); the harness writes the seeds that give
# them back unchanged.  A template is read only up to the end of its
# regions (16 MiB at most), so only that much is decompressed, and the
# file is given its full size as a hole.
samples=$(samples_dir)
mkdir "$tmp/templates"
templates=
for name in $(awk -F '\t' '!/^#/ { print $1 }' "$samples/vhdx/MANIFEST.tsv"); do
  out=$tmp/templates/${name%.xz}
  size=$(xz -l --robot "$samples/vhdx/$name" | awk '$1 == "totals" { print $5 }')
  { xz -dc "$samples/vhdx/$name" || true; } | head -c 16M > "$out"
  truncate -s "$size" "$out"
  templates=$templates${templates:+:}$out
done
export VHDKIT_FUZZ_VHDX_TEMPLATE=$templates
VHDKIT_FUZZ_VHDX_SEED=$tmp/seeds TMPDIR=$tmp "$fuzzer" -runs=0 \
  "$tmp/corpus"
test "$(ls "$tmp"/seeds/*.vhdxtmpl | wc -l)" -eq \
  "$(awk -F '\t' '!/^#/' "$samples/vhdx/MANIFEST.tsv" | wc -l)"

# Every stored crashing input must now be handled cleanly.
for f in "$top_srcdir"/fuzz/regressions/*; do
  [ -f "$f" ] && [ "$(basename "$f")" != .gitkeep ] || continue
  "$fuzzer" "$f"
done

for name in win8.vhd win8-child.vhd qemu-dynamic-40m.vhd vbox43-dynamic.vhd \
            xenserver-tap-dynamic.vhd win81-dynamic-1g.vhd \
            hyperv2012r2-dynamic.vhd virtualpc-dynamic.vhd \
            bad-checksum.vhd qemu-small.vhd; do
  decompress_sample "$name" "$tmp/seeds" >/dev/null
done
# A child whose locators name "parent.vhd" with the UUID of the fixed
# parent that the harness keeps beside its inputs.
vhdtool create --fixed --uuid 5a5a5a5a-5a5a-5a5a-5a5a-5a5a5a5a5a5a 3M \
  "$tmp/pair/parent.vhd"
vhdtool create --parent "$tmp/pair/parent.vhd" "$tmp/pair/child.vhd"
cp "$tmp/pair/child.vhd" "$tmp/seeds/"

# The harness keeps its images in a folder of its own under TMPDIR.
mkdir "$tmp/harness-tmp"
TMPDIR=$tmp/harness-tmp \
"$fuzzer" -max_total_time="${VHDKIT_FUZZ_SECONDS:-60}" -rss_limit_mb=4096 \
  -artifact_prefix="$tmp/" -print_final_stats=1 \
  "$tmp/corpus" "$tmp/seeds" 2>&1 | tail -n 30
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "$0: the fuzzer found a crash: the input is in $tmp (kept: copy it" \
       "into fuzz/regressions)" >&2
  ls -la "$tmp"
  cp "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* . 2>/dev/null || true
  exit 1
fi
echo "fuzz: no crash"
# ... and removes that folder when the run ends.
if [ -n "$(ls -A "$tmp/harness-tmp")" ]; then
  ls -laR "$tmp/harness-tmp" >&2
  echo "$0: FAIL: the fuzzer left its scratch folder behind" >&2
  exit 1
fi

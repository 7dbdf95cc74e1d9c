#!/usr/bin/env bash
# VHDKIT_REQUIRE=all (what scripts/check exports on CI) turns a skip into a
# failure that names the reason.  A tiny test, sourcing functions.sh like
# every other, needs a tool that no machine has: without VHDKIT_REQUIRE it
# skips (exit 77); with VHDKIT_REQUIRE=all it fails (not 77) and says
# why; a test that skips only a part (skip_part) goes on without it and
# fails with it; a misspelt value fails rather than lets the skip through.

source "$VHDKIT_SRCDIR/functions.sh"
set -e
set -x

tmp=$(scratch_dir)
cat > "$tmp/needs-missing-tool.sh" <<'EOF'
source "$VHDKIT_SRCDIR/functions.sh"
set -e
requires no-such-tool-xyz
echo "ran without no-such-tool-xyz"
EOF
cat > "$tmp/needs-missing-part.sh" <<'EOF'
source "$VHDKIT_SRCDIR/functions.sh"
set -e
if command -v no-such-tool-xyz >/dev/null; then
  echo "part ran"
else
  skip_part "no-such-tool-xyz is not installed"
fi
echo "the rest ran"
EOF
cat > "$tmp/needs-missing-plugin.sh" <<'EOF'
source "$VHDKIT_SRCDIR/functions.sh"
set -e
VHDKIT_PLUGIN=/nonexistent/nbdkit-vhd-plugin.so
requires_plugin
echo "ran without the plugin"
EOF

# run NAME SCRIPT [ENV...]: run SCRIPT with ENV; its status is $tmp/NAME.status.
run ()
{
  local name=$1 script=$2 status=0
  shift 2
  env -u VHDKIT_REQUIRE "$@" bash "$tmp/$script" > "$tmp/$name.out" 2>&1 \
    || status=$?
  cat "$tmp/$name.out"
  echo "$status" > "$tmp/$name.status"
}
status () { cat "$tmp/$1.status"; }
says () { grep -qF -- "$2" "$tmp/$1.out"; }
# (! says would not stop a set -e script.)
says_not ()
{
  if says "$@"; then
    echo "$0: FAIL: $1 printed '$2'" >&2
    exit 1
  fi
}

echo "check: a missing tool skips without VHDKIT_REQUIRE"
run plain needs-missing-tool.sh
test "$(status plain)" -eq 77
says plain "'no-such-tool-xyz' is not installed: skipping this test"
says_not plain "ran without"

echo "check: ... and fails, saying why, with VHDKIT_REQUIRE=all"
run required needs-missing-tool.sh VHDKIT_REQUIRE=all
test "$(status required)" -ne 0
test "$(status required)" -ne 77
says required "FAIL: 'no-such-tool-xyz' is not installed"
says required "VHDKIT_REQUIRE=all: no test may skip"
says_not required "ran without"

echo "check: a misspelt VHDKIT_REQUIRE fails too"
run misspelt needs-missing-tool.sh VHDKIT_REQUIRE=yes
test "$(status misspelt)" -ne 0
test "$(status misspelt)" -ne 77
says misspelt "VHDKIT_REQUIRE='yes'"

echo "check: a missing plugin skips, and fails with VHDKIT_REQUIRE=all"
run plugin needs-missing-plugin.sh
test "$(status plugin)" -eq 77
run plugin-required needs-missing-plugin.sh VHDKIT_REQUIRE=all
test "$(status plugin-required)" -ne 0
test "$(status plugin-required)" -ne 77
says plugin-required "the vhd plugin is not built"

echo "check: a part left out: the test goes on, or fails with VHDKIT_REQUIRE=all"
run part needs-missing-part.sh
test "$(status part)" -eq 0
says part "the rest ran"
run part-required needs-missing-part.sh VHDKIT_REQUIRE=all
test "$(status part-required)" -ne 0
test "$(status part-required)" -ne 77
says part-required "FAIL: no-such-tool-xyz is not installed (a part of this test)"
says_not part-required "the rest ran"

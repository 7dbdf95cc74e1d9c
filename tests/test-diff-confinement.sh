#!/usr/bin/env bash
# Locators are untrusted: a crafted child whose locators (and parent name)
# point at /etc/passwd, at ..\..\x, at a symlink in its folder that leads
# out of it (to a valid parent with the right UUID), or at itself, is
# refused with a clear error (nbdkit does not start; vhdtool info reports
# parent-error), and strace shows that nothing outside the folder was
# opened.  A child whose parent lives in another folder opens only when
# that folder is allowed (parent-dir=DIR, vhdtool --parent-dir DIR).

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/functions-diff.sh"
set -e
set -x

requires_plugin
requires vhdtool --version
requires nbdcopy --version
requires sha256sum --version
requires strace -V
requires realpath --version
requires_nbdsh

craft () { python3 "$VHDKIT_SRCDIR/craft-vhd.py" "$@"; }

tmp=$(scratch_dir)
tmp=$(realpath "$tmp")
# The children's folder is two levels down, so that ..\..\x is $tmp/x.
dir="$tmp/a/b"
outside="$tmp/outside"
mkdir -p "$dir" "$outside"

# A base with some data, and a child of it, made where the base is; then
# the base goes out of the children's folder, with a copy at $tmp/x: both
# are valid parents with the right UUID, so only confinement keeps them
# from being opened.
vhdtool create --dynamic 8M "$dir/base.vhd"
cat > "$tmp/fill.py" <<'EOF'
h.pwrite(b"parent data " * 1000, 4096)
h.flush()
EOF
nbdsh_script "$dir/base.vhd" "$tmp/fill.py"
base_hash=$(serve_sha256 "$dir/base.vhd")
for name in good passwd dotdot symlink symlink-rel symlink-dir self; do
  vhdtool create --parent "$dir/base.vhd" "$dir/$name.vhd"
done
mv "$dir/base.vhd" "$outside/base.vhd"
cp "$outside/base.vhd" "$tmp/x"

# expect_refused CHILD OUTSIDE-FILE... : the plugin and vhdtool refuse
# CHILD's parent, with a message that names the child and says why, and
# neither opens any OUTSIDE-FILE (strace).
expect_refused ()
{
  local child=$1 name
  shift
  name=$(basename "$child" .vhd)
  craft "$child" --show

  strace_opens "$tmp/$name.serve.strace" \
    nbdkit -U - "$VHDKIT_PLUGIN" file="$child" --run 'true' \
    2> "$tmp/$name.serve.err" && {
      cat "$tmp/$name.serve.err" >&2
      echo "$0: FAIL: nbdkit served $child" >&2
      return 1
    }
  cat "$tmp/$name.serve.err" >&2
  must_contain "$tmp/$name.serve.err" "$child" "could not be opened" tried
  no_successful_open "$tmp/$name.serve.strace" "$child" "$@"

  # Without SHELL (as under CI) the libtool wrapper's bash reads
  # /etc/passwd before it execs vhdtool in the same pid: the check must
  # tell the wrapper from the engine.
  strace_opens "$tmp/$name.info.strace" \
    env -u SHELL vhdtool info --json "$child" > "$tmp/$name.json"
  cat "$tmp/$name.json"
  json_field "$tmp/$name.json" parent-error > "$tmp/$name.parent-error"
  must_contain "$tmp/$name.parent-error" "could not be opened"
  if json_field "$tmp/$name.json" parent 2>/dev/null; then
    echo "$0: FAIL: vhdtool info opened a parent for $child" >&2
    return 1
  fi
  no_successful_open "$tmp/$name.info.strace" "$child" "$@"
}

echo "check: control: a crafted child whose W2ru locator names a copy of" \
     "the parent inside the folder opens (the crafting itself is sound)"
cp "$outside/base.vhd" "$dir/inside.vhd"
craft "$dir/good.vhd" --locator 'W2ru:.\inside.vhd' --name 'inside.vhd'
craft "$dir/good.vhd" --show
test "$(serve_sha256 "$dir/good.vhd")" = "$base_hash"
vhdtool info --json "$dir/good.vhd" > "$tmp/good.json"
test "$(json_field "$tmp/good.json" parent-found-by)" = "W2ru locator"
rm "$dir/inside.vhd"

echo "check: locators pointing at /etc/passwd are refused, unread"
craft "$dir/passwd.vhd" \
  --locator 'W2ku:/etc/passwd' \
  --locator 'W2ru:..\..\..\..\..\..\..\..\..\..\etc\passwd' \
  --name '/etc/passwd'
expect_refused "$dir/passwd.vhd" /etc/passwd
must_contain "$tmp/passwd.serve.err" /etc/passwd

echo "check: a W2ru locator ..\\..\\x is refused although x exists and is" \
     "a valid parent"
craft "$dir/dotdot.vhd" --locator 'W2ru:..\..\x' --name '..\..\x'
expect_refused "$dir/dotdot.vhd" "$tmp/x"
must_contain "$tmp/dotdot.serve.err" 'x (W2ru locator)' outside

echo "check: a MacX file URL out of the folder is refused"
craft "$dir/dotdot.vhd" --locator "MacX:file://$tmp/x" --name 'x'
expect_refused "$dir/dotdot.vhd" "$tmp/x"
must_contain "$tmp/dotdot.serve.err" MacX outside

echo "check: a symlink in the folder that leads out of it (to a valid" \
     "parent with the right UUID) is refused"
ln -s "$outside/base.vhd" "$dir/link.vhd"
craft "$dir/symlink.vhd" --locator 'W2ru:.\link.vhd' \
  --locator 'W2ku:C:\images\link.vhd' --name 'link.vhd'
expect_refused "$dir/symlink.vhd" "$outside/base.vhd"
must_contain "$tmp/symlink.serve.err" link.vhd outside

echo "check: the same through a relative symlink"
ln -s ../../outside/base.vhd "$dir/rel-link.vhd"
craft "$dir/symlink-rel.vhd" --locator 'W2ru:.\rel-link.vhd' \
  --name 'rel-link.vhd'
expect_refused "$dir/symlink-rel.vhd" "$outside/base.vhd"
must_contain "$tmp/symlink-rel.serve.err" rel-link.vhd outside

echo "check: the same through a symlinked folder"
ln -s "$outside" "$dir/sub"
craft "$dir/symlink-dir.vhd" --locator 'W2ru:.\sub\base.vhd' \
  --name 'sub\base.vhd'
expect_refused "$dir/symlink-dir.vhd" "$outside/base.vhd"
must_contain "$tmp/symlink-dir.serve.err" sub/base.vhd outside

echo "check: a child whose locators name itself is refused as a loop"
craft "$dir/self.vhd" --locator 'W2ru:.\self.vhd' \
  --locator "W2ku:$dir/self.vhd" --name 'self.vhd'
expect_refused "$dir/self.vhd"
must_contain "$tmp/self.serve.err" loop

echo "check: locators whose fields lie (data past the end of the file," \
     "a huge length, data inside the headers) give a clear error, no crash"
size=$(stat -c %s "$dir/self.vhd")
craft "$dir/self.vhd" --name 'missing.vhd' \
  --raw-locator "W2ru:512:64:$((size + 4096))" \
  --raw-locator "W2ku:0x7fffffff:0x7fffffff:1536" \
  --raw-locator "MacX:1:512:0"
# Data past the trailing footer lies where the next block goes, and data
# over the footer copy shares its bytes: the layout itself is refused.
serve_must_fail "$tmp/garbage.err" "$dir/self.vhd"
must_contain "$tmp/garbage.err" "self.vhd" "parent locator 0" \
  "where the next block goes"
if vhdtool info --json "$dir/self.vhd" > "$tmp/garbage.json" \
     2> "$tmp/garbage.info-err"; then
  echo "$0: FAIL: vhdtool info accepted locators that overlap" >&2
  exit 1
fi
must_contain "$tmp/garbage.info-err" "parent locator 0"

echo "check: nothing was written outside"
test "$(serve_sha256 "$outside/base.vhd")" = "$base_hash"
cmp "$outside/base.vhd" "$tmp/x"

# ---------------------------------------------------------------------
echo "check: parent-dir: a child whose parent lives in another folder" \
     "opens only when that folder is allowed"
children="$tmp/pd/children"
parents="$tmp/pd/parents"
mkdir -p "$children" "$parents"
cp "$outside/base.vhd" "$parents/base.vhd"
vhdtool create --parent "$parents/base.vhd" "$children/child.vhd"
craft "$children/child.vhd" --show

strace_opens "$tmp/pd.strace" \
  nbdkit -U - "$VHDKIT_PLUGIN" file="$children/child.vhd" --run 'true' \
  2> "$tmp/pd.err" && {
    cat "$tmp/pd.err" >&2
    echo "$0: FAIL: served a parent from a folder that was not allowed" >&2
    exit 1
  }
cat "$tmp/pd.err"
must_contain "$tmp/pd.err" child.vhd base.vhd "$parents" outside tried
no_successful_open "$tmp/pd.strace" "$children/child.vhd" "$parents/base.vhd"
vhdtool info --json "$children/child.vhd" > "$tmp/pd-no.json"
json_field "$tmp/pd-no.json" parent-error > "$tmp/pd-no.parent-error"
must_contain "$tmp/pd-no.parent-error" base.vhd "$parents"

test "$(serve_sha256 "$children/child.vhd" parent-dir="$parents")" = \
     "$base_hash"
# The strace check itself sees an allowed open of the parent (so its
# silence above means something).
strace_opens "$tmp/pd-yes.strace" \
  nbdkit -U - "$VHDKIT_PLUGIN" file="$children/child.vhd" \
  parent-dir="$parents" --run 'true'
if no_successful_open "$tmp/pd-yes.strace" "$children/child.vhd" \
     "$parents/base.vhd"; then
  echo "$0: FAIL: the strace check missed an open of the parent" >&2
  exit 1
fi
# ... and through the libtool wrapper too, after it exec'd the engine.
strace_opens "$tmp/pd-yes-info.strace" \
  env -u SHELL vhdtool info --parent-dir "$parents" "$children/child.vhd" \
  > /dev/null
if no_successful_open "$tmp/pd-yes-info.strace" "$children/child.vhd" \
     "$parents/base.vhd"; then
  echo "$0: FAIL: the strace check missed vhdtool's open of the parent" >&2
  exit 1
fi
vhdtool info --json --parent-dir "$parents" "$children/child.vhd" \
  > "$tmp/pd-yes.json"
cat "$tmp/pd-yes.json"
test "$(json_field "$tmp/pd-yes.json" parent.path)" -ef "$parents/base.vhd"
test -n "$(json_field "$tmp/pd-yes.json" parent-found-by)"
# an unrelated allowed folder does not help
mkdir "$tmp/pd/other"
serve_must_fail "$tmp/pd-other.err" "$children/child.vhd" \
  parent-dir="$tmp/pd/other"
# The operator decides: allowing $tmp lets the MacX child above (file URL
# $tmp/x) open its parent.
test "$(serve_sha256 "$dir/dotdot.vhd" parent-dir="$tmp")" = "$base_hash"

# vhdtool info and check take up to 32 --parent-dir folders: one more is
# a usage error (exit 2) that says so, never an overrun.
many=()
for i in $(seq 33); do many+=(--parent-dir "$parents"); done
for verb in info check; do
  vhdtool "$verb" "${many[@]:2}" "$children/child.vhd" > /dev/null
  status=0
  vhdtool "$verb" "${many[@]}" "$children/child.vhd" 2> "$tmp/many.err" ||
    status=$?
  test "$status" -eq 2
  must_contain "$tmp/many.err" "too many --parent-dir options"
done

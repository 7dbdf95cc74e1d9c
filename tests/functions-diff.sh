# vhdkit: helpers shared by the differencing-disk tests (test-diff-*.sh).
# Source it after functions.sh:
#
#   source "$VHDKIT_SRCDIR/functions.sh"
#   source "$VHDKIT_SRCDIR/functions-diff.sh"

# requires_nbdsh
#
# nbdsh is a shell script that runs 'python3 -m nbd' with whatever python3
# comes first on PATH; a pyenv shim or a virtualenv's python3 lacks
# libnbd's module, and nbdsh then fails although it is installed.  Put the
# first python3 that has the module first on PATH (through a private
# folder holding only that link), then skip unless nbdsh works.
requires_nbdsh ()
{
  local py dir
  requires nbdsh
  if ! nbdsh -c pass >/dev/null 2>&1; then
    for py in /usr/bin/python3 /usr/local/bin/python3 /bin/python3; do
      if [ -x "$py" ] && "$py" -c 'import nbd' >/dev/null 2>&1; then
        dir=$(scratch_dir)
        ln -s "$py" "$dir/python3"
        PATH="$dir:$PATH"
        export PATH
        break
      fi
    done
  fi
  requires nbdsh -c pass
}

# nbdsh_script IMG SCRIPT [KEY=VALUE...]
#
# Serve IMG through the plugin (read-write unless readonly=true is among
# the KEY=VALUEs) and run the Python file SCRIPT in nbdsh, connected (h).
# The script reads its parameters from the environment.
nbdsh_script ()
{
  local img=$1 script=$2
  shift 2
  NBDSH_SCRIPT=$script nbdkit -U - "$VHDKIT_PLUGIN" file="$img" "$@" \
    --run 'nbdsh -u "$uri" -c "exec(open(\"$NBDSH_SCRIPT\").read())"'
}

# serve_sha256 IMG [KEY=VALUE...]
#
# Print the sha256 of the whole virtual disk IMG as the plugin serves it
# (read-only).
serve_sha256 ()
{
  local img=$1 out
  shift
  out=$(nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true "$@" \
          --run 'nbdcopy "$uri" - | sha256sum') || return 1
  echo "${out%% *}"
}

# serve_copy IMG OUT [KEY=VALUE...]
#
# Copy the virtual disk IMG as the plugin serves it (read-only) to the
# raw file OUT.
serve_copy ()
{
  local img=$1
  NBDCOPY_OUT=$2
  export NBDCOPY_OUT
  shift 2
  nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true "$@" \
    --run 'nbdcopy "$uri" "$NBDCOPY_OUT"'
}

# serve_must_fail ERRFILE IMG [KEY=VALUE...]
#
# nbdkit serving IMG must fail to start (exit non-zero, the --run command
# never runs); its stderr goes to ERRFILE and is shown.
serve_must_fail ()
{
  local err=$1 img=$2 marker
  shift 2
  marker="$err.ran"
  rm -f "$marker"
  if MARKER=$marker nbdkit -U - "$VHDKIT_PLUGIN" file="$img" "$@" \
       --run 'touch "$MARKER"' 2>"$err"; then
    cat "$err" >&2
    echo "$0: FAIL: nbdkit served $img; it should have refused it" >&2
    return 1
  fi
  cat "$err" >&2
  if [ -e "$marker" ]; then
    echo "$0: FAIL: nbdkit started serving $img before failing" >&2
    return 1
  fi
}

# must_contain FILE TEXT [TEXT...]
#
# Each TEXT (a fixed string) occurs in FILE.
must_contain ()
{
  local file=$1 text
  shift
  for text in "$@"; do
    if ! grep -qF -- "$text" "$file"; then
      echo "$0: FAIL: $file does not contain '$text':" >&2
      cat "$file" >&2
      return 1
    fi
  done
}

# ways_listed_once FILE
#
# In the "tried: PATH (WAY and WAY...): why; ..." list of a parent search
# error in FILE, each PATH's ways are distinct: no way is listed twice.
ways_listed_once ()
{
  python3 - "$1" <<'PY'
import re
import sys

text = open(sys.argv[1]).read()
m = re.search(r"tried: (.*)", text)
assert m, "no 'tried:' in %r" % text
for attempt in re.finditer(r" \(([^()]*)\): ", m.group(1)):
    ways = attempt.group(1).split(" and ")
    assert len(ways) == len(set(ways)), "a way listed twice: %r" % ways
    print("ways:", ways)
PY
}

# strace_opens LOG CMD [ARGS...]
#
# Run CMD under strace, logging every open and the clones and execs that
# no_successful_open needs to tell the engine's process from helpers (the
# libtool wrapper of an uninstalled vhdtool runs ls, sed...).
strace_opens ()
{
  local log=$1
  shift
  # LeakSanitizer cannot run under ptrace (a sanitizer build).
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
  strace -f -y -o "$log" \
    -e trace=open,openat,openat2,clone,clone3,fork,vfork,execve "$@"
}

# no_successful_open LOG IMAGE PATH...
#
# LOG is the output of strace_opens.  -y prints the file behind each
# returned fd, so an open that succeeded on PATH (however it was spelled:
# relative, through "..", through a symlink) shows as '= N</real/path>'.
# Fails if the program that opened IMAGE (every thread of it, from its
# execve on) opened any PATH.  Other processes, and what a pid ran before
# it exec'd the engine (a libtool wrapper's bash and ls read /etc/passwd
# for user names) are not the engine and are not counted.
no_successful_open ()
{
  python3 - "$@" <<'PY'
import os, re, sys
log, image, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
image = os.path.realpath(image)
paths = [os.path.realpath(p) for p in paths]
line_re = re.compile(r"^(\d+)\s+(.*)$")
pending = {}
lines = []
with open(log) as f:
    for raw in f:
        m = line_re.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, text = int(m.group(1)), m.group(2)
        if text.endswith("<unfinished ...>"):
            pending[pid] = text[:-len("<unfinished ...>")]
            continue
        r = re.match(r"<\.\.\. \w+ resumed>(.*)$", text)
        if r:
            text = pending.pop(pid, "") + r.group(1)
        lines.append((pid, text))
# Thread groups: a clone with CLONE_THREAD joins the new task to its
# creator's group.
leader = {}
def group(pid):
    while leader.get(pid, pid) != pid:
        pid = leader[pid]
    return pid
for pid, text in lines:
    m = re.match(r"(clone3?)\((.*)\)\s+=\s+(\d+)", text)
    if m and "CLONE_THREAD" in m.group(2):
        leader[int(m.group(3))] = group(pid)
# A process is a new program after each execve that succeeds: the libtool
# wrapper (bash, which reads /etc/passwd when SHELL is unset) execs the real
# binary in the same pid, and what the shell opened is not the engine's.
opened = re.compile(r"^(open|openat|openat2)\(.*\)\s+=\s+\d+<(.*)>$")
execed = re.compile(r"^execve\(.*\)\s+=\s+0$")
generation = {}
keyed = []
for pid, text in lines:
    g = group(pid)
    if execed.match(text):
        generation[g] = generation.get(g, 0) + 1
    keyed.append(((g, generation.get(g, 0)), text))
engine = set()
for key, text in keyed:
    m = opened.match(text)
    if m and m.group(2) == image:
        engine.add(key)
if not engine:
    sys.exit("no_successful_open: no process opened %s: is %s a log of "
             "strace_opens?" % (image, log))
bad = 0
for key, text in keyed:
    m = opened.match(text)
    if m and key in engine and m.group(2) in paths:
        print("FAIL: %s was opened: %d %s" % (m.group(2), key[0], text),
              file=sys.stderr)
        bad += 1
print("no_successful_open: %d opens checked in %d engine process(es); "
      "%s of %s" % (sum(1 for p, t in lines if opened.match(t)),
                    len(engine), "%d opens" % bad if bad else "none",
                    ", ".join(paths) or "(no outside file given)"))
sys.exit(1 if bad else 0)
PY
}

# build_chain DIR DEPTH SIZE
#
# A chain of DEPTH children on a dynamic base of SIZE, built by vhdtool in
# DIR: level0.vhd (the base) to levelDEPTH.vhd.  Each level is written
# through the plugin at seeded random offsets (inside one block, across
# 2 MiB blocks, unaligned sub-sector) while it is the top, before the next
# child is created on it (a parent must not change under its child).  A
# raw reference per level, refK.raw, gets the same writes (level K's
# reference is level K-1's plus level K's writes).  The seeds depend on
# DEPTH and K only, so that two tests build the same chains.
build_chain ()
{
  local dir=$1 depth=$2 size=$3 k
  _chain_write_script "$dir/write.py"
  vhdtool create --dynamic "$size" "$dir/level0.vhd"
  for (( k = 0; k <= depth; k++ )); do
    if [ "$k" -eq 0 ]; then
      truncate -s "$size" "$dir/ref0.raw"
    else
      vhdtool create --parent "$dir/level$((k-1)).vhd" "$dir/level$k.vhd"
      cp --sparse=always "$dir/ref$((k-1)).raw" "$dir/ref$k.raw"
    fi
    SEED=$((depth * 100 + k)) REF="$dir/ref$k.raw" \
      nbdsh_script "$dir/level$k.vhd" "$dir/write.py"
  done
}

# chain_files DIR K: the files of level K's chain in DIR, top first.
chain_files ()
{
  local k
  for (( k = $2; k >= 0; k-- )); do
    echo "$1/level$k.vhd"
  done
}

_chain_write_script ()
{
  cat > "$1" <<'EOF'
import os, random
seed = int(os.environ["SEED"])
rng = random.Random(seed)
size = h.get_size()
B = 2 * 1024 * 1024
nblocks = size // B
# Most writes land in the first 6 blocks, so that levels overwrite each
# other's data; a few go anywhere.
def block():
    return rng.randrange(6) if rng.random() < 0.8 else rng.randrange(nblocks)
writes = []
for _ in range(12):                     # inside one block, unaligned
    n = rng.randrange(1, 64 * 1024)
    writes.append((block() * B + rng.randrange(B - n), n))
for _ in range(6):                      # across a block boundary
    b = rng.randrange(1, nblocks)
    before, after = rng.randrange(1, 80000), rng.randrange(1, 80000)
    writes.append((b * B - before, before + after))
for _ in range(10):                     # sub-sector, unaligned
    n = rng.randrange(1, 512)
    writes.append((block() * B + rng.randrange(B - n), n))
writes.append((rng.randrange(6) * B, B))    # one whole block
rng.shuffle(writes)
with open(os.environ["REF"], "r+b") as ref:
    for off, n in writes:
        data = rng.randbytes(n)
        h.pwrite(data, off)
        ref.seek(off)
        ref.write(data)
    h.flush()
    for off, n in writes:
        ref.seek(off)
        assert h.pread(n, off) == ref.read(n), \
            "seed %d: read back at %d (+%d) differs" % (seed, off, n)
print("seed %d: %d writes read back" % (seed, len(writes)))
EOF
}

# build_vhdx_chain DIR DEPTH SIZE
#
# The VHDX version of build_chain: a dynamic base of SIZE in 1 MiB blocks,
# level0.vhdx, then DEPTH children, level1.avhdx to levelDEPTH.avhdx, in
# 2 MiB blocks (odd levels, vhdtool's default, as Hyper-V's checkpoints)
# and 1 MiB blocks (even levels), so that a block of one level covers
# parts of another's.  Each level is written through the plugin while it
# is the top (writes, zeros, trims and flushes at seeded random places,
# vhdx_random_writes), and only then gets its child: a VHDX written
# after its child exists gets a new DataWriteGuid and orphans the child.
# refK.raw is level K's view as a raw model; shaK is the sha256 of
# level K's file as its writes left it.  The seeds depend on DEPTH and K
# only.
build_vhdx_chain ()
{
  local dir=$1 depth=$2 size=$3 k block
  vhdtool create --dynamic --block-size 1M "$size" "$dir/level0.vhdx"
  truncate -s "$size" "$dir/ref0.raw"
  for (( k = 0; k <= depth; k++ )); do
    block=$(vhdx_chain_block_size "$k")
    if [ "$k" -gt 0 ]; then
      if [ "$block" -eq $((2 * 1024 * 1024)) ]; then
        vhdtool create --parent "$(vhdx_chain_file "$dir" $((k-1)))" \
          "$dir/level$k.avhdx"
      else
        vhdtool create --parent "$(vhdx_chain_file "$dir" $((k-1)))" \
          --block-size "$block" "$dir/level$k.avhdx"
      fi
      cp --sparse=always "$dir/ref$((k-1)).raw" "$dir/ref$k.raw"
    fi
    vhdx_random_writes "$(vhdx_chain_file "$dir" "$k")" "$block" \
      $((depth * 100 + k)) "$dir/ref$k.raw"
    sha256sum "$(vhdx_chain_file "$dir" "$k")" > "$dir/sha$k"
  done
}

# vhdx_chain_block_size K: the block size of level K of build_vhdx_chain.
vhdx_chain_block_size ()
{
  if [ "$1" -eq 0 ] || [ $(( $1 % 2 )) -eq 0 ]; then
    echo $((1024 * 1024))
  else
    echo $((2 * 1024 * 1024))
  fi
}

# vhdx_chain_file DIR K: level K's file in DIR.
vhdx_chain_file ()
{
  if [ "$2" -eq 0 ]; then
    echo "$1/level0.vhdx"
  else
    echo "$1/level$2.avhdx"
  fi
}

# vhdx_chain_files DIR K: the files of level K's chain in DIR, top first.
vhdx_chain_files ()
{
  local k
  for (( k = $2; k >= 0; k-- )); do
    vhdx_chain_file "$1" "$k"
  done
}

# pyvhdi_compare REF FILE [PARENT...]
#
# libvhdi (python3-libvhdi's pyvhdi, which shares no code with vhdkit)
# reads the VHDX FILE, each PARENT given to it as the parent of the one
# before (pyvhdi follows no locator itself), as exactly REF's bytes.
pyvhdi_compare ()
{
  python3 - "$@" <<'PY'
import sys
import pyvhdi
ref, files = sys.argv[1], sys.argv[2:]
opened = []
for path in reversed(files):
    f = pyvhdi.file()
    f.open(path)
    if opened:
        f.set_parent(opened[-1])
    opened.append(f)
top = opened[-1]
chunk = 1024 * 1024
with open(ref, "rb") as r:
    size = r.seek(0, 2)
    assert top.get_media_size() == size, \
        "libvhdi: %s: %d bytes, not %d" % (files[0], top.get_media_size(), size)
    r.seek(0)
    for off in range(0, size, chunk):
        want = r.read(chunk)
        got = top.read_buffer_at_offset(len(want), off)
        if got != want:
            i = next(i for i in range(len(want)) if got[i] != want[i])
            sys.exit("libvhdi: %s differs from %s at byte %d"
                     % (files[0], ref, off + i))
print("libvhdi: %s reads as %s (%d bytes)" % (files[0], ref, size))
PY
}

# vhdx_random_writes IMG BLOCK SEED REF
#
# Serve the VHDX IMG (whose block size is BLOCK) read-write through the
# plugin and make 48 seeded random requests to it with nbdsh: writes
# 4 KiB-aligned and not, inside one sector, across 1 MiB and 2 MiB
# boundaries, of whole blocks, with FUA; zeros (with NO_HOLE, FUA or
# neither) and trims, aligned and not; flushes.  The raw file REF, the
# model, gets the same changes, and each request's range (and around it)
# reads back as REF says at once, and again after a last flush.
vhdx_random_writes ()
{
  local script
  script=$(scratch_dir)/write.py
  _vhdx_random_writes_script "$script"
  SEED=$3 BLOCK=$2 REF=$4 nbdsh_script "$1" "$script"
}

_vhdx_random_writes_script ()
{
  cat > "$1" <<'EOF_PY'
import os, random
seed = int(os.environ["SEED"])
B = int(os.environ["BLOCK"])            # this level's block size
rng = random.Random(seed)
size = h.get_size()
M1 = 1024 * 1024
SECTOR = 512
assert h.can_trim() and h.can_zero() and h.can_fua()
ref = open(os.environ["REF"], "r+b")
done = []

def model(off, data):
    ref.seek(off)
    ref.write(data)

def expect(off, n, what):
    ref.seek(off)
    got = h.pread(n, off)
    assert got == ref.read(n), \
        "seed %d: read back after %s at %d (+%d) differs" % (seed, what, off, n)

# Most requests land in the first 12 MiB, so that the levels overwrite
# each other's data (and their zeros and trims); the rest anywhere.
def place(n, align=1):
    limit = 12 * M1 if rng.random() < 0.8 else size
    off = rng.randrange(0, limit - n + 1)
    return off - off % align

def length():
    return rng.choice([rng.randrange(1, 4096), rng.randrange(1, 300000),
                       rng.randrange(1, 3 * M1)])

for i in range(48):
    kind = rng.choice(["aligned", "unaligned", "unaligned", "sub-sector",
                       "across", "whole-block", "fua", "zero", "zero",
                       "trim", "trim", "flush"])
    if kind == "flush":
        h.flush()
        continue
    if kind == "aligned":               # 4 KiB-aligned, up to 256 KiB
        n = rng.randrange(1, 65) * 4096
        off = place(n, 4096)
    elif kind == "sub-sector":          # inside one sector, or across two
        n = rng.randrange(1, SECTOR)
        off = place(n)
    elif kind == "across":              # across a 1 MiB (and 2 MiB) boundary
        b = rng.randrange(1, size // M1) * M1
        before, after = rng.randrange(1, 200000), rng.randrange(1, 200000)
        off, n = b - min(before, b), min(before, b) + min(after, size - b)
    elif kind == "whole-block":         # one or two of this level's blocks
        n = B * rng.choice([1, 1, 2])
        off = place(n, B)
    else:                               # any offset, any length
        n = length()
        off = place(n, rng.choice([1, SECTOR, 4096]))
    if kind == "zero":
        flags = rng.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FUA])
        h.zero(n, off, flags)
        model(off, bytes(n))
    elif kind == "trim":
        # A trim covers the whole sectors inside its range, and in a
        # differencing VHDX (and a dynamic one) those read back as zeros
        # from then on (README, "Trim and zero"); the partly covered
        # sectors at its edges keep their data.
        h.trim(n, off)
        start = -(-off // SECTOR) * SECTOR
        end = (off + n) // SECTOR * SECTOR
        if end > start:
            model(start, bytes(end - start))
    else:
        data = rng.randbytes(n)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if kind == "fua" else 0)
        model(off, data)
    done.append((off, n))
    expect(off, n, kind)
    # A read across the edges of what changed, which takes the levels
    # below for the rest.
    lo, hi = max(0, off - rng.randrange(1, 70000)), \
        min(size, off + n + rng.randrange(1, 70000))
    expect(lo, hi - lo, kind + " (around it)")
h.flush()
for off, n in done:
    expect(off, n, "the last flush")
print("seed %d: %d requests read back" % (seed, len(done)))
EOF_PY
}

# overlay_pages BASE CHILD PAGES OUT
#
# Write to the raw file OUT what a child whose own ranges are listed in
# PAGES ("OFFSET LENGTH" lines) reads over BASE: BASE's bytes with
# CHILD's in those ranges.  Fails if OUT equals either, which would make
# the comparison that uses it prove nothing.
overlay_pages ()
{
  python3 - "$@" <<'PY'
import sys
base, child, pages, out = sys.argv[1:]
data = bytearray(open(base, "rb").read())
own = open(child, "rb").read()
for line in open(pages):
    off, n = map(int, line.split())
    data[off:off + n] = own[off:off + n]
assert data != bytearray(own) and data != bytearray(open(base, "rb").read())
open(out, "wb").write(data)
PY
}

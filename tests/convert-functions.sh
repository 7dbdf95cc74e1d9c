# vhdkit: helpers for the convert tests (test-convert-*.sh), sourced after
# functions.sh (and plugin-functions.sh, for requires_nbdsh).

# make_half_zero_raw FILE SIZE SEED
#
# A raw disk of SIZE bytes (a multiple of 4 MiB): 2 MiB of seeded random
# data, then 2 MiB of written zeros (not holes), and so on; then, so that
# partial blocks are exercised too, a few random bytes in the middle of
# one zero run and 512 random bytes at the start of another.
make_half_zero_raw ()
{
  python3 - "$1" "$2" "$3" <<'PY'
import random
import sys

path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
M2 = 2 * 1024 * 1024
with open(path, "wb") as f:
    for off in range(0, size, M2):
        f.write(rng.randbytes(M2) if (off // M2) % 2 == 0 else bytes(M2))
    if size >= 8 * M2:
        f.seek(3 * M2 + 12345)
        f.write(rng.randbytes(100))
        f.seek(7 * M2)
        f.write(rng.randbytes(512))
PY
}

# check_reads_as IMAGE REFERENCE
#
# IMAGE reads back as exactly REFERENCE's bytes, with two independent
# readers: qemu-img (vpc, or vhdx for a .vhdx, which qemu-img check must
# find clean too) and the plugin (nbdcopy).
check_reads_as ()
{
  local img=$1 ref=$2 out fmt=vpc
  out=$(scratch_dir)
  case "$img" in
    *.vhdx) fmt=vhdx; qemu-img check -f vhdx "$img" ;;
  esac
  qemu-img convert -f "$fmt" -O raw "$img" "$out/qemu.raw"
  cmp "$ref" "$out/qemu.raw"
  out=$out nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdcopy "$uri" "$out/plugin.raw"'
  cmp "$ref" "$out/plugin.raw"
  rm -rf "$out"
}

# info_field IMAGE KEY: one key of `vhdtool info --json IMAGE`.
info_field ()
{
  local json
  json=$(scratch_dir)/info.json
  vhdtool info --json "$1" > "$json"
  json_field "$json" "$2"
}

# check_zero_blocks_unallocated IMAGE REFERENCE
#
# The dynamic IMAGE has exactly one allocated block for every block (of
# IMAGE's block size) of REFERENCE that holds a non-zero byte (vhdtool
# info), and nbdinfo --map shows every all-zero block of REFERENCE as
# hole,zero and no data extent over one.
check_zero_blocks_unallocated ()
{
  local img=$1 ref=$2 tmp want block
  tmp=$(scratch_dir)
  block=$(info_field "$img" block-size)
  want=$(python3 - "$ref" "$block" <<'PY'
import sys
M2 = int(sys.argv[2])
n = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(M2)
        if not b:
            break
        n += b.count(0) != len(b)
print(n)
PY
  )
  test "$(info_field "$img" allocated-blocks)" -eq "$want"
  tmp=$tmp nbdkit -U - "$VHDKIT_PLUGIN" file="$img" readonly=true \
    --run 'nbdinfo --map --json "$uri" > "$tmp/map.json"'
  python3 - "$ref" "$tmp/map.json" "$block" <<'PY'
import json
import sys
M2 = int(sys.argv[3])
data = open(sys.argv[1], "rb").read()
zero_blocks = {i // M2 for i in range(0, len(data), M2)
               if data[i:i + M2].count(0) == len(data[i:i + M2])}
end = 0
for e in json.load(open(sys.argv[2])):
    assert e["offset"] == end, e
    end = e["offset"] + e["length"]
    blocks = range(e["offset"] // M2, (end - 1) // M2 + 1)
    if e["type"] == 3:
        assert data[e["offset"]:end].count(0) == e["length"], e
    else:
        assert not any(b in zero_blocks for b in blocks), \
            "data extent over an all-zero block: %r" % e
holes = sum(1 for b in zero_blocks)
print("map ok: %d all-zero blocks, all holes" % holes)
assert end == len(data), end
PY
  rm -rf "$tmp"
}

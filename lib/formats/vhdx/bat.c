/* vhdkit: the VHDX BAT: its geometry (chunk ratio, block counts, entry
 * count) and its entries ([MS-VHDX] 2.5).  Pure: no I/O.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>

#include "format.h"

#define STATE_MASK     UINT64_C (0x7)
#define RESERVED_SHIFT 3
#define RESERVED_MASK  UINT64_C (0x1ffff)       /* 17 bits */
#define OFFSET_SHIFT   20

/* ceil (a / b) without the a + b - 1 that can wrap; b != 0. */
static uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

int
vhdx_bat_geometry (uint64_t virtual_size, uint32_t block_size,
                   uint32_t logical_sector_size, bool has_parent,
                   uint32_t bat_region_length, const char *file,
                   struct vhdx_bat_geometry *geom)
{
  struct vhdx_bat_geometry g;
  /* 2^23 sectors of at most 2^32 bytes: no wrap in 64 bits. */
  uint64_t chunk_size = VHDX_SECTORS_PER_BITMAP * logical_sector_size;

  if (block_size == 0 || logical_sector_size == 0 || virtual_size == 0)
    return vhd_error (EINVAL, "%s: BAT: block size %" PRIu32 ", logical"
                      " sector size %" PRIu32 " and virtual size %" PRIu64
                      " must all be non-zero", file, block_size,
                      logical_sector_size, virtual_size);
  if (chunk_size % block_size != 0)
    return vhd_error (EINVAL, "%s: BAT: chunk ratio 2^23 * %" PRIu32
                      " / %" PRIu32 " is not a whole number", file,
                      logical_sector_size, block_size);
  g.chunk_ratio = chunk_size / block_size;
  if (g.chunk_ratio == 0)
    return vhd_error (EINVAL, "%s: BAT: chunk ratio is 0 (block size %"
                      PRIu32 ")", file, block_size);
  g.payload_blocks = div_round_up (virtual_size, block_size);
  g.bitmap_blocks = div_round_up (g.payload_blocks, g.chunk_ratio);

  if (has_parent) {
    /* The last entry is the sector bitmap of the last chunk. */
    if (g.bitmap_blocks > UINT64_MAX / (g.chunk_ratio + 1))
      goto overflow;
    g.total_entries = g.bitmap_blocks * (g.chunk_ratio + 1);
  }
  else {
    /* The last entry is the last payload block's: the bitmap entries
     * of the full chunks before it are interleaved.
     */
    uint64_t bitmaps_before = (g.payload_blocks - 1) / g.chunk_ratio;

    if (g.payload_blocks > UINT64_MAX - bitmaps_before)
      goto overflow;
    g.total_entries = g.payload_blocks + bitmaps_before;
  }
  if (g.total_entries > UINT64_MAX / VHDX_BAT_ENTRY_SIZE)
    goto overflow;
  g.bat_bytes = g.total_entries * VHDX_BAT_ENTRY_SIZE;

  if (g.bat_bytes > bat_region_length)
    return vhd_error (EINVAL, "%s: BAT region: %" PRIu32 " bytes, too small"
                      " for the %" PRIu64 " entries (%" PRIu64 " bytes) of"
                      " a %" PRIu64 "-byte disk in %" PRIu32 "-byte"
                      " blocks", file, bat_region_length, g.total_entries,
                      g.bat_bytes, virtual_size, block_size);
  *geom = g;
  return 0;

 overflow:
  return vhd_error (EOVERFLOW, "%s: BAT: the entry count of a %" PRIu64
                    "-byte disk in %" PRIu32 "-byte blocks overflows",
                    file, virtual_size, block_size);
}

void
vhdx_bat_entry_decode (const uint8_t p[VHDX_BAT_ENTRY_SIZE],
                       struct vhdx_bat_entry *entry)
{
  uint64_t v = vhdx_get_le64 (p);

  entry->state = (uint8_t) (v & STATE_MASK);
  entry->reserved = (uint32_t) ((v >> RESERVED_SHIFT) & RESERVED_MASK);
  entry->offset_mb = v >> OFFSET_SHIFT;
}

void
vhdx_bat_entry_encode (const struct vhdx_bat_entry *entry,
                       uint8_t p[VHDX_BAT_ENTRY_SIZE])
{
  uint64_t v = (entry->state & STATE_MASK) |
    (entry->reserved & RESERVED_MASK) << RESERVED_SHIFT |
    (entry->offset_mb & VHDX_BAT_MAX_OFFSET_MB) << OFFSET_SHIFT;

  vhdx_put_le64 (p, v);
}

/* Whether state is defined for this entry and disk ([MS-VHDX] 2.5.1.1,
 * 2.5.1.2), and whether it locates a block in the file.
 */
static bool
state_valid (uint8_t state, bool bitmap, enum vhdx_disk_kind kind,
             bool *has_block)
{
  *has_block = false;
  if (bitmap) {
    if (state == VHDX_SB_NOT_PRESENT)
      return true;
    /* Only a differencing disk has sector bitmaps. */
    if (state == VHDX_SB_PRESENT && kind == VHDX_KIND_DIFFERENCING) {
      *has_block = true;
      return true;
    }
    return false;
  }
  switch (state) {
  case VHDX_PAYLOAD_NOT_PRESENT:
  case VHDX_PAYLOAD_UNDEFINED:
  case VHDX_PAYLOAD_ZERO:
  case VHDX_PAYLOAD_UNMAPPED:
    return true;
  case VHDX_PAYLOAD_FULLY_PRESENT:
    *has_block = true;
    return true;
  case VHDX_PAYLOAD_PARTIALLY_PRESENT:
    *has_block = true;
    return kind == VHDX_KIND_DIFFERENCING;
  default:
    return false;
  }
}

int
vhdx_bat_entry_check (const struct vhdx_bat_entry *entry, uint64_t index,
                      const struct vhdx_bat_geometry *geom,
                      enum vhdx_disk_kind kind, uint32_t block_size,
                      uint64_t file_size, const char *file)
{
  bool bitmap, has_block;
  uint64_t offset, length;

  if (index >= geom->total_entries)
    return vhd_error (EINVAL, "%s: BAT entry %" PRIu64 ": past the %" PRIu64
                      " entries of the table", file, index,
                      geom->total_entries);
  bitmap = vhdx_bat_is_bitmap_index (geom, index);
  if (!state_valid (entry->state, bitmap, kind, &has_block))
    return vhd_error (EINVAL, "%s: BAT entry %" PRIu64 " (%s): state %u is"
                      " not valid for a %s disk", file, index,
                      bitmap ? "sector bitmap" : "payload block",
                      entry->state, vhdx_disk_kind_name (kind));
  if (!has_block)
    return 0;               /* FileOffsetMB is reserved in other states */

  /* 44 bits of MiB: at most 2^64 - 2^20, no wrap. */
  offset = entry->offset_mb * VHDX_MiB;
  length = bitmap ? VHDX_SECTOR_BITMAP_SIZE : block_size;
  if (offset < VHDX_HEADER_AREA_SIZE)
    return vhd_error (EINVAL, "%s: BAT entry %" PRIu64 ": block at offset %"
                      PRIu64 " is inside the 1 MiB header area", file,
                      index, offset);
  if (offset > file_size || length > file_size - offset)
    return vhd_error (EINVAL, "%s: BAT entry %" PRIu64 ": block at offset %"
                      PRIu64 ", %" PRIu64 " bytes, goes past the end of the"
                      " file (%" PRIu64 " bytes)", file, index, offset,
                      length, file_size);
  return 0;
}

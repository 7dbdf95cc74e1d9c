/* vhdkit: trim and zero.
 *
 * Dynamic disks: a sector whose bitmap bit is clear reads as zeros, so
 * zeroing (when the client allows holes) and trimming clear the bits and
 * punch the data out of the file, which gives the space back.  Fixed
 * disks punch or zero the file range.  Differencing disks must write
 * zeros: a clear bit would expose the parent.  Unaligned edges are written
 * as zeros through the ordinary write path.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "image.h"

static int
punch_file_range (struct vhd_disk *disk, uint64_t offset, uint64_t len,
                  bool fast_only)
{
  int r = vhd_backend_punch (disk->be, offset, len);

  if (r != -EOPNOTSUPP)
    return r;
  return vhd_zero_file_range (disk, offset, len, fast_only);
}

/* Clear the bits of whole sectors [in_block, in_block+len) of an allocated
 * block, turning a FULL block into a PARTIAL one first.
 */
static int
clear_bits (struct vhd_disk *disk, uint32_t block, uint64_t in_block,
            uint64_t len)
{
  uint32_t sectors = disk->block_size / disk->sector_size;
  uint32_t first = (uint32_t) (in_block / disk->sector_size);
  uint32_t last = (uint32_t) ((in_block + len - 1) / disk->sector_size);
  int state = vhd_block_state (disk, block);
  uint8_t *bits;
  int r = 0;

  if (state < 0)
    return state;
  pthread_mutex_lock (&disk->meta_lock);
  if (disk->block_state[block] == BLOCK_FULL) {
    bits = calloc (1, disk->bitmap_size);
    if (bits == NULL) {
      pthread_mutex_unlock (&disk->meta_lock);
      return vhd_error (ENOMEM, "%s: out of memory", disk->path);
    }
    for (uint32_t s = 0; s < sectors; s++)
      vhd_bit_set (bits, s);
    /* Dirty from the start: the file's bitmap still says FULL. */
    r = vhd_bitmap_adopt_locked (disk, block, bits, true);
    if (r == 0)
      __atomic_store_n (&disk->block_state[block], BLOCK_PARTIAL,
                        __ATOMIC_RELEASE);
  }
  if (r == 0)
    r = vhd_bitmap_get_locked (disk, block, &bits);
  if (r == 0) {
    for (uint32_t s = first; s <= last; s++)
      vhd_bit_clear (bits, s);
    vhd_mark_bitmap_dirty (disk, block);
  }
  pthread_mutex_unlock (&disk->meta_lock);
  return r;
}

enum discard_mode {
  DISCARD_TRIM,                 /* advisory: may read back as zeros */
  DISCARD_ZERO,                 /* must read back as zeros */
};

/* The sector-aligned part of a trim or zero, one block at a time. */
static int
discard_aligned (struct vhd_disk *disk, uint64_t count, uint64_t offset,
                 enum discard_mode mode, uint32_t flags)
{
  bool may_trim = mode == DISCARD_TRIM || (flags & VHD_IO_MAY_TRIM);
  bool fast = flags & VHD_IO_FAST_ZERO;
  uint32_t block_size;
  int r = 0;

  if (disk->layout == VHD_LAYOUT_FLAT)
    return may_trim ? punch_file_range (disk, offset, count, fast)
                    : vhd_zero_file_range (disk, offset, count, fast);

  block_size = disk->block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t in_block = offset % block_size;
    uint64_t len = block_size - in_block;
    uint64_t data = vhd_block_offset (disk, block);

    if (len > count)
      len = count;
    if (data == VHD_BLOCK_ZERO)
      ;                         /* reads as zeros already, at this level */
    else if (disk->layout == VHD_LAYOUT_DIFFERENCING) {
      /* Zeros must be written into the child; trim does nothing here. */
      if (mode == DISCARD_ZERO) {
        int state = 0;
        r = vhd_ensure_allocated (disk, block, &data);
        if (r == 0)
          r = state = vhd_block_state (disk, block);
        if (r >= 0)
          r = vhd_zero_file_range (disk, data + in_block, len, fast);
        /* A FULL block has every bit set already. */
        if (r == 0 && state == BLOCK_PARTIAL)
          r = vhd_set_bits (disk, block, in_block, len);
      }
    }
    else if (vhd_block_present (data)) {
      if (may_trim) {
        if (disk->sparse_bitmaps)
          r = clear_bits (disk, block, in_block, len);
        if (r == 0)
          r = punch_file_range (disk, data + in_block, len, fast);
      }
      else
        r = vhd_zero_file_range (disk, data + in_block, len, fast);
    }
    /* An unallocated dynamic block reads as zeros already. */
    offset += len;
    count -= len;
  }
  return r;
}

static int
discard (struct vhd_disk *disk, uint64_t count, uint64_t offset,
         enum discard_mode mode, uint32_t flags)
{
  uint64_t start, end, sector;
  int r;

  if (disk->readonly)
    return vhd_error (EROFS, "%s: the image is open read-only", disk->path);
  r = vhd_check_range (disk, count, offset,
                       mode == DISCARD_TRIM ? "trim" : "zero");
  if (r == 0 && count > 0)
    r = vhd_before_first_write (disk);
  if (r < 0 || count == 0)
    return r;

  sector = disk->sector_size;
  start = (offset + sector - 1) & ~(uint64_t) (sector - 1);
  end = (offset + count) & ~(uint64_t) (sector - 1);
  if (mode == DISCARD_ZERO && (start > end || start != offset ||
                               end != offset + count)) {
    /* Unaligned edges (or a range inside one sector): write zeros. */
    static const uint8_t zeros[VHD_CORE_MAX_SECTOR_SIZE];
    uint64_t head_end = start < offset + count ? start : offset + count;
    if (head_end > offset)
      r = vhd_pwrite (disk, zeros, head_end - offset, offset, 0);
    if (r == 0 && end >= start && end < offset + count)
      r = vhd_pwrite (disk, zeros, offset + count - end, end, 0);
  }
  if (r == 0 && end > start) {
    pthread_rwlock_rdlock (&disk->flush_lock);
    r = discard_aligned (disk, end - start, start, mode, flags);
    pthread_rwlock_unlock (&disk->flush_lock);
  }
  if (r == 0 && (flags & VHD_IO_FUA))
    r = vhd_flush (disk);
  return r;
}

int
vhd_trim (vhd_disk *disk, uint64_t count, uint64_t offset, uint32_t flags)
{
  return discard (disk, count, offset, DISCARD_TRIM, flags);
}

int
vhd_zero (vhd_disk *disk, uint64_t count, uint64_t offset, uint32_t flags)
{
  return discard (disk, count, offset, DISCARD_ZERO, flags);
}

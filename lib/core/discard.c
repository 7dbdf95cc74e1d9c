/* vhdkit: trim and zero.
 *
 * Dynamic disks: a sector whose bitmap bit is clear reads as zeros, so
 * zeroing (when the client allows holes) and trimming clear the bits and
 * punch the data out of the file, which gives the space back.  A whole
 * block is released instead where the driver can say so in its table
 * (VHDX: UNMAPPED, ZERO), so that extents and other readers see it as
 * holding no data.  Fixed disks punch or zero the file range.
 * Differencing disks must write zeros: a clear bit would expose the
 * parent.  Unaligned edges are written as zeros through the ordinary
 * write path.
 *
 * Releasing a block, and why a crash cannot turn it into garbage: the
 * entry changes in memory only (under meta_lock, like an allocation);
 * the table in the file changes at the next flush, which waits for this
 * request (flush_lock) and syncs the punch before it writes the table.
 * Until then the file's table still points at the old space: after a
 * crash the block reads its old data or zeros (the punch), the old or
 * the new content, as NBD allows for an unflushed request.  It never
 * reads another block's data, because the old space is never given to
 * another block: new blocks go at the end of the file (the driver's
 * rule, driver.h), and a write into a released block allocates one
 * there.  After the flush the table says the block has no space, and
 * the old range is a hole that nothing points at (a compact would
 * reclaim its address range; it holds no storage).
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

/* Give up a whole block's file space when the driver can record that it
 * reads as zeros (driver.h, release_block; the top of this file says why
 * the order is safe).  Returns 1 when the block reads as zeros now
 * without file space, 0 when it keeps its space (the caller punches or
 * zeroes its range, as for part of a block), or -errno.
 *
 * Not on storage that cannot grow (the nbdkit filter over a plugin):
 * the block could never be written again.  Not for a block with a
 * sector bitmap in the cache (PARTIAL): its bitmap would be written back
 * at the next flush for a block that has no space.
 */
static int
release_whole_block (struct vhd_disk *disk, uint32_t block, bool zero)
{
  uint64_t data;
  int r = 0;

  if (disk->ops->release_block == NULL ||
      disk->layout != VHD_LAYOUT_SPARSE || !disk->be->can_grow)
    return 0;
  pthread_mutex_lock (&disk->meta_lock);
  /* Again under the lock: a request racing with this one may have
   * released or reallocated the block since the caller looked.
   */
  data = vhd_block_offset (disk, block);
  if (!vhd_block_present (data))
    r = 1;                      /* reads as zeros already */
  else if (disk->block_state[block] != BLOCK_PARTIAL) {
    r = disk->ops->release_block (disk, block, zero);
    if (r == 1) {
      /* As a block never allocated: the next allocation sets it. */
      __atomic_store_n (&disk->block_state[block], BLOCK_UNKNOWN,
                        __ATOMIC_RELEASE);
      __atomic_store_n (&disk->metadata_dirty, true, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock (&disk->meta_lock);
  if (r == 1 && vhd_block_present (data)) {
    /* Only to give the space back: no reader looks there any more, and
     * what a crash shows there before the next flush is old data or
     * zeros either way.  Storage that cannot punch keeps the space.
     */
    int p = vhd_backend_punch (disk->be, data, disk->block_size);
    if (p < 0 && p != -EOPNOTSUPP)
      return p;
  }
  return r;
}

/* Bytes of block inside the disk: the last block may end early. */
static uint64_t
block_len (const struct vhd_disk *disk, uint32_t block)
{
  uint64_t start = (uint64_t) block * disk->block_size;

  return disk->size - start < disk->block_size ? disk->size - start
                                               : disk->block_size;
}

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
      /* Zeros must be written into the child; a trim does the same where
       * the format's driver asks for it (trim_hides_parent), else
       * nothing, which NBD allows.
       */
      if (mode == DISCARD_ZERO || disk->trim_hides_parent) {
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
      /* A zero with NO_HOLE (no may_trim) asks for the space to stay
       * allocated: only trims and zeros that allow holes release it.
       */
      int released = 0;

      if (may_trim && in_block == 0 && len == block_len (disk, block))
        released = release_whole_block (disk, block, mode == DISCARD_ZERO);
      if (released != 0)
        r = released < 0 ? released : 0;
      else if (may_trim) {
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

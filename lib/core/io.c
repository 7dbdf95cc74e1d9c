/* vhdkit: the read and write paths, block allocation, flush, trim, zero.
 *
 * Crash safety rests on one order (DESIGN.md, "Runtime paths"):
 *  - a new block is laid out by the driver past the end of the image (its
 *    space zeroed, its bitmap written, the image kept valid for a reader:
 *    VHD moves its footer after it), and only then published in the
 *    in-memory block table (formats/vhd/driver.c);
 *  - bitmaps and table entries reach the file only at a flush, after the
 *    data they cover has been synced: fdatasync, metadata, fdatasync.
 * So a crash at any point leaves the table and bitmaps of the last
 * completed flush pointing at data that is in the file; the worst case is
 * a block's worth of leaked space at the end, which the driver's scan
 * recovers from.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "bitmap.h"
#include "chain.h"
#include "image.h"

int
vhd_io_init (struct vhd_disk *disk)
{
  pthread_rwlockattr_t attr;
  uint32_t n;

  pthread_mutex_init (&disk->meta_lock, NULL);
  pthread_mutex_init (&disk->rmw_lock, NULL);
  pthread_mutex_init (&disk->round_lock, NULL);
  pthread_cond_init (&disk->round_done, NULL);
  /* Writers hold the rwlock shared; a flush must not starve behind them. */
  pthread_rwlockattr_init (&attr);
  pthread_rwlockattr_setkind_np (&attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&disk->flush_lock, &attr);
  pthread_rwlockattr_destroy (&attr);
  disk->locks_initialized = true;

  if (!disk->readonly || !disk->force_share) {
    int r = vhd_backend_lock (disk->be, !disk->readonly);
    if (r < 0)
      return r;
  }
  disk->file_end = disk->file_size;
  if (!disk->readonly) {
    int r = disk->ops->prepare_write (disk);
    if (r < 0)
      return r;
  }
  if (disk->layout == VHD_LAYOUT_FLAT)
    return 0;

  /* What is allocated per block here is counted in the cap that the
   * driver's open checked; bitmaps live in the bounded cache (map.c),
   * allocated as blocks turn out to be PARTIAL.
   */
  n = disk->n_blocks;
  disk->bitmap_cache.budget = VHD_BITMAP_CACHE_BYTES;
  disk->block_state = calloc (n, 1);
  if (!disk->block_state)
    return vhd_error (ENOMEM, "%s: out of memory for %" PRIu32 " blocks",
                      disk->path, n);
  return 0;
}

void
vhd_io_fini (struct vhd_disk *disk)
{
  vhd_bitmap_cache_fini (disk);
  free (disk->block_state);
  if (disk->locks_initialized) {
    pthread_mutex_destroy (&disk->meta_lock);
    pthread_mutex_destroy (&disk->rmw_lock);
    pthread_mutex_destroy (&disk->round_lock);
    pthread_cond_destroy (&disk->round_done);
    pthread_rwlock_destroy (&disk->flush_lock);
  }
}

int
vhd_check_range (const struct vhd_disk *disk, uint64_t count, uint64_t offset,
             const char *what)
{
  if (offset > disk->size || count > disk->size - offset)
    return vhd_error (EINVAL, "%s: %s of %" PRIu64 " bytes at offset %"
                      PRIu64 " goes past the disk's size %" PRIu64,
                      disk->path, what, count, offset, disk->size);
  return 0;
}

int
vhd_pread (vhd_disk *disk, void *buf, size_t count, uint64_t offset)
{
  struct vhd_segment_list segs;
  int r;

  r = vhd_check_range (disk, count, offset, "read");
  if (r < 0)
    return r;
  vhd_segments_init (&segs);
  r = vhd_map_read (disk, offset, count, buf, &segs);
  if (r == 0)
    r = vhd_io_run (segs.segs, segs.n, false);
  vhd_segments_free (&segs);
  return r;
}

/* Write len bytes at offset as one batch (image.h: drivers write their
 * metadata with it too).
 */
int
vhd_write_exact (struct vhd_disk *disk, const void *buf, size_t len,
             uint64_t offset, const char *what)
{
  struct vhd_segment s = {
    .be = disk->be, .file_offset = offset,
    .length = len, .buf = (uint8_t *) buf,
  };
  int r = vhd_io_run (&s, 1, true);
  if (r < 0)
    return vhd_error (r, "%s: writing the %s: %s", disk->path, what,
                      vhd_last_error ());
  return 0;
}

/* Make [offset, offset+len) of the file read as zeros, allocated.  With
 * fast_only, fail with -ENOTSUP rather than write zeros by hand.
 */
int
vhd_zero_file_range (struct vhd_disk *disk, uint64_t offset, uint64_t len,
                     bool fast_only)
{
  static const uint8_t zeros[65536];
  int r = vhd_backend_zero (disk->be, offset, len);

  if (r != -EOPNOTSUPP)
    return r;
  if (fast_only)
    return vhd_error (ENOTSUP, "%s: the file system cannot zero a range"
                      " quickly", disk->path);
  /* The storage cannot zero a range (tmpfs, old kernels): write zeros. */
  while (len > 0) {
    size_t n = len < sizeof zeros ? (size_t) len : sizeof zeros;
    r = vhd_write_exact (disk, zeros, n, offset, "zeroed range");
    if (r < 0)
      return r;
    offset += n;
    len -= n;
  }
  return 0;
}

/* Allocate a block for `block`, called with meta_lock held: where it
 * goes and how it is made safe is the driver's.  Its data area reads as
 * zeros, so a sparse block starts with every bit set (later writes touch
 * no metadata) and a differencing one with none (its sectors still come
 * from the parent).
 */
static int
allocate_block_locked (struct vhd_disk *disk, uint32_t block)
{
  /* A block that read as zeros at this level (VHD_BLOCK_ZERO) hides the
   * parent: all of its sectors are the child's from the start.
   */
  bool partial = disk->layout == VHD_LAYOUT_DIFFERENCING &&
                 vhd_block_offset (disk, block) == 0;
  uint8_t *bitmap;
  int r;

  /* The storage under a callback backend (an nbdkit plugin) has the
   * size it has: only blocks already in the image can be written.
   */
  if (!disk->be->can_grow)
    return vhd_error (ENOSPC, "%s: writing block %" PRIu32 " needs a new"
                      " block in the image, and its storage cannot grow"
                      " (only blocks already allocated are writable)",
                      disk->path, block);
  bitmap = calloc (1, disk->bitmap_size);
  if (bitmap == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  if (!partial)
    for (uint32_t s = 0; s < disk->block_size / disk->sector_size; s++)
      vhd_bit_set (bitmap, s);

  r = disk->ops->allocate_block (disk, block, bitmap);
  if (r < 0) {
    free (bitmap);
    return r;
  }
  if (partial) {
    /* Dirty, so that the next flush writes the new block's empty bitmap
     * whatever its writes set: a format whose bitmaps live apart from
     * the block (VHDX's sector bitmap blocks) may hold stale bits there
     * from a crash (bits durable, the entry that allocated the block
     * not), and a clean copy could be dropped from the cache and those
     * bits read back.  A dirty one stays until written.
     */
    r = vhd_bitmap_adopt_locked (disk, block, bitmap, true);
    disk->block_state[block] = BLOCK_PARTIAL;
  }
  else {
    free (bitmap);
    disk->block_state[block] = BLOCK_FULL;
  }
  __atomic_store_n (&disk->metadata_dirty, true, __ATOMIC_RELEASE);
  return r;
}

/* The block's entry, allocating it first if needed.  Two writers racing
 * for the same block allocate it once: the second finds it under the lock.
 */
int
vhd_ensure_allocated (struct vhd_disk *disk, uint32_t block,
                      uint64_t *data_offset)
{
  int r = 0;

  *data_offset = vhd_block_offset (disk, block);
  if (vhd_block_present (*data_offset))
    return 0;
  pthread_mutex_lock (&disk->meta_lock);
  if (!vhd_block_present (vhd_block_offset (disk, block)))
    r = allocate_block_locked (disk, block);
  *data_offset = vhd_block_offset (disk, block);
  pthread_mutex_unlock (&disk->meta_lock);
  return r;
}

static bool
is_zero (const uint8_t *p, size_t len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

/* Set the bits for [in_block, in_block+len) (whole sectors) of a PARTIAL
 * block, after the data they cover was written.
 */
int
vhd_set_bits (struct vhd_disk *disk, uint32_t block, uint64_t in_block,
              uint64_t len)
{
  uint32_t first = (uint32_t) (in_block / disk->sector_size);
  uint32_t last = (uint32_t) ((in_block + len - 1) / disk->sector_size);
  bool changed = false;
  uint8_t *bits;
  int r;

  pthread_mutex_lock (&disk->meta_lock);
  r = vhd_bitmap_get_locked (disk, block, &bits);
  for (uint32_t s = first; r == 0 && s <= last; s++) {
    if (!vhd_bit_test (bits, s)) {
      vhd_bit_set (bits, s);
      changed = true;
    }
  }
  if (changed)
    vhd_mark_bitmap_dirty (disk, block);
  pthread_mutex_unlock (&disk->meta_lock);
  return r;
}

struct pending_bits {
  uint32_t block;
  uint64_t in_block, len;
};

/* The sector-aligned write path. */
static int
write_aligned (struct vhd_disk *disk, const uint8_t *buf, uint64_t count,
               uint64_t offset)
{
  struct vhd_segment_list segs;
  struct pending_bits small[16], *bits = small;
  size_t n_bits = 0, cap_bits = 16;
  uint32_t block_size;
  int r = 0;

  vhd_segments_init (&segs);
  if (disk->layout == VHD_LAYOUT_FLAT) {
    r = vhd_segments_add (&segs, disk->be, offset, count,
                          (uint8_t *) buf);
    goto run;
  }

  block_size = disk->block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t in_block = offset % block_size;
    uint64_t len = block_size - in_block;
    uint64_t data;
    int state;

    if (len > count)
      len = count;
    /* Zeros into a block that reads as zeros already (unallocated in a
     * dynamic disk, or a zero block): nothing to allocate or write.
     */
    data = vhd_block_offset (disk, block);
    if ((data == VHD_BLOCK_ZERO ||
         (data == 0 && disk->layout != VHD_LAYOUT_DIFFERENCING)) &&
        is_zero (buf, len))
      goto next;
    r = vhd_ensure_allocated (disk, block, &data);
    if (r < 0)
      break;
    state = vhd_block_state (disk, block);
    if (state < 0) {
      r = state;
      break;
    }
    r = vhd_segments_add (&segs, disk->be, data + in_block, len,
                          (uint8_t *) buf);
    if (r == 0 && state == BLOCK_PARTIAL) {
      if (n_bits == cap_bits) {
        struct pending_bits *nb = malloc (2 * cap_bits * sizeof *nb);
        if (nb == NULL) {
          r = vhd_error (ENOMEM, "%s: out of memory", disk->path);
          break;
        }
        memcpy (nb, bits, n_bits * sizeof *nb);
        if (bits != small)
          free (bits);
        bits = nb;
        cap_bits *= 2;
      }
      bits[n_bits++] = (struct pending_bits) { block, in_block, len };
    }
  next:
    offset += len;
    count -= len;
    buf += len;
  }

 run:
  if (r == 0)
    r = vhd_io_run (segs.segs, segs.n, true);
  for (size_t i = 0; r == 0 && i < n_bits; i++)
    r = vhd_set_bits (disk, bits[i].block, bits[i].in_block, bits[i].len);
  if (bits != small)
    free (bits);
  vhd_segments_free (&segs);
  return r;
}

/* Sub-sector writes: read the partly covered first and last sectors
 * (through the chain, so a differencing child copies them from its
 * parent), merge, and write whole sectors.
 */
static int
write_unaligned (struct vhd_disk *disk, const uint8_t *buf, uint64_t count,
                 uint64_t offset)
{
  uint64_t start = offset & ~(uint64_t) (disk->sector_size - 1);
  uint64_t end = (offset + count + disk->sector_size - 1)
                 & ~(uint64_t) (disk->sector_size - 1);
  uint8_t *bounce;
  int r = 0;

  if (end > disk->size)
    return vhd_error (EINVAL, "%s: the disk's size is not a whole number of"
                      " sectors", disk->path);
  bounce = malloc (end - start);
  if (bounce == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  pthread_mutex_lock (&disk->rmw_lock);
  if (start != offset)
    r = vhd_pread (disk, bounce, disk->sector_size, start);
  /* The last sector, unless it is the first one and was just read. */
  if (r == 0 && (offset + count) % disk->sector_size != 0 &&
      !(end - disk->sector_size == start && start != offset))
    r = vhd_pread (disk, bounce + (end - start - disk->sector_size),
                   disk->sector_size, end - disk->sector_size);
  if (r == 0) {
    memcpy (bounce + (offset - start), buf, count);
    r = write_aligned (disk, bounce, end - start, start);
  }
  pthread_mutex_unlock (&disk->rmw_lock);
  free (bounce);
  return r;
}

int
vhd_before_first_write (struct vhd_disk *disk)
{
  int r = 0;

  if (__atomic_load_n (&disk->first_write_done, __ATOMIC_ACQUIRE))
    return 0;
  pthread_mutex_lock (&disk->meta_lock);
  if (!disk->first_write_done) {
    if (disk->ops->before_first_write)
      r = disk->ops->before_first_write (disk);
    if (r == 0)
      __atomic_store_n (&disk->first_write_done, true, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&disk->meta_lock);
  return r;
}

int
vhd_pwrite (vhd_disk *disk, const void *buf, size_t count, uint64_t offset,
            uint32_t flags)
{
  int r;

  if (disk->readonly)
    return vhd_error (EROFS, "%s: the image is open read-only", disk->path);
  r = vhd_check_range (disk, count, offset, "write");
  if (r == 0 && count > 0)
    r = vhd_before_first_write (disk);
  if (r < 0 || count == 0)
    return r;

  pthread_rwlock_rdlock (&disk->flush_lock);
  if ((offset | count) % disk->sector_size)
    r = write_unaligned (disk, buf, count, offset);
  else
    r = write_aligned (disk, buf, count, offset);
  pthread_rwlock_unlock (&disk->flush_lock);

  if (r == 0 && (flags & VHD_IO_FUA))
    r = vhd_flush (disk);
  return r;
}

static int
sync_file (struct vhd_disk *disk)
{
  return vhd_backend_flush (disk->be, false);
}

/* Write back dirty bitmaps, then the driver's block table entries;
 * caller holds flush_lock for writing (no write in flight) after syncing
 * the data, or (a driver with commit_table) before: then write_table
 * only takes the snapshot that commit_table writes.  The bitmaps written
 * become clean, and the cache may drop them from then on.  write_table
 * answering 1 keeps metadata_dirty set: the next flush must run a round
 * of its own, even with nothing new to write.
 */
static int
write_metadata (struct vhd_disk *disk)
{
  int r;

  pthread_mutex_lock (&disk->meta_lock);
  r = vhd_bitmap_write_dirty_locked (disk, disk->ops->write_bitmap);
  if (r == 0)
    r = disk->ops->write_table (disk);
  if (r >= 0) {
    __atomic_store_n (&disk->metadata_dirty, r == 1, __ATOMIC_RELEASE);
    r = 0;
  }
  pthread_mutex_unlock (&disk->meta_lock);
  return r;
}

/* A round for a driver with commit_table: writers pause only while the
 * snapshot is taken (under flush_lock, so that every bit in it covers a
 * write that completed), and the syncs run with writes flowing again.
 * Rounds run one at a time, which keeps the driver's entries in order.
 */
static int
flush_round_split (struct vhd_disk *disk)
{
  int r;

  pthread_rwlock_wrlock (&disk->flush_lock);
  /* Before metadata_dirty is cleared: see vhd_flush's fast path. */
  __atomic_store_n (&disk->round_in_flight, true, __ATOMIC_RELEASE);
  r = write_metadata (disk);
  pthread_rwlock_unlock (&disk->flush_lock);
  if (r == 0)
    r = disk->ops->commit_table (disk);
  __atomic_store_n (&disk->round_in_flight, false, __ATOMIC_RELEASE);
  return r;
}

static int
run_round (struct vhd_disk *disk)
{
  int r;

  if (disk->ops->commit_table)
    return flush_round_split (disk);
  /* Wait for writes in flight, so that every bit and entry we are about
   * to write covers data that the first sync makes durable.
   */
  pthread_rwlock_wrlock (&disk->flush_lock);
  r = sync_file (disk);
  if (r == 0)
    r = write_metadata (disk);
  if (r == 0)
    r = sync_file (disk);
  pthread_rwlock_unlock (&disk->flush_lock);
  return r;
}

int
vhd_flush (vhd_disk *disk)
{
  uint64_t round, need;
  int r;

  if (disk->readonly)
    return 0;
  /* Nothing to write: a sync covers every write completed before it.
   * Unless a round has taken its snapshot and not yet committed it: its
   * snapshot cleared metadata_dirty, but what it holds (a completed
   * write's new block, say) is not durable until its commit is, so this
   * flush must wait for it, through a round of its own.  metadata_dirty
   * first: the snapshot sets round_in_flight before clearing it.
   */
  if (!__atomic_load_n (&disk->metadata_dirty, __ATOMIC_ACQUIRE) &&
      !__atomic_load_n (&disk->round_in_flight, __ATOMIC_ACQUIRE))
    return sync_file (disk);

  /* Group commit: every write completed before this flush was asked for
   * is covered by any round that begins from now on.  Flushes that arrive
   * during a round are all covered by the next one, so only the first of
   * them runs it; the rest wait for it to end.
   */
  pthread_mutex_lock (&disk->round_lock);
  need = disk->flush_rounds_started + 1;
  r = 0;
  while (disk->flush_round_ok < need) {
    if (disk->round_running) {
      pthread_cond_wait (&disk->round_done, &disk->round_lock);
      continue;
    }
    /* A failed round satisfies nobody: its waiters try a round of their
     * own (a failing disk fails theirs too).
     */
    round = disk->flush_rounds_started + 1;
    disk->flush_rounds_started = round;
    disk->round_running = true;
    pthread_mutex_unlock (&disk->round_lock);

    r = run_round (disk);

    pthread_mutex_lock (&disk->round_lock);
    disk->round_running = false;
    if (r == 0)
      disk->flush_round_ok = round;
    pthread_cond_broadcast (&disk->round_done);
    if (r < 0)
      break;
  }
  pthread_mutex_unlock (&disk->round_lock);
  return r;
}

/* vhdkit: translate a virtual byte range into segments: (file, offset,
 * length) to read, or zero-fill.  A differencing disk's unallocated blocks
 * and clear bitmap bits map to its parent, recursively, so one request's
 * segments across the whole chain go to the backend as one batch.
 *
 * Also here: the sector bitmap cache and extents, which walk the same
 * structures.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "format.h"
#include "image.h"

void
vhd_segments_init (struct vhd_segment_list *l)
{
  l->segs = l->inline_segs;
  l->n = 0;
  l->capacity = sizeof l->inline_segs / sizeof l->inline_segs[0];
}

void
vhd_segments_free (struct vhd_segment_list *l)
{
  if (l->segs != l->inline_segs)
    free (l->segs);
  vhd_segments_init (l);
}

/* Append, merging with the previous segment when it continues it. */
int
vhd_segments_add (struct vhd_segment_list *l, int fd, const char *path,
                  uint64_t file_offset, uint64_t length, uint8_t *buf)
{
  if (length == 0)
    return 0;
  if (l->n > 0) {
    struct vhd_segment *last = &l->segs[l->n - 1];
    if (last->fd == fd && last->buf + last->length == buf &&
        (fd < 0 || last->file_offset + last->length == file_offset)) {
      last->length += length;
      return 0;
    }
  }
  if (l->n == l->capacity) {
    size_t cap = l->capacity * 2;
    struct vhd_segment *s;
    if (l->segs == l->inline_segs) {
      s = malloc (cap * sizeof *s);
      if (s)
        memcpy (s, l->segs, l->n * sizeof *s);
    }
    else
      s = realloc (l->segs, cap * sizeof *s);
    if (s == NULL)
      return vhd_error (ENOMEM, "out of memory for I/O segments");
    l->segs = s;
    l->capacity = cap;
  }
  l->segs[l->n++] = (struct vhd_segment) {
    .fd = fd, .path = path, .file_offset = file_offset, .length = length,
    .buf = buf,
  };
  return 0;
}

/* Is every bit of the block's sectors set? */
static bool
bitmap_is_full (const uint8_t *bitmap, uint32_t sectors)
{
  uint32_t whole = sectors / 8;

  for (uint32_t i = 0; i < whole; i++)
    if (bitmap[i] != 0xff)
      return false;
  for (uint32_t s = whole * 8; s < sectors; s++)
    if (!vhd_bitmap_test (bitmap, s))
      return false;
  return true;
}

int
vhd_block_state (struct vhd_disk *disk, uint32_t block)
{
  uint8_t state = __atomic_load_n (&disk->block_state[block],
                                   __ATOMIC_ACQUIRE);
  uint32_t sector;
  uint8_t *bitmap;
  int r;

  if (state != BLOCK_UNKNOWN)
    return state;

  pthread_mutex_lock (&disk->meta_lock);
  state = disk->block_state[block];
  if (state != BLOCK_UNKNOWN) {
    pthread_mutex_unlock (&disk->meta_lock);
    return state;
  }
  sector = vhd_bat_load (disk, block);
  bitmap = malloc (disk->bitmap_size);
  if (bitmap == NULL) {
    pthread_mutex_unlock (&disk->meta_lock);
    return vhd_error (ENOMEM, "%s: out of memory for a sector bitmap",
                      disk->path);
  }
  r = vhd_pread_exact (disk->fd, bitmap, disk->bitmap_size,
                       (uint64_t) sector * VHD_SECTOR_SIZE, disk->path,
                       "sector bitmap");
  if (r < 0) {
    free (bitmap);
    pthread_mutex_unlock (&disk->meta_lock);
    return r;
  }
  if (bitmap_is_full (bitmap, disk->header.block_size / VHD_SECTOR_SIZE)) {
    free (bitmap);
    state = BLOCK_FULL;
  }
  else {
    disk->bitmaps[block] = bitmap;
    state = BLOCK_PARTIAL;
  }
  __atomic_store_n (&disk->block_state[block], state, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&disk->meta_lock);
  return state;
}

/* What lies below an absent sector: the parent, or zeros. */
static int
map_below (struct vhd_disk *disk, uint64_t offset, uint64_t count,
           uint8_t *buf, struct vhd_segment_list *out)
{
  if (disk->footer.disk_type == VHD_TYPE_DIFFERENCING && disk->parent)
    return vhd_map_read (disk->parent, offset, count, buf, out);
  return vhd_segments_add (out, -1, disk->path, 0, count, buf);
}

/* Call fn for each run of equal bits of a PARTIAL block's bitmap that
 * covers [in_block, in_block+len).  The bits are copied under the lock, so
 * that a concurrent writer setting bits is not read torn, and fn runs
 * without it.
 */
typedef int (*run_fn) (struct vhd_disk *disk, uint64_t in_block,
                       uint64_t len, bool set, void *ctx);

static int
for_each_bitmap_run (struct vhd_disk *disk, uint32_t block,
                     uint64_t in_block, uint64_t len, run_fn fn, void *ctx)
{
  uint64_t end = in_block + len, pos = in_block;
  uint32_t first = (uint32_t) (in_block / VHD_SECTOR_SIZE);
  uint32_t last = (uint32_t) ((end - 1) / VHD_SECTOR_SIZE);
  uint32_t base = first & ~7u;
  size_t nbytes = last / 8 - first / 8 + 1;
  uint8_t small[512];
  uint8_t *bits = nbytes <= sizeof small ? small : malloc (nbytes);
  int r = 0;

  if (bits == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  pthread_mutex_lock (&disk->meta_lock);
  memcpy (bits, disk->bitmaps[block] + first / 8, nbytes);
  pthread_mutex_unlock (&disk->meta_lock);

  for (uint32_t s = first; s <= last && r == 0; ) {
    bool set = vhd_bitmap_test (bits, s - base);
    uint32_t t = s;
    uint64_t run_end;

    while (t < last && vhd_bitmap_test (bits, t + 1 - base) == set)
      t++;
    run_end = (uint64_t) (t + 1) * VHD_SECTOR_SIZE;
    if (run_end > end)
      run_end = end;
    r = fn (disk, pos, run_end - pos, set, ctx);
    pos = run_end;
    s = t + 1;
  }
  if (bits != small)
    free (bits);
  return r;
}

struct map_ctx {
  uint32_t block;
  uint64_t in_block;            /* where buf starts */
  uint8_t *buf;
  struct vhd_segment_list *out;
};

static int
map_run (struct vhd_disk *disk, uint64_t pos, uint64_t len, bool set,
         void *opaque)
{
  struct map_ctx *c = opaque;
  uint8_t *buf = c->buf + (pos - c->in_block);

  if (set)
    return vhd_segments_add (c->out, disk->fd, disk->path,
                             vhd_block_data_offset (disk,
                               vhd_bat_load (disk, c->block)) + pos,
                             len, buf);
  return map_below (disk, (uint64_t) c->block * disk->header.block_size + pos,
                    len, buf, c->out);
}

int
vhd_map_read (struct vhd_disk *disk, uint64_t offset, uint64_t count,
              uint8_t *buf, struct vhd_segment_list *out)
{
  uint32_t block_size;
  int r = 0;

  if (disk->footer.disk_type == VHD_TYPE_FIXED)
    return vhd_segments_add (out, disk->fd, disk->path, offset, count, buf);

  block_size = disk->header.block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t in_block = offset % block_size;
    uint64_t len = block_size - in_block;
    uint32_t sector;

    if (len > count)
      len = count;
    sector = vhd_bat_load (disk, block);
    if (sector == VHD_BAT_UNUSED)
      r = map_below (disk, offset, len, buf, out);
    else {
      int state = vhd_block_state (disk, block);
      if (state < 0)
        r = state;
      else if (state == BLOCK_FULL)
        r = vhd_segments_add (out, disk->fd, disk->path,
                              vhd_block_data_offset (disk, sector) + in_block,
                              len, buf);
      else
        r = for_each_bitmap_run (disk, block, in_block, len, map_run,
                                 &(struct map_ctx) {
                                   .block = block, .in_block = in_block,
                                   .buf = buf, .out = out });
    }
    offset += len;
    count -= len;
    buf += len;
  }
  return r;
}

/* Extents of one level; a differencing disk's absent ranges report what
 * the chain below holds.
 */
static int
extents_below (struct vhd_disk *disk, uint64_t offset, uint64_t count,
               vhd_extent_fn fn, void *opaque)
{
  if (disk->footer.disk_type == VHD_TYPE_DIFFERENCING && disk->parent)
    return vhd_extents (disk->parent, count, offset, fn, opaque);
  return fn (opaque, offset, count, VHD_EXTENT_HOLE | VHD_EXTENT_ZERO);
}

struct extents_ctx {
  uint32_t block;
  vhd_extent_fn fn;
  void *opaque;
};

static int
extents_run (struct vhd_disk *disk, uint64_t pos, uint64_t len, bool set,
             void *opaque)
{
  struct extents_ctx *c = opaque;
  uint64_t offset = (uint64_t) c->block * disk->header.block_size + pos;

  if (set)
    return c->fn (c->opaque, offset, len, 0);
  return extents_below (disk, offset, len, c->fn, c->opaque);
}

int
vhd_extents (vhd_disk *disk, uint64_t count, uint64_t offset,
             vhd_extent_fn fn, void *opaque)
{
  uint32_t block_size;
  int r = 0;

  if (offset > disk->footer.current_size ||
      count > disk->footer.current_size - offset)
    return vhd_error (EINVAL, "%s: extents of %" PRIu64 " bytes at %" PRIu64
                      " go past the disk's size %" PRIu64, disk->path,
                      count, offset, disk->footer.current_size);
  if (disk->footer.disk_type == VHD_TYPE_FIXED)
    return count ? fn (opaque, offset, count, 0) : 0;

  block_size = disk->header.block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t len = block_size - offset % block_size;

    if (len > count)
      len = count;
    if (vhd_bat_load (disk, block) == VHD_BAT_UNUSED)
      r = extents_below (disk, offset, len, fn, opaque);
    else {
      int state = vhd_block_state (disk, block);
      if (state < 0)
        r = state;
      else if (state == BLOCK_FULL)
        r = fn (opaque, offset, len, 0);
      else
        r = for_each_bitmap_run (disk, block, offset % block_size, len,
                                 extents_run,
                                 &(struct extents_ctx) {
                                   .block = block, .fn = fn,
                                   .opaque = opaque });
    }
    offset += len;
    count -= len;
  }
  return r;
}

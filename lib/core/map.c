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

#include "bitmap.h"
#include "chain.h"
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
vhd_segments_add (struct vhd_segment_list *l, struct vhd_backend *be,
                  uint64_t file_offset, uint64_t length, uint8_t *buf)
{
  if (length == 0)
    return 0;
  if (l->n > 0) {
    struct vhd_segment *last = &l->segs[l->n - 1];
    if (last->be == be && last->buf + last->length == buf &&
        (be == NULL || last->file_offset + last->length == file_offset)) {
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
    .be = be, .file_offset = file_offset, .length = length,
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
    if (!vhd_bit_test (bitmap, s))
      return false;
  return true;
}

/* ---- The sector bitmap cache (see struct vhd_bitmap_cache). ---- */

struct vhd_bitmap_entry {
  uint32_t block;
  bool dirty;
  struct vhd_bitmap_entry *hash_next;
  struct vhd_bitmap_entry *prev, *next;  /* MRU list (clean) */
  struct vhd_bitmap_entry *dirty_next;   /* dirty list (dirty) */
  uint8_t *bits;
};

static uint64_t
entry_bytes (const struct vhd_disk *disk)
{
  return sizeof (struct vhd_bitmap_entry) + disk->bitmap_size;
}

/* Fibonacci hashing: nearby blocks spread over the table. */
static size_t
hash_block (uint32_t block, size_t n_buckets)
{
  return (size_t) ((block * UINT32_C (2654435769)) >> 8) & (n_buckets - 1);
}

static size_t
bucket_of (const struct vhd_bitmap_cache *c, uint32_t block)
{
  return hash_block (block, c->n_buckets);
}

static struct vhd_bitmap_entry *
find_entry (struct vhd_bitmap_cache *c, uint32_t block)
{
  if (c->n_buckets == 0)
    return NULL;
  for (struct vhd_bitmap_entry *e = c->buckets[bucket_of (c, block)]; e;
       e = e->hash_next)
    if (e->block == block)
      return e;
  return NULL;
}

static void
lru_unlink (struct vhd_bitmap_cache *c, struct vhd_bitmap_entry *e)
{
  if (e->prev)
    e->prev->next = e->next;
  else
    c->mru = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->lru = e->prev;
  e->prev = e->next = NULL;
}

static void
lru_push_front (struct vhd_bitmap_cache *c, struct vhd_bitmap_entry *e)
{
  e->prev = NULL;
  e->next = c->mru;
  if (c->mru)
    c->mru->prev = e;
  else
    c->lru = e;
  c->mru = e;
}

/* Double the hash table when chains grow long; on failure keep it. */
static void
maybe_grow (struct vhd_bitmap_cache *c)
{
  size_t n = c->n_buckets ? c->n_buckets * 2 : 256;
  struct vhd_bitmap_entry **b;

  if (c->n_buckets != 0 && c->count <= c->n_buckets)
    return;
  b = calloc (n, sizeof *b);
  if (b == NULL)
    return;
  for (size_t i = 0; i < c->n_buckets; i++) {
    struct vhd_bitmap_entry *e = c->buckets[i], *next;
    for (; e; e = next) {
      next = e->hash_next;
      e->hash_next = b[hash_block (e->block, n)];
      b[hash_block (e->block, n)] = e;
    }
  }
  free (c->buckets);
  c->buckets = b;
  c->n_buckets = n;
}

static void
remove_entry (struct vhd_disk *disk, struct vhd_bitmap_entry *e)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;
  struct vhd_bitmap_entry **p = &c->buckets[bucket_of (c, e->block)];

  while (*p != e)
    p = &(*p)->hash_next;
  *p = e->hash_next;
  lru_unlink (c, e);
  c->count--;
  c->bytes -= entry_bytes (disk);
  free (e->bits);
  free (e);
}

/* Drop clean bitmaps, least recently used first, until the cache fits
 * its budget; keep is the one the caller is about to use.
 */
static void
evict (struct vhd_disk *disk, const struct vhd_bitmap_entry *keep)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;

  while (c->bytes > c->budget && c->lru && c->lru != keep)
    remove_entry (disk, c->lru);
}

int
vhd_bitmap_adopt_locked (struct vhd_disk *disk, uint32_t block,
                         uint8_t *bits, bool dirty)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;
  struct vhd_bitmap_entry *e;

  maybe_grow (c);
  e = c->n_buckets ? calloc (1, sizeof *e) : NULL;
  if (e == NULL) {
    free (bits);
    /* A clean bitmap is read again when needed; a dirty one is lost. */
    return dirty ? vhd_error (ENOMEM, "%s: out of memory for a sector"
                              " bitmap", disk->path) : 0;
  }
  e->block = block;
  e->bits = bits;
  e->hash_next = c->buckets[bucket_of (c, block)];
  c->buckets[bucket_of (c, block)] = e;
  c->count++;
  c->bytes += entry_bytes (disk);
  if (dirty) {
    e->dirty = true;
    e->dirty_next = c->dirty;
    c->dirty = e;
  }
  else
    lru_push_front (c, e);
  evict (disk, e);
  return 0;
}

void
vhd_mark_bitmap_dirty (struct vhd_disk *disk, uint32_t block)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;
  struct vhd_bitmap_entry *e = find_entry (c, block);

  /* The caller changed the bits that it got under the same lock. */
  if (e && !e->dirty) {
    lru_unlink (c, e);
    e->dirty = true;
    e->dirty_next = c->dirty;
    c->dirty = e;
  }
  __atomic_store_n (&disk->metadata_dirty, true, __ATOMIC_RELEASE);
}

static int
read_bitmap (struct vhd_disk *disk, uint32_t block, uint8_t **out)
{
  uint8_t *bits = malloc (disk->bitmap_size);
  int r;

  if (bits == NULL)
    return vhd_error (ENOMEM, "%s: out of memory for a sector bitmap",
                      disk->path);
  r = disk->ops->read_bitmap (disk, block, bits);
  if (r < 0) {
    free (bits);
    return r;
  }
  *out = bits;
  return 0;
}

int
vhd_bitmap_get_locked (struct vhd_disk *disk, uint32_t block,
                       uint8_t **bits)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;
  struct vhd_bitmap_entry *e = find_entry (c, block);
  uint8_t *b;
  int r;

  if (e == NULL) {
    /* Dropped while clean: the file holds the same bits. */
    r = read_bitmap (disk, block, &b);
    if (r < 0)
      return r;
    c->loads++;
    r = vhd_bitmap_adopt_locked (disk, block, b, false);
    if (r < 0)
      return r;
    e = find_entry (c, block);
    if (e == NULL)
      return vhd_error (ENOMEM, "%s: out of memory for a sector bitmap",
                        disk->path);
  }
  else if (!e->dirty && e != c->mru) {
    lru_unlink (c, e);
    lru_push_front (c, e);
  }
  *bits = e->bits;
  return 0;
}

int
vhd_bitmap_write_dirty_locked (struct vhd_disk *disk, vhd_bitmap_write_fn fn)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;
  int r = 0;

  while (c->dirty && r == 0) {
    struct vhd_bitmap_entry *e = c->dirty;
    r = fn (disk, e->block, e->bits);
    if (r == 0) {
      c->dirty = e->dirty_next;
      e->dirty_next = NULL;
      e->dirty = false;
      lru_push_front (c, e);
    }
  }
  evict (disk, NULL);
  return r;
}

void
vhd_bitmap_cache_fini (struct vhd_disk *disk)
{
  struct vhd_bitmap_cache *c = &disk->bitmap_cache;

  for (size_t i = 0; i < c->n_buckets; i++) {
    struct vhd_bitmap_entry *e = c->buckets[i], *next;
    for (; e; e = next) {
      next = e->hash_next;
      free (e->bits);
      free (e);
    }
  }
  free (c->buckets);
  memset (c, 0, sizeof *c);
}

/* The block's state, reading its bitmap the first time: a FULL block
 * never touches the cache again, a PARTIAL one leaves its bits there.
 */
int
vhd_block_state (struct vhd_disk *disk, uint32_t block)
{
  uint8_t state = __atomic_load_n (&disk->block_state[block],
                                   __ATOMIC_ACQUIRE);
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
  r = read_bitmap (disk, block, &bitmap);
  if (r < 0) {
    pthread_mutex_unlock (&disk->meta_lock);
    return r;
  }
  if (bitmap_is_full (bitmap, disk->block_size / disk->sector_size)) {
    free (bitmap);
    state = BLOCK_FULL;
  }
  else {
    /* Clean: cannot fail (it is read again if it could not be kept). */
    vhd_bitmap_adopt_locked (disk, block, bitmap, false);
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
  if (disk->layout == VHD_LAYOUT_DIFFERENCING && disk->parent)
    return vhd_map_read (disk->parent, offset, count, buf, out);
  return vhd_segments_add (out, NULL, 0, count, buf);
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
  uint32_t first = (uint32_t) (in_block / disk->sector_size);
  uint32_t last = (uint32_t) ((end - 1) / disk->sector_size);
  uint32_t base = first & ~7u;
  size_t nbytes = last / 8 - first / 8 + 1;
  uint8_t small[512];
  uint8_t *bits = nbytes <= sizeof small ? small : malloc (nbytes);
  int r = 0;

  uint8_t *cached;

  if (bits == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  pthread_mutex_lock (&disk->meta_lock);
  r = vhd_bitmap_get_locked (disk, block, &cached);
  if (r == 0)
    memcpy (bits, cached + first / 8, nbytes);
  pthread_mutex_unlock (&disk->meta_lock);
  if (r < 0) {
    if (bits != small)
      free (bits);
    return r;
  }

  for (uint32_t s = first; s <= last && r == 0; ) {
    bool set = vhd_bit_test (bits, s - base);
    uint32_t t = s;
    uint64_t run_end;

    while (t < last) {
      uint32_t u = t + 1 - base;
      /* Whole bytes of equal bits at once: a 256 MiB block has 512 Ki. */
      if (u % 8 == 0 && last - t >= 8 && bits[u / 8] == (set ? 0xff : 0)) {
        t += 8;
        continue;
      }
      if (vhd_bit_test (bits, u) != set)
        break;
      t++;
    }
    run_end = (uint64_t) (t + 1) * disk->sector_size;
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
    return vhd_segments_add (c->out, disk->be,
                             vhd_block_offset (disk, c->block) + pos,
                             len, buf);
  return map_below (disk, (uint64_t) c->block * disk->block_size + pos,
                    len, buf, c->out);
}

int
vhd_map_read (struct vhd_disk *disk, uint64_t offset, uint64_t count,
              uint8_t *buf, struct vhd_segment_list *out)
{
  uint32_t block_size;
  int r = 0;

  if (disk->layout == VHD_LAYOUT_FLAT)
    return vhd_segments_add (out, disk->be, offset, count, buf);

  block_size = disk->block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t in_block = offset % block_size;
    uint64_t len = block_size - in_block;
    uint64_t data;

    if (len > count)
      len = count;
    /* One lookup per block: the driver's table, read without a lock. */
    data = vhd_block_offset (disk, block);
    if (data == 0)
      r = map_below (disk, offset, len, buf, out);
    else if (data == VHD_BLOCK_ZERO)
      r = vhd_segments_add (out, NULL, 0, len, buf);
    else {
      int state = vhd_block_state (disk, block);
      if (state < 0)
        r = state;
      else if (state == BLOCK_FULL)
        r = vhd_segments_add (out, disk->be, data + in_block, len, buf);
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
  if (disk->layout == VHD_LAYOUT_DIFFERENCING && disk->parent)
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
  uint64_t offset = (uint64_t) c->block * disk->block_size + pos;

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

  if (offset > disk->size || count > disk->size - offset)
    return vhd_error (EINVAL, "%s: extents of %" PRIu64 " bytes at %" PRIu64
                      " go past the disk's size %" PRIu64, disk->path,
                      count, offset, disk->size);
  if (disk->layout == VHD_LAYOUT_FLAT)
    return count ? fn (opaque, offset, count, 0) : 0;

  block_size = disk->block_size;
  while (count > 0 && r == 0) {
    uint32_t block = (uint32_t) (offset / block_size);
    uint64_t len = block_size - offset % block_size;
    uint64_t data = vhd_block_offset (disk, block);

    if (len > count)
      len = count;
    if (data == 0)
      r = extents_below (disk, offset, len, fn, opaque);
    else if (data == VHD_BLOCK_ZERO)
      r = fn (opaque, offset, len, VHD_EXTENT_HOLE | VHD_EXTENT_ZERO);
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

/* vhdkit: the in-memory state of an open image (internal). */

#ifndef VHDKIT_IMAGE_H
#define VHDKIT_IMAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/driver.h"
#include "core/error.h"

/* The byte budget of one image's sector bitmap cache.  (The cap on the
 * rest of the in-memory metadata, VHD_DEFAULT_MAX_METADATA_BYTES, is
 * public: vhdkit.h.)
 */
#define VHD_BITMAP_CACHE_BYTES (UINT64_C (8) << 20)

/* One cached sector bitmap (map.c). */
struct vhd_bitmap_entry;

/* The sector bitmaps of PARTIAL blocks, guarded by meta_lock.  Clean ones
 * (the file holds the same bits) sit on a most-recently-used list and are
 * dropped, least recently used first, when the cache holds more than
 * budget bytes; they are read again when needed.  Dirty ones (changes not
 * written yet: for a differencing disk the only copy of which sectors it
 * holds) are taken off that list and pinned on the dirty list until
 * write_metadata writes them.
 */
struct vhd_bitmap_cache {
  struct vhd_bitmap_entry **buckets;   /* hash of block index */
  size_t n_buckets;                    /* a power of two, or 0 */
  size_t count;
  uint64_t bytes, budget;
  struct vhd_bitmap_entry *mru, *lru;  /* clean entries only */
  struct vhd_bitmap_entry *dirty;      /* pinned, singly linked */
  uint64_t loads;                      /* bitmaps read back from the file */
};

struct vhd_disk {
  /* Set by the core before the driver's open; drivers read them. */
  char *path;                   /* as given to vhd_open (a callback
                                 * backend's name) */
  struct vhd_backend *be;       /* the storage; the disk owns it */
  bool readonly;
  bool force_share;             /* read-only, and takes no lock (io.c) */
  uint64_t file_size;           /* at open */
  uint64_t max_metadata_bytes;  /* the cap the driver's open checks */

  /* The format (core/driver.h) and its own state. */
  const struct vhd_format_ops *ops;
  void *fmt;

  /* Set by the driver's open: the image as the core sees it. */
  uint64_t size;                /* the virtual disk's size in bytes */
  enum vhd_layout layout;
  uint32_t block_size;          /* bytes; 0 for a flat layout */
  uint32_t n_blocks;            /* entries of the block table */
  uint32_t sector_size;         /* logical sector: 512 or 4096 bytes, the
                                 * unit of the sector bitmaps and of
                                 * read-modify-write */
  uint32_t bitmap_size;         /* bytes of one block's sector bitmap in
                                 * memory (core/bitmap.h), at least one
                                 * bit per sector */

  /* A sparse disk's blocks carry sector bitmaps (VHD), so that a trim
   * inside a block can clear their bits; without (VHDX), a trim only
   * punches the data.
   */
  bool sparse_bitmaps;

  /* A differencing disk's trim writes zeros, as a zero does, so that the
   * parent's data never shows again (VHDX, as Hyper-V does); otherwise a
   * trim there does nothing (VHD; NBD allows either).
   */
  bool trim_hides_parent;

  struct vhd_disk *parent;      /* differencing: the opened parent, or NULL */
  char parent_found_via[64];    /* e.g. "W2ru locator" */

  /* Runtime state of block layouts (io.c, map.c).
   *
   * Block table entries are published (by the driver) with an atomic
   * store once their block is in the file and read with atomic loads, so
   * that reads need no lock.  Everything else below is guarded by
   * meta_lock.  Writers hold flush_lock for reading while their I/O runs;
   * a flush that has metadata to write takes it for writing, so that no
   * bitmap bit reaches the disk before the data it covers was synced.
   */
  pthread_mutex_t meta_lock;
  pthread_rwlock_t flush_lock;
  /* Serialises read-modify-write of partly covered sectors: two requests
   * that do not overlap may still share a sector, and each must see the
   * other's bytes.
   */
  pthread_mutex_t rmw_lock;
  bool locks_initialized;
  uint8_t *block_state;         /* per block: BLOCK_* below */
  struct vhd_bitmap_cache bitmap_cache;
  /* The file's size as this process left it: the driver grows it as it
   * appends (so that only what the file held before needs zeroing).
   */
  uint64_t file_end;
  /* Bitmaps or table entries to write back at the next flush; read
   * atomically.
   */
  bool metadata_dirty;
  /* Flushes that write metadata run as rounds, one at a time
   * (round_running).  Under round_lock: rounds_started counts those
   * begun, round_ok is the number of the last one that succeeded.  The
   * round runs without round_lock, so that flushes that its end
   * satisfies see so at once (round_done) instead of queuing behind the
   * next round.
   */
  pthread_mutex_t round_lock;
  pthread_cond_t round_done;
  bool round_running;
  uint64_t flush_rounds_started;
  uint64_t flush_round_ok;
  /* A commit_table driver's round is between its snapshot and the end
   * of its commit (read atomically: vhd_flush).
   */
  bool round_in_flight;
  /* vhd_close's flush succeeded: every change is durable, and a driver
   * closing may mark the image clean (VHDX: an empty log).
   */
  bool closed_flushed;
  /* ops->before_first_write has run; read atomically. */
  bool first_write_done;
};

/* block_state values. */
enum {
  BLOCK_UNKNOWN = 0,            /* allocated, bitmap not looked at yet */
  BLOCK_FULL = 1,               /* every sector's bit is set */
  BLOCK_PARTIAL = 2,            /* the bits are in the bitmap cache or
                                 * in the file */
};

/* Where block's data starts in the file; 0 if it is not present (a
 * sparse disk reads zeros, a differencing one its parent); or
 * VHD_BLOCK_ZERO if it reads as zeros at this level without file space
 * (VHDX's ZERO, UNMAPPED and UNDEFINED states): not even a differencing
 * disk looks below it, and a write allocates it with every sector
 * present.  A present block's offset is always larger, since every
 * format's blocks lie past its headers.
 */
#define VHD_BLOCK_ZERO UINT64_C (1)

static inline uint64_t
vhd_block_offset (const struct vhd_disk *disk, uint32_t block)
{
  return disk->ops->block_offset (disk, block);
}

static inline bool
vhd_block_present (uint64_t data_offset)
{
  return data_offset > VHD_BLOCK_ZERO;
}

/* io.c: set up and tear down the runtime state (after the BAT is loaded);
 * the write lock against a second writer is taken here too.
 */
int vhd_io_init (struct vhd_disk *disk);
void vhd_io_fini (struct vhd_disk *disk);

/* io.c helpers shared with discard.c (and, zeroing, with drivers). */
int vhd_check_range (const struct vhd_disk *disk, uint64_t count,
                     uint64_t offset, const char *what);
/* Write len bytes of the image at offset as one batch (a driver's
 * metadata); what names them in the error.
 */
int vhd_write_exact (struct vhd_disk *disk, const void *buf, size_t len,
                     uint64_t offset, const char *what);
int vhd_zero_file_range (struct vhd_disk *disk, uint64_t offset,
                         uint64_t len, bool fast_only);
/* Before the first change of an open: the driver's hook, once. */
int vhd_before_first_write (struct vhd_disk *disk);
/* The block's data offset, allocating the block first if needed. */
int vhd_ensure_allocated (struct vhd_disk *disk, uint32_t block,
                          uint64_t *data_offset);
int vhd_set_bits (struct vhd_disk *disk, uint32_t block, uint64_t in_block,
                  uint64_t len);

/* Segments (struct vhd_segment: backend/backend.h), collected. */
struct vhd_segment_list {
  struct vhd_segment *segs;
  size_t n, capacity;
  struct vhd_segment inline_segs[16];
};

void vhd_segments_init (struct vhd_segment_list *l);
void vhd_segments_free (struct vhd_segment_list *l);
/* be == NULL: zero fill (reads only). */
int vhd_segments_add (struct vhd_segment_list *l, struct vhd_backend *be,
                      uint64_t file_offset, uint64_t length, uint8_t *buf);

/* map.c: the segments that read [offset, offset+count) of disk into buf,
 * across blocks and chain levels, coalesced.
 */
int vhd_map_read (struct vhd_disk *disk, uint64_t offset, uint64_t count,
                  uint8_t *buf, struct vhd_segment_list *out);
/* The block's bitmap state, loading the bitmap from the file the first
 * time (caller holds no lock).  Returns BLOCK_FULL or BLOCK_PARTIAL, or
 * -errno.
 */
int vhd_block_state (struct vhd_disk *disk, uint32_t block);

/* map.c: the sector bitmap cache; the _locked ones with meta_lock held.
 * The bits that get returns stay valid until meta_lock is released or the
 * cache is next changed (it reads them from the file when they are not
 * cached).  Adopt takes over bits (malloc'd, bitmap_size bytes) for a
 * block that has none cached, dirty or clean; only a dirty one can fail.
 * Mark dirty pins a block's cached bits until the next write_dirty, which
 * writes every dirty bitmap with fn and unpins those written.
 */
void vhd_bitmap_cache_fini (struct vhd_disk *disk);
int vhd_bitmap_get_locked (struct vhd_disk *disk, uint32_t block,
                           uint8_t **bits);
int vhd_bitmap_adopt_locked (struct vhd_disk *disk, uint32_t block,
                             uint8_t *bits, bool dirty);
void vhd_mark_bitmap_dirty (struct vhd_disk *disk, uint32_t block);
typedef int (*vhd_bitmap_write_fn) (struct vhd_disk *disk, uint32_t block,
                                    const uint8_t *bits);
int vhd_bitmap_write_dirty_locked (struct vhd_disk *disk,
                                   vhd_bitmap_write_fn fn);

#endif /* VHDKIT_IMAGE_H */

/* vhdkit: the in-memory state of an open image (internal). */

#ifndef VHDKIT_IMAGE_H
#define VHDKIT_IMAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "formats/vhd/format.h"
#include "formats/vhd/scan.h"

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
  char *path;                   /* as given to vhd_open (a callback
                                 * backend's name) */
  struct vhd_backend *be;       /* the storage; the disk owns it */
  bool readonly;
  bool force_share;             /* read-only, and takes no lock (io.c) */
  uint64_t file_size;           /* at open */
  uint64_t max_metadata_bytes;  /* the cap load_bat checks against */

  struct vhd_footer footer;     /* the copy that was chosen */
  uint8_t footer_raw[VHD_FOOTER_SIZE]; /* its bytes, as the writer left them */
  uint64_t footer_offset;       /* where the trailing footer is (or goes) */
  bool footer_from_copy;        /* trailing footer missing or bad */

  /* Dynamic and differencing disks only. */
  struct vhd_dyn_header header;
  uint64_t header_offset;
  uint32_t *bat;                /* max_table_entries entries, host order */
  uint32_t bitmap_size;         /* bytes of sector bitmap before each block */
  uint32_t allocated_blocks;

  struct vhd_disk *parent;      /* differencing: the opened parent, or NULL */
  char parent_found_via[64];    /* e.g. "W2ru locator" */

  /* Runtime state of dynamic and differencing disks (io.c, map.c).
   *
   * bat[] entries are published with an atomic store once their block is
   * in the file and read with atomic loads, so that reads need no lock.
   * Everything else below is guarded by meta_lock.  Writers hold
   * flush_lock for reading while their I/O runs; a flush that has metadata
   * to write takes it for writing, so that no bitmap bit reaches the disk
   * before the data it covers was synced.
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
  uint64_t end;                 /* where the next block goes (the footer) */
  uint64_t file_end;            /* the file's size as this process left it */
  uint8_t encoded_footer[VHD_FOOTER_SIZE];
  /* Metadata written back at the next flush (and the bitmap cache's
   * dirty entries).
   */
  uint8_t *bat_sector_dirty;    /* per 512-byte sector of the BAT */
  uint32_t *dirty_bat_sectors;
  size_t n_dirty_bat_sectors;
  bool metadata_dirty;          /* any of the above; read atomically */
};

/* block_state values. */
enum {
  BLOCK_UNKNOWN = 0,            /* allocated, bitmap not looked at yet */
  BLOCK_FULL = 1,               /* every sector's bit is set */
  BLOCK_PARTIAL = 2,            /* the bits are in the bitmap cache or
                                 * in the file */
};

/* Where block data starts in the file, for an allocated BAT entry. */
static inline uint64_t
vhd_block_data_offset (const struct vhd_disk *disk, uint32_t sector)
{
  return (uint64_t) sector * VHD_SECTOR_SIZE + disk->bitmap_size;
}

static inline uint32_t
vhd_bat_load (const struct vhd_disk *disk, uint32_t block)
{
  return __atomic_load_n (&disk->bat[block], __ATOMIC_ACQUIRE);
}

/* io.c: set up and tear down the runtime state (after the BAT is loaded);
 * the write lock against a second writer is taken here too.
 */
int vhd_io_init (struct vhd_disk *disk);
void vhd_io_fini (struct vhd_disk *disk);

/* io.c helpers shared with discard.c and check.c. */
int vhd_check_range (const struct vhd_disk *disk, uint64_t count,
                     uint64_t offset, const char *what);
int vhd_zero_file_range (struct vhd_disk *disk, uint64_t offset,
                         uint64_t len, bool fast_only);
int vhd_ensure_allocated (struct vhd_disk *disk, uint32_t block,
                          uint32_t *sector);
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

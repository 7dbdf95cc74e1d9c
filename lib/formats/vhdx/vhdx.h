/* vhdkit: the VHDX driver's state of an open image (internal).
 *
 * The core sees a VHDX disk as blocks (fixed VHDX too: its blocks are
 * all FULLY_PRESENT, but they are still located through the BAT).  The
 * BAT lives in memory as the 64-bit entries of the file, published with
 * atomic stores so that reads need no lock; changed entries reach the
 * file only at a flush, through the log (write.c).
 */

#ifndef VHDKIT_VHDX_H
#define VHDKIT_VHDX_H

#include <stdbool.h>
#include <stdint.h>

#include "core/image.h"
#include "formats/vhdx/format.h"
#include "formats/vhdx/log.h"

/* Bytes of the BAT that one log data sector carries: 512 entries. */
#define VHDX_BAT_PAGE_SIZE      4096u
#define VHDX_BAT_PAGE_ENTRIES   (VHDX_BAT_PAGE_SIZE / VHDX_BAT_ENTRY_SIZE)

struct vhdx_sb_page {
  uint64_t file_offset;         /* 4 KiB aligned, inside an SB block */
  uint8_t *data;                /* VHDX_BAT_PAGE_SIZE bytes */
  bool dirty;                   /* changed since its last log entry */
};

/* A page as the current log sequence last wrote it (commit.c). */
struct vhdx_logged_page {
  uint64_t file_offset;
  uint8_t *data;                /* VHDX_BAT_PAGE_SIZE bytes */
};

/* What write_table snapshots for commit_table to write (commit.c). */
struct vhdx_round {
  struct vhdx_log_update *updates;
  size_t n;                     /* pages in the round's entries: sector
                                 * bitmap pages first, then BAT pages */
  size_t n_sb;
  uint8_t *copies;              /* the BAT pages that updates point at */
  uint32_t *bat_pages;          /* dirty again if the commit fails */
  size_t n_bat_pages;
  uint64_t flushed_end;         /* FlushedFileOffset, LastFileOffset */
  uint64_t last_end;
};

struct vhdx_image {
  bool identified;              /* the file type identifier is VHDX's */
  struct vhdx_file_id file_id;
  struct vhdx_header header;    /* the current one */
  int header_slot;              /* 1 or 2: where the current one is */
  struct vhdx_regions regions;
  struct vhdx_metadata_table mtable;
  struct vhdx_metadata md;
  enum vhdx_disk_kind kind;
  struct vhdx_bat_geometry geom;
  unsigned chunk_shift;         /* log2 (chunk ratio): both are powers of 2 */

  /* Every BAT entry, as the file's little-endian words decoded. */
  uint64_t *bat;
  uint32_t allocated_blocks;    /* payload blocks with file space */

  /* A differencing disk's parent locator (NULL paths otherwise). */
  struct vhdx_parent_link link;

  /* Sector bitmap pages newer than the file (differencing disks;
   * meta_lock held): 4 KiB pages of sector bitmap blocks, patched by
   * write_bitmap (dirty: not yet in a log entry), logged with the BAT
   * pages, and written in place only at a checkpoint (commit.c), which
   * drops the clean ones.  read_bitmap looks here first.
   */
  struct vhdx_sb_page *sb_pages;
  size_t n_sb_pages, cap_sb_pages;
  size_t *sb_slots;             /* their index by file offset (write.c) */
  size_t n_sb_slots;

  /* The log as this open found it: an active sequence that was replayed
   * (into the file, or into an overlay for a read-only open).
   */
  bool log_replayed;
  struct vhdx_log_sequence replayed;

  /* Writing (meta_lock held for all of these). */
  bool header_updated;          /* new FileWriteGuid, DataWriteGuid and
                                 * LogGuid written: before the first
                                 * change of an open */
  uint8_t log_guid_raw[16];     /* the LogGuid entries carry */
  struct vhdx_log_writer log;   /* where the next entry goes, and the
                                 * sequence it continues */
  uint64_t end;                 /* where the next block goes: 1 MiB aligned,
                                 * past every structure and block */
  uint8_t *page_dirty;          /* per BAT page: changed since the flush */
  uint32_t *dirty_pages;
  size_t n_dirty_pages;
  /* At most this many pages in one log entry (0: as many as the log
   * has room for); VHDKIT_VHDX_LOG_ENTRY_PAGES, read at open, for the crash
   * tests (commit.c).
   */
  unsigned max_entry_pages;
  unsigned max_sequence_pages;  /* the same for a sequence's sectors */

  /* A flush's two steps (commit.c), the flushing round's own (the core
   * runs one round at a time): the snapshot; every page that the current
   * log sequence carries, as its last entry has it, sorted by offset
   * (what a checkpoint writes in place); and whether the next round
   * must checkpoint first (after a failed one).
   */
  struct vhdx_round round;
  struct vhdx_logged_page *logged;
  size_t n_logged, cap_logged;
  bool checkpoint_first;
};

static inline struct vhdx_image *
vhdx_image_of (const struct vhd_disk *disk)
{
  return disk->fmt;
}

/* The BAT entry of payload block `block`, read atomically. */
static inline uint64_t
vhdx_payload_entry (const struct vhdx_image *img, uint32_t block)
{
  uint64_t index = (uint64_t) block + (block >> img->chunk_shift);

  return __atomic_load_n (&img->bat[index], __ATOMIC_ACQUIRE);
}

/* A byte of a sector bitmap between the file's order (bit 0 is the
 * first sector, [MS-VHDX] 2.5.2) and the core's (bit 7 first, VHD's
 * order: core/bitmap.h).
 */
static inline uint8_t
vhdx_bitmap_byte_swap (uint8_t b)
{
  b = (uint8_t) ((b & 0xf0) >> 4 | (b & 0x0f) << 4);
  b = (uint8_t) ((b & 0xcc) >> 2 | (b & 0x33) << 2);
  return (uint8_t) ((b & 0xaa) >> 1 | (b & 0x55) << 1);
}

static inline uint64_t
vhdx_entry_offset (uint64_t entry)
{
  return (entry >> 20) << 20;
}

/* scan.c: read and validate an image into img (the disk's generic fields
 * too), replaying its log first: into the file when the disk is writable,
 * else into an overlay that takes the place of disk->be.
 */
int vhdx_scan_image (struct vhd_disk *disk, struct vhdx_image *img);
/* Write header h into the slot that is not current, with the next
 * sequence number, and flush: it becomes the current header.
 */
int vhdx_write_header (struct vhd_disk *disk, struct vhdx_image *img,
                       const struct vhdx_header *h);

/* write.c: the writing half of the driver ops. */
int vhdx_before_first_write (struct vhd_disk *disk);
int vhdx_allocate_block (struct vhd_disk *disk, uint32_t block,
                         const uint8_t *bits);
int vhdx_release_block (struct vhd_disk *disk, uint32_t block, bool zero);
void vhdx_mark_bat_page_dirty (struct vhdx_image *img, uint64_t index);
int vhdx_write_bitmap (struct vhd_disk *disk, uint32_t block,
                       const uint8_t *bits);
/* The pending sector bitmap page at file_offset, or NULL. */
struct vhdx_sb_page *vhdx_pending_sb_page (struct vhdx_image *img,
                                           uint64_t file_offset);
void vhdx_free_sb_pages (struct vhdx_image *img);
int vhdx_drop_clean_sb_pages (struct vhd_disk *disk, struct vhdx_image *img);
/* At close of a writable image whose log was used: an empty log. */
void vhdx_close_log (struct vhd_disk *disk);

/* commit.c: a flush's pages through the log (struct vhd_format_ops). */
int vhdx_write_table (struct vhd_disk *disk);
int vhdx_commit_table (struct vhd_disk *disk);
/* Write every logged page in place and sync (close, before the header
 * marks the log empty; no lock taken).
 */
int vhdx_checkpoint_in_place (struct vhd_disk *disk);
/* The round's buffers and the pages it remembers (close). */
void vhdx_free_round (struct vhdx_image *img);
/* VHDKIT_VHDX_LOG_ENTRY_PAGES or VHDKIT_VHDX_LOG_SEQUENCE_PAGES as a
 * page limit, or 0 (no limit).
 */
unsigned vhdx_log_pages_from_env (const char *name);

/* parent.c: a differencing disk's parent (struct vhd_format_ops). */
void vhdx_parent_candidates (const struct vhd_disk *child,
                             const struct vhd_parent_sink *sink);
bool vhdx_is_parent (const struct vhd_disk *child,
                     const struct vhd_disk *parent, bool ignore_id,
                     char *why, size_t why_size);
void vhdx_describe_parent (const struct vhd_disk *child, char *out,
                           size_t out_size);

/* check.c: the driver's part of vhd_check. */
int vhdx_check (struct vhd_check_walk *w);
int vhdx_repair (struct vhd_check_walk *w);
void vhdx_check_done (struct vhd_check_walk *w);

/* create.c: a new image in fd (struct vhd_format_ops create). */
int vhdx_create_image (int fd, const char *path, const char *child_dir,
                       const struct vhd_guid *unique_id, uint64_t size,
                       uint32_t block_size, uint32_t sector_size,
                       uint32_t physical_sector_size, uint32_t flags,
                       const struct vhd_create_parent *parent);

/* create-check.c: vhd_create_virtual_disk's rules for a VHDX. */
int vhdx_check_create_geometry (const struct vhd_create_request *req);

#endif /* VHDKIT_VHDX_H */

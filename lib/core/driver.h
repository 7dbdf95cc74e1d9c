/* vhdkit: the format driver seam (internal).
 *
 * The core (lib/core/) holds what every format shares: the open image and
 * its chain, per-block state, mapping a range to segments, the read,
 * write, trim and zero paths, the lock order, allocation and the flush
 * order.  A driver (lib/formats/NAME/) holds what one format does: its
 * codec, the scan of an image at open, where a new block goes, how sector
 * bitmaps and block table entries become durable at a flush, its parent
 * locators and identity, and its create layouts.
 *
 * The core sees an image as its generic fields in struct vhd_disk
 * (virtual size, block size, layout, sector bitmap size) and these
 * operations; one indirect call per block at most on the data path.
 */

#ifndef VHDKIT_DRIVER_H
#define VHDKIT_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhdkit.h"

struct vhd_disk;
struct vhd_image_info;

/* How the virtual disk lies in the file. */
enum vhd_layout {
  VHD_LAYOUT_FLAT,              /* every byte at its own offset (fixed) */
  VHD_LAYOUT_SPARSE,            /* blocks, absent ones read as zeros */
  VHD_LAYOUT_DIFFERENCING,      /* blocks, absent sectors from the parent */
};

/* Where a differencing image's parent may be, offered by the driver in
 * the order to try them.  via names what offered it ("W2ru locator"): a
 * string that lives as long as the program (a literal).
 */
struct vhd_parent_sink {
  void *opaque;
  /* A path: as it is when absolute, else in the child's folder. */
  void (*path) (void *opaque, const char *path, const char *via);
  /* A path's file name, looked for in the child's folder and in each
   * allowed one.
   */
  void (*file_name) (void *opaque, const char *path, const char *via);
  /* Something that could not be read (a locator): named in the error
   * when no parent is found.
   */
  void (*unreadable) (void *opaque, const char *via, const char *why);
};

/* A check of one image (vhd_check): the core opens, locks, counts and
 * caps the report, checks the parent chain and decides whether to
 * repair; the driver walks the image and repairs it.
 */
#define VHD_CHECK_CLASSES 8
struct vhd_check_walk {
  /* Set by the core. */
  const char *path;
  struct vhd_backend *be;
  uint64_t file_size;
  /* Report a finding (a VHD_CHECK_* kind).  cls is 0 for a problem that
   * is reported every time; a problem that can repeat once per table
   * entry has a class in 1..VHD_CHECK_CLASSES-1 and a name for the class
   * ("pairs of BAT entries whose blocks overlap"), and only the first of
   * each class are shown.
   */
  void (*problem) (struct vhd_check_walk *w, int kind, unsigned cls,
                   const char *cls_name, const char *msg);
  void *opaque;                 /* the core's */

  /* Set by the driver's check. */
  bool identified;              /* false: the image could not be told
                                 * apart enough to check anything else */
  uint32_t disk_type;           /* for vhd_check_result */
  bool has_parent;              /* its parent chain is worth opening */
  uint32_t allocated_blocks;
  uint64_t leaked_bytes;
  void *state;                  /* the driver's, until check_done */
};

/* A cheap test of what a file claims to be: len bytes at offset (from
 * the file's end when from_end).  Only what vhd_probe_format reads: a
 * signature says what a file claims to be, not that it is sound.
 */
#define VHD_SIGNATURE_MAX 16
struct vhd_signature {
  const char *bytes;            /* NULL ends a list */
  size_t len;                   /* 1..VHD_SIGNATURE_MAX */
  uint64_t offset;
  bool from_end;
};

/* vhd_create_virtual_disk's parameters that a format has rules for,
 * unpacked from either parameters version.
 */
struct vhd_create_request {
  uint32_t version;             /* VHD_CREATE_VERSION_1 or _2 */
  uint64_t maximum_size;        /* 0: the parent's or the source's */
  uint32_t block_size;          /* 0: the format's default */
  uint32_t sector_size;         /* 0: the format's default */
  uint32_t physical_sector_size; /* always 0 with version 1 */
  uint32_t flags;               /* VHD_CREATE_FLAG_* */
  const char *parent_path;      /* NULL when there is none */
  const char *source_path;      /* NULL when there is none */
};

/* What a new differencing disk's driver needs of its parent, found by
 * the core so that a driver never reaches into another disk's storage.
 */
struct vhd_create_parent {
  const struct vhd_disk *disk;  /* opened read-only with its chain; a
                                 * driver reads its state only when
                                 * ops is the driver itself */
  const struct vhd_format_ops *ops;     /* its format */
  const char *path;             /* as the caller named it (messages) */
  const char *real_path;        /* resolved: no links, no "..", absolute */
  uint64_t size;                /* its virtual size in bytes */
  int64_t mtime;                /* its file's modification time (Unix) */
};

struct vhd_format_ops {
  const char *name;             /* "VHD" */

  /* How the format is known: vhd_probe_format's answer (VHD_FORMAT_*),
   * the storage type device id that creates it (VHD_STORAGE_DEVICE_*),
   * the file name extension that picks it when the storage type is
   * VHD_STORAGE_DEVICE_UNKNOWN (compared without case, as Windows does),
   * and the signatures any one of which, tried in order, says a file
   * claims to be of this format.
   */
  int probe_format;
  uint32_t device_id;
  const char *extension;        /* ".vhd" */
  const struct vhd_signature *signatures;

  /* Every operation below is NULL for a format that is recognised but
   * has no driver yet (vhd_format_has_driver).
   */

  /* Walk and check an image whose backend, path, size and cap the core
   * has set; fill the generic fields and the driver's state.  Returns 0
   * or -errno with the message of the first problem.
   */
  int (*open) (struct vhd_disk *disk);
  /* Release the driver's state (also after a failed open). */
  void (*close) (struct vhd_disk *disk);

  /* Before the first write of a read-write open: put back what a crash
   * left half done (a lost trailing footer), durably.
   */
  int (*prepare_write) (struct vhd_disk *disk);

  /* Optional (NULL: nothing to do): called once, with meta_lock held,
   * before the first change an open makes to the disk (a write, trim or
   * zero), e.g. to record in the image that it is being changed.
   */
  int (*before_first_write) (struct vhd_disk *disk);

  /* Where block's data starts in the file, or 0 when the block is not
   * present.  Reads need no lock: entries are published atomically.
   */
  uint64_t (*block_offset) (const struct vhd_disk *disk, uint32_t block);
  /* A present block's sector bitmap: read it (bitmap_size bytes), and
   * write it back (at a flush, data already synced).
   */
  int (*read_bitmap) (struct vhd_disk *disk, uint32_t block, uint8_t *bits);
  int (*write_bitmap) (struct vhd_disk *disk, uint32_t block,
                       const uint8_t *bits);
  /* Place a new block (meta_lock held): lay it out past the image with
   * bits as its bitmap, keep the image valid for a reader if the process
   * dies now, publish it, and remember its table entry for the flush.
   */
  int (*allocate_block) (struct vhd_disk *disk, uint32_t block,
                         const uint8_t *bits);
  /* Optional (NULL: a trim or zero keeps every block's file space and
   * punches or zeroes its range).  A trim (zero false) or a zero that
   * allows holes (zero true) covers the whole of block, present with
   * every sector (no sector bitmap cached), of a disk without a parent
   * (meta_lock held).  Record that block now reads as zeros at this
   * level without file space, as the format says it (VHDX: UNMAPPED for
   * a trim, ZERO for a zero): publish the entry, so that block_offset
   * answers VHD_BLOCK_ZERO from now on, and remember it for the next
   * write_table, as allocate_block does.  Returns 1 if released, 0 if
   * the format keeps the block as it is (a fixed disk stays fully
   * allocated), or -errno.  The core then punches the old space, which
   * the table in the file still points at until the next flush: a
   * driver must never place a new block there (blocks go at the end).
   */
  int (*release_block) (struct vhd_disk *disk, uint32_t block, bool zero);
  /* Write back the block table entries changed since the last flush
   * (meta_lock held, data and bitmaps written and synced before).  With
   * commit_table set, this only takes a snapshot of what to write
   * (meta_lock and flush_lock held: no write in flight, nothing synced
   * yet), and commit_table then makes it durable, syncing the data too,
   * with writes running again.  Returns 0, -errno, or 1: done, but the
   * next flush must run a round even with nothing new (metadata_dirty
   * stays set).
   */
  int (*write_table) (struct vhd_disk *disk);
  /* Optional: the second step of a round that write_table began (only
   * the flush that took the snapshot calls it; one round runs at a time).
   * On failure, the driver keeps what it had to write for the next
   * round and sets metadata_dirty again.
   */
  int (*commit_table) (struct vhd_disk *disk);

  /* Differencing images: offer each place the parent may be; whether an
   * opened image is that parent (if not, why not); and the parent as the
   * child records it ("NAME (unique id UUID)"), for the error when none
   * is found.
   */
  void (*parent_candidates) (const struct vhd_disk *child,
                             const struct vhd_parent_sink *sink);
  bool (*is_parent) (const struct vhd_disk *child,
                     const struct vhd_disk *parent, bool ignore_id,
                     char *why, size_t why_size);
  void (*describe_parent) (const struct vhd_disk *child, char *out,
                           size_t out_size);

  /* vhd_check: walk the image and report every problem; repair what can
   * be repaired without losing data (called only when nothing is
   * corrupt; returns 0 when it repaired all it reported as recoverable
   * or leaked); free what check kept for repair.
   */
  int (*check) (struct vhd_check_walk *w);
  int (*repair) (struct vhd_check_walk *w);
  void (*check_done) (struct vhd_check_walk *w);

  /* vhd_get_image_info: what the format knows (the core has cleared
   * info and filled the generic fields).
   */
  void (*image_info) (const struct vhd_disk *disk,
                      struct vhd_image_info *info);

  /* Write a whole new image into fd (an empty file): fixed when flags
   * has VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION, differencing when
   * parent is set (its size from the parent), else sparse.  child_dir:
   * the new disk's folder, resolved, for a relative parent locator.
   * block_size, sector_size and physical_sector_size 0 mean the
   * format's defaults (the geometry check has admitted the rest).
   */
  int (*create) (int fd, const char *path, const char *child_dir,
                 const struct vhd_guid *unique_id, uint64_t size,
                 uint32_t block_size, uint32_t sector_size,
                 uint32_t physical_sector_size, uint32_t flags,
                 const struct vhd_create_parent *parent);

  /* vhd_create_virtual_disk's rules of the format, each failure -EINVAL
   * with a message "vhd_create_virtual_disk: FIELD ..." naming the
   * parameter and its value.  The core calls check_create_geometry
   * (block size, logical and physical sector sizes) right after the
   * storage type, in its fixed order of checks.
   */
  int (*check_create_geometry) (const struct vhd_create_request *req);

  /* The sizes a new disk may have, which the core checks (maximum_size,
   * and a source's size when the disk takes it): from min_disk_size to
   * max_disk_size bytes (max_disk_size_text says it in messages:
   * "2040 GiB"), in whole logical sectors.
   */
  uint64_t min_disk_size;
  uint64_t max_disk_size;
  const char *max_disk_size_text;

  /* Is the file (fd, size bytes) an image of this format?  1 yes, 0 no,
   * 2 it carries the format's signature but is damaged (why says what it
   * carries and why it is refused: "a VHD footer cookie ... but ..."),
   * or -errno with a message.
   */
  int (*recognise) (int fd, const char *path, uint64_t size, char *why,
                    size_t why_size);
};

extern const struct vhd_format_ops vhd_format_vhd;
extern const struct vhd_format_ops vhd_format_vhdx;

/* Whether a format has a driver, or is only recognised by its signature
 * (then every operation is NULL).
 */
static inline bool
vhd_format_has_driver (const struct vhd_format_ops *ops)
{
  return ops->open != NULL;
}

/* formats/formats.c, the registry.  The driver for an image (its
 * backend).
 */
struct vhd_backend;
const struct vhd_format_ops *vhd_format_for_image (struct vhd_backend *be);
/* The format of a storage type's device id (VHD_STORAGE_DEVICE_*), or
 * NULL when no format has that id (VHD_STORAGE_DEVICE_UNKNOWN included).
 * It may have no driver.
 */
const struct vhd_format_ops *vhd_format_for_device (uint32_t device_id);
/* The format of a new disk at path of a storage type's device id: as
 * vhd_format_for_device, except that VHD_STORAGE_DEVICE_UNKNOWN picks by
 * path's extension as Windows does (a format's extension, without case;
 * any other is VHD).
 */
const struct vhd_format_ops *vhd_format_for_storage (uint32_t device_id,
                                                     const char *path);
/* The i-th format the library knows, in the order vhd_probe_format
 * tries their signatures; NULL past the last.
 */
const struct vhd_format_ops *vhd_format_at (size_t i);

#endif /* VHDKIT_DRIVER_H */

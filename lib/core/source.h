/* vhdkit: the source disk of a create from a source (internal; see
 * source.c).
 */

#ifndef VHDKIT_SOURCE_H
#define VHDKIT_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "vhdkit.h"

enum vhd_source_kind {
  VHD_SOURCE_RAW_FILE,          /* a regular file holding a raw disk */
  VHD_SOURCE_BLOCK_DEVICE,      /* a raw block device */
  VHD_SOURCE_VHD,               /* any VHD that vhd_open opens, chain included */
};

struct vhd_source {
  char *path;
  enum vhd_source_kind kind;
  struct vhd_backend *be;       /* raw file or device; NULL for a VHD */
  vhd_disk *disk;               /* a VHD (read-only, with its chain), else NULL */
  uint64_t size;                /* the disk's size in bytes */
  bool seek_data;               /* raw file: SEEK_DATA/SEEK_HOLE work */
  uint8_t *uncached;            /* raw: a bit per VHD_SOURCE_CACHE_GRANULE,
                                 * set where the page cache held nothing
                                 * at open (NULL: drop nothing) */
};

/* The granule in which vhd_source_release tells what the copy brought
 * into the page cache from what the user had there.
 */
#define VHD_SOURCE_CACHE_GRANULE (UINT64_C (4) << 20)

/* Open path read-only as a source.  device_id: the version 2
 * source_virtual_storage_type's device id, VHD_STORAGE_DEVICE_UNKNOWN
 * (detect: a file or device with a valid VHD footer is a VHD, anything
 * else is a raw disk) or VHD_STORAGE_DEVICE_VHD (it must be a VHD).
 * prevent_writes: hold a lock, until vhd_source_close, that makes every
 * writer (vhdkit or qemu) fail to open the source, and fail with -EBUSY
 * if one has it open for writing now.  parent_dirs: as vhd_open_options'
 * (NULL for none), for a differencing source's parents.  Returns 0 or
 * -errno with a message naming the source.
 */
int vhd_source_open (const char *path, uint32_t device_id,
                     bool prevent_writes, const char *const *parent_dirs,
                     struct vhd_source **out);
void vhd_source_close (struct vhd_source *src);

/* "raw file", "block device", "fixed VHD", ... for messages. */
const char *vhd_source_describe (const struct vhd_source *src);

/* Calls fn for consecutive ranges covering [offset, offset+count), with
 * VHD_EXTENT_HOLE|VHD_EXTENT_ZERO for ranges known to read as zeros
 * without being read (holes of a raw file, unallocated blocks of a VHD)
 * and 0 for everything else.  A block device reports all data.
 */
int vhd_source_extents (struct vhd_source *src, uint64_t offset,
                        uint64_t count, vhd_extent_fn fn, void *opaque);

/* Append to l the segments that read [offset, offset+count) of the source
 * into buf (run them with vhd_io_run).
 */
int vhd_source_map (struct vhd_source *src, uint64_t offset, uint64_t count,
                    uint8_t *buf, struct vhd_segment_list *l);

/* The copy has read [offset, offset+count) of a raw source into its own
 * buffers: drop from the page cache what the copy brought in there, in
 * the granules that held nothing cached when the source was opened, and
 * leave the rest (a cache the user had) alone.
 */
void vhd_source_release (struct vhd_source *src, uint64_t offset,
                         uint64_t count);

#endif /* VHDKIT_SOURCE_H */

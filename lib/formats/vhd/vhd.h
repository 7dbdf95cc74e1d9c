/* vhdkit: the VHD driver's state of an open image and what its files
 * share (internal).  Only lib/formats/vhd/ includes this.
 */

#ifndef VHDKIT_VHD_H
#define VHDKIT_VHD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/image.h"
#include "formats/vhd/format.h"

struct vhd_image {
  struct vhd_footer footer;     /* the copy that was chosen */
  uint8_t footer_raw[VHD_FOOTER_SIZE]; /* its bytes, as the writer left them */
  uint64_t footer_offset;       /* where the trailing footer is (or goes) */
  bool footer_from_copy;        /* trailing footer missing or bad */

  /* Dynamic and differencing disks only. */
  struct vhd_dyn_header header;
  uint64_t header_offset;
  uint32_t *bat;                /* max_table_entries entries, host order;
                                 * published atomically (core/image.h) */
  uint32_t allocated_blocks;

  /* Guarded by the core's meta_lock once open. */
  uint64_t end;                 /* where the next block goes (the footer) */
  /* Footers are rewritten byte for byte as the image's writer made them
   * (reserved bytes included), so that both copies stay identical.
   */
  uint8_t encoded_footer[VHD_FOOTER_SIZE];
  uint8_t *bat_sector_dirty;    /* per 512-byte sector of the BAT */
  uint32_t *dirty_bat_sectors;
  size_t n_dirty_bat_sectors;
};

static inline struct vhd_image *
vhd_image_of (const struct vhd_disk *disk)
{
  return disk->fmt;
}

/* locator.c: decode locator i of disk into a UTF-8 path (Windows
 * separators kept).  Returns 0, or -errno with a message naming the
 * locator's field.
 */
int vhd_locator_read_path (const struct vhd_disk *disk, unsigned i,
                           char *out, size_t out_size);

/* locator.c: the parent's places and identity (struct vhd_format_ops). */
void vhd_vhd_parent_candidates (const struct vhd_disk *child,
                                const struct vhd_parent_sink *sink);
bool vhd_vhd_is_parent (const struct vhd_disk *child,
                        const struct vhd_disk *parent, bool ignore_id,
                        char *why, size_t why_size);
void vhd_vhd_describe_parent (const struct vhd_disk *child, char *out,
                              size_t out_size);

/* check.c: vhd_check's walk and repairs (struct vhd_format_ops). */
int vhd_vhd_check (struct vhd_check_walk *w);
int vhd_vhd_repair (struct vhd_check_walk *w);
void vhd_vhd_check_done (struct vhd_check_walk *w);

/* recognise.c: is the file (fd, size bytes) a VHD? (struct vhd_format_ops) */
int vhd_vhd_recognise (int fd, const char *path, uint64_t size, char *why,
                       size_t why_size);

/* recognise.c: the cookie that vhd_probe_format looks for. */
extern const struct vhd_signature vhd_vhd_signatures[];

/* create-check.c: vhd_create_virtual_disk's rules for a VHD
 * (struct vhd_format_ops).
 */
int vhd_vhd_check_create_geometry (const struct vhd_create_request *req);

/* info.c: the VHD part of vhd_get_image_info. */
void vhd_vhd_image_info (const struct vhd_disk *disk,
                         struct vhd_image_info *info);

#endif /* VHDKIT_VHD_H */

/* vhdkit: the in-memory state of an open image (internal). */

#ifndef VHDKIT_IMAGE_H
#define VHDKIT_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "format.h"

struct vhd_disk {
  char *path;                   /* as given to vhd_open */
  int fd;
  bool readonly;
  uint64_t file_size;           /* at open */

  struct vhd_footer footer;     /* the copy that was chosen */
  uint64_t footer_offset;       /* where the trailing footer is (or goes) */
  bool footer_from_copy;        /* trailing footer missing or bad */

  /* Dynamic and differencing disks only. */
  struct vhd_dyn_header header;
  uint64_t header_offset;
  uint32_t *bat;                /* max_table_entries entries, host order */
  uint32_t bitmap_size;         /* bytes of sector bitmap before each block */
  uint32_t allocated_blocks;

  struct vhd_disk *parent;      /* differencing: the opened parent, or NULL */
};

#endif /* VHDKIT_IMAGE_H */

/* vhdkit: writing a new image's layout (internal; see layout.c). */

#ifndef VHDKIT_LAYOUT_H
#define VHDKIT_LAYOUT_H

#include <stdint.h>

#include "core/driver.h"
#include "vhdkit.h"

/* Write a whole new image into fd (an empty file): fixed when flags has
 * VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION, differencing when parent is
 * set (its size from the parent), else dynamic.  child_dir: the new
 * disk's folder, resolved, for the relative parent locator.  block_size
 * 0 means the default.  Returns 0 or -errno with a message naming path.
 */
int vhd_layout_write_image (int fd, const char *path, const char *child_dir,
                            const struct vhd_guid *unique_id, uint64_t size,
                            uint32_t block_size, uint32_t sector_size,
                            uint32_t physical_sector_size, uint32_t flags,
                            const struct vhd_create_parent *parent);

#endif /* VHDKIT_LAYOUT_H */

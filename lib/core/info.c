/* vhdkit: what an open image says about itself (vhd_get_image_info):
 * what the core knows, then what the format's driver knows.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image.h"

int
vhd_get_image_info (const vhd_disk *disk, struct vhd_image_info *info)
{
  if (disk == NULL || info == NULL)
    return vhd_error (EINVAL, "vhd_get_image_info: NULL argument");
  memset (info, 0, sizeof *info);
  info->path = disk->path;
  info->current_size = disk->size;
  info->file_size = disk->file_size;
  info->readonly = disk->readonly;
  if (disk->layout == VHD_LAYOUT_DIFFERENCING)
    snprintf (info->parent_found_via, sizeof info->parent_found_via, "%s",
              disk->parent_found_via);
  disk->ops->image_info (disk, info);
  return 0;
}

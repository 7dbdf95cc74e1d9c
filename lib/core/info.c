/* vhdkit: what an open image says about itself (vhd_get_image_info):
 * what the core knows, then what the format's driver knows.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/abi.h"
#include "image.h"

/* vhd_get_image_info into this library's whole struct. */
static void
fill_info (const vhd_disk *disk, struct vhd_image_info *info)
{
  memset (info, 0, sizeof *info);
  info->path = disk->path;
  info->current_size = disk->size;
  info->file_size = disk->file_size;
  info->readonly = disk->readonly;
  info->format = (uint32_t) disk->ops->probe_format;
  /* The driver says otherwise when the format stores a physical size. */
  info->logical_sector_size = disk->sector_size;
  info->physical_sector_size = disk->sector_size;
  if (disk->layout == VHD_LAYOUT_DIFFERENCING)
    snprintf (info->parent_found_via, sizeof info->parent_found_via, "%s",
              disk->parent_found_via);
  disk->ops->image_info (disk, info);
}

int
vhd_get_image_info_sized (const vhd_disk *disk, struct vhd_image_info *info,
                          size_t info_size)
{
  struct vhd_image_info whole;

  if (disk == NULL || info == NULL)
    return vhd_error (EINVAL, "vhd_get_image_info: NULL argument");
  if (info_size < VHD_IMAGE_INFO_SIZE_0_1)
    return vhd_error (EINVAL, "vhd_get_image_info: the info struct is %zu"
                      " bytes, less than the %zu of the first"
                      " vhd_image_info", info_size,
                      (size_t) VHD_IMAGE_INFO_SIZE_0_1);
  fill_info (disk, &whole);
  vhd_export_result (info, info_size, &whole, sizeof whole);
  return 0;
}

int
(vhd_get_image_info) (const vhd_disk *disk, struct vhd_image_info *info)
{
  return vhd_get_image_info_sized (disk, info, VHD_IMAGE_INFO_SIZE_0_1);
}

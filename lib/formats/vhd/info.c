/* vhdkit: what an open VHD image says about itself: the VHD part of
 * vhd_get_image_info (core/info.c fills the rest).
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "formats/vhd/format.h"
#include "formats/vhd/vhd.h"

static void
platform_code_string (uint32_t code, char out[5])
{
  for (int i = 0; i < 4; i++) {
    uint8_t c = (uint8_t) (code >> (24 - 8 * i));
    out[i] = c >= 0x20 && c < 0x7f ? (char) c : '?';
  }
  out[4] = '\0';
}

static void
fill_locators (const struct vhd_disk *disk, struct vhd_image_info *info)
{
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    const struct vhd_parent_locator *loc =
      &vhd_image_of (disk)->header.locators[i];
    struct vhd_locator_info *out = &info->locators[info->n_locators];

    if (loc->platform_code == VHD_PLATFORM_NONE)
      continue;
    platform_code_string (loc->platform_code, out->platform_code);
    /* An undecodable locator is still listed; its path stays empty. */
    if (vhd_locator_read_path (disk, i, out->path, sizeof out->path) < 0)
      out->path[0] = '\0';
    info->n_locators++;
  }
}

void
vhd_vhd_image_info (const vhd_disk *disk, struct vhd_image_info *info)
{
  const struct vhd_image *img = vhd_image_of (disk);
  const struct vhd_footer *f = &img->footer;

  info->disk_type = f->disk_type;
  info->original_size = f->original_size;
  info->cylinders = f->cylinders;
  info->heads = f->heads;
  info->sectors_per_track = f->sectors_per_track;
  memcpy (info->creator_application, f->creator_app, 4);
  info->creator_version = f->creator_version;
  info->creator_host_os = f->creator_host_os;
  info->timestamp = f->timestamp;
  info->unique_id = f->unique_id;
  info->saved_state = f->saved_state != 0;
  info->footer_from_copy = img->footer_from_copy;
  info->logical_sector_size = 512;
  info->physical_sector_size = 512;

  if (f->disk_type == VHD_TYPE_FIXED)
    return;
  info->block_size = img->header.block_size;
  info->max_table_entries = img->header.max_table_entries;
  info->allocated_blocks = img->allocated_blocks;
  info->bat_offset = img->header.table_offset;

  if (f->disk_type != VHD_TYPE_DIFFERENCING)
    return;
  info->parent_unique_id = img->header.parent_unique_id;
  info->parent_timestamp = img->header.parent_timestamp;
  if (vhd_utf16_to_utf8 (img->header.parent_unicode_name,
                         sizeof img->header.parent_unicode_name, true,
                         info->parent_name, sizeof info->parent_name) < 0)
    info->parent_name[0] = '\0';
  fill_locators (disk, info);
}

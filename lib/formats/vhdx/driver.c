/* vhdkit: the VHDX driver (struct vhd_format_ops): open, the block
 * states the core reads, and the hooks of the write path (write.c).
 *
 * Payload block states map onto the core's three answers: FULLY_PRESENT
 * (and PARTIALLY_PRESENT) blocks are at their file offset; NOT_PRESENT
 * ones are absent (zeros in a dynamic disk); UNDEFINED, ZERO and
 * UNMAPPED ones read as zeros at this level (VHD_BLOCK_ZERO), which is
 * one of the behaviours [MS-VHDX] 2.5.1.1 allows for each and the one
 * every reader we compare with (qemu, libvhdi) has.  A trim or a zero of
 * a whole block of a dynamic disk puts it in UNMAPPED or ZERO
 * (write.c, vhdx_release_block).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/file.h"
#include "core/driver.h"
#include "formats/vhdx/vhdx.h"

static void vhdx_close_image (struct vhd_disk *disk);

static int
vhdx_open_image (struct vhd_disk *disk)
{
  struct vhdx_image *img = calloc (1, sizeof *img);
  uint64_t pages;
  int r;

  if (img == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  disk->fmt = img;
  r = vhdx_scan_image (disk, img);
  if (r < 0)
    return r;

  /* Past everything the scan found inside the file. */
  img->end = (disk->file_size + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
  pages = (img->geom.total_entries + VHDX_BAT_PAGE_ENTRIES - 1)
          / VHDX_BAT_PAGE_ENTRIES;
  img->max_entry_pages =
    vhdx_log_pages_from_env ("VHDKIT_VHDX_LOG_ENTRY_PAGES");
  img->max_sequence_pages =
    vhdx_log_pages_from_env ("VHDKIT_VHDX_LOG_SEQUENCE_PAGES");
  img->page_dirty = calloc (pages, 1);
  img->dirty_pages = calloc (pages, sizeof *img->dirty_pages);
  if (img->page_dirty == NULL || img->dirty_pages == NULL)
    return vhd_error (ENOMEM, "%s: out of memory for the BAT", disk->path);
  return 0;
}

static void
vhdx_close_image (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);

  if (img == NULL)
    return;
  if (img->bat && img->header_updated)
    vhdx_close_log (disk);
  vhdx_parent_link_free (&img->link);
  vhdx_free_sb_pages (img);
  vhdx_free_round (img);
  free (img->bat);
  free (img->page_dirty);
  free (img->dirty_pages);
  free (img);
  disk->fmt = NULL;
}

/* The log, if it held anything, was replayed at open. */
static int
vhdx_prepare_write (struct vhd_disk *disk)
{
  (void) disk;
  return 0;
}

static uint64_t
vhdx_block_offset_op (const struct vhd_disk *disk, uint32_t block)
{
  uint64_t e = vhdx_payload_entry (vhdx_image_of (disk), block);

  switch (e & 7) {
  case VHDX_PAYLOAD_FULLY_PRESENT:
  case VHDX_PAYLOAD_PARTIALLY_PRESENT:
    return vhdx_entry_offset (e);
  case VHDX_PAYLOAD_NOT_PRESENT:
    return 0;
  default:                      /* UNDEFINED, ZERO, UNMAPPED */
    return VHD_BLOCK_ZERO;
  }
}

/* A present block's sector bitmap: every sector for a FULLY_PRESENT
 * block (and in any disk without a parent); a PARTIALLY_PRESENT block's
 * bits are its share of its chunk's sector bitmap block: the chunk's
 * blocks in order, block_size / logical sector bits each, bit 0 of byte
 * 0 first ([MS-VHDX] 2.5.2), each byte's bits the other way round from
 * the core's.
 */
static int
vhdx_read_bitmap (struct vhd_disk *disk, uint32_t block, uint8_t *bits)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  uint64_t sb, offset;
  uint32_t done = 0;

  if ((vhdx_payload_entry (img, block) & 7) != VHDX_PAYLOAD_PARTIALLY_PRESENT) {
    memset (bits, 0xff, disk->bitmap_size);
    return 0;
  }
  sb = __atomic_load_n (&img->bat[vhdx_bat_bitmap_index (&img->geom,
                                                         block >> img->chunk_shift)],
                        __ATOMIC_ACQUIRE);
  if ((sb & 7) != VHDX_SB_PRESENT)
    return vhd_error (EIO, "%s: payload block %" PRIu32 " is PARTIALLY_PRESENT"
                      " but its chunk has no sector bitmap block", disk->path,
                      block);
  offset = vhdx_entry_offset (sb)
           + (uint64_t) (block & (img->geom.chunk_ratio - 1)) * disk->bitmap_size;
  /* Page by page: a page that a failed flush left pending is newer than
   * the file.
   */
  while (done < disk->bitmap_size) {
    uint64_t at = offset + done;
    uint64_t page = at & ~(uint64_t) (VHDX_BAT_PAGE_SIZE - 1);
    uint32_t n = VHDX_BAT_PAGE_SIZE - (uint32_t) (at - page);
    struct vhdx_sb_page *pending = vhdx_pending_sb_page (img, page);
    int r;

    if (n > disk->bitmap_size - done)
      n = disk->bitmap_size - done;
    if (pending)
      memcpy (bits + done, pending->data + (at - page), n);
    else {
      r = vhd_backend_pread_exact (disk->be, bits + done, n, at,
                                   "sector bitmap block");
      if (r < 0)
        return r;
    }
    done += n;
  }
  for (uint32_t i = 0; i < disk->bitmap_size; i++)
    bits[i] = vhdx_bitmap_byte_swap (bits[i]);
  return 0;
}

_Static_assert (sizeof ((struct vhd_vhdx_info *) 0)->creator
                == VHDX_CREATOR_UTF8_SIZE,
                "vhd_vhdx_info.creator holds any creator");

/* The VHDX part of vhd_get_image_info: headers, log, regions and how
 * many payload blocks are in each BAT state.
 */
static void
vhdx_info_of (const struct vhd_disk *disk, const struct vhdx_image *img,
              struct vhd_vhdx_info *x)
{
  x->header_sequence = img->header.sequence_number;
  x->current_header = img->header_slot;
  x->file_write_guid = img->header.file_write_guid;
  x->data_write_guid = img->header.data_write_guid;
  x->log_guid = img->header.log_guid;
  x->log_offset = img->header.log_offset;
  x->log_length = img->header.log_length;
  x->log_replayed = img->log_replayed;
  x->log_entries_replayed = img->log_replayed ? img->replayed.entry_count : 0;
  x->bat_offset = img->regions.bat.offset;
  x->bat_length = img->regions.bat.length;
  x->metadata_offset = img->regions.metadata.offset;
  x->metadata_length = img->regions.metadata.length;
  x->chunk_ratio = (uint32_t) img->geom.chunk_ratio;
  for (uint32_t b = 0; b < disk->n_blocks; b++)
    x->block_states[vhdx_payload_entry (img, b) & 7]++;
  /* A dynamic disk's BAT ends before its last chunk's bitmap entry,
   * unless that chunk is whole.
   */
  for (uint64_t c = 0; c < img->geom.bitmap_blocks; c++) {
    uint64_t i = vhdx_bat_bitmap_index (&img->geom, c);

    if (i < img->geom.total_entries && (img->bat[i] & 7) == VHDX_SB_PRESENT)
      x->sector_bitmap_blocks++;
  }
  snprintf (x->creator, sizeof x->creator, "%s", img->file_id.creator);
  if (img->kind == VHDX_KIND_DIFFERENCING) {
    const struct vhdx_parent_link *l = &img->link;

    x->parent_linkage = l->parent_linkage;
    x->has_parent_linkage2 = l->has_parent_linkage2;
    x->parent_linkage2 = l->parent_linkage2;
    snprintf (x->relative_path, sizeof x->relative_path, "%s",
              l->relative_path ? l->relative_path : "");
    snprintf (x->volume_path, sizeof x->volume_path, "%s",
              l->volume_path ? l->volume_path : "");
    snprintf (x->absolute_win32_path, sizeof x->absolute_win32_path, "%s",
              l->absolute_win32_path ? l->absolute_win32_path : "");
  }
}

static void
vhdx_image_info (const struct vhd_disk *disk, struct vhd_image_info *info)
{
  const struct vhdx_image *img = vhdx_image_of (disk);

  info->disk_type = img->kind == VHDX_KIND_FIXED ? VHD_TYPE_FIXED
                    : img->kind == VHDX_KIND_DYNAMIC ? VHD_TYPE_DYNAMIC
                    : VHD_TYPE_DIFFERENCING;
  info->current_size = disk->size;
  info->original_size = disk->size;
  info->unique_id = img->md.virtual_disk_id;
  info->block_size = disk->block_size;
  info->max_table_entries = disk->n_blocks;
  info->allocated_blocks = img->allocated_blocks;
  info->bat_offset = img->regions.bat.offset;
  info->logical_sector_size = img->md.logical_sector_size;
  info->physical_sector_size = img->md.physical_sector_size;
  if (img->kind == VHDX_KIND_DIFFERENCING) {
    /* The generic parent fields, as a VHD child fills them. */
    info->parent_unique_id = img->link.parent_linkage;
    vhdx_describe_parent (disk, info->parent_name, sizeof info->parent_name);
  }
  vhdx_info_of (disk, img, &info->vhdx);
}

static int
vhdx_recognise (int fd, const char *path, uint64_t size, char *why,
                size_t why_size)
{
  char sig[8];
  int r;

  (void) why;
  (void) why_size;
  if (size < sizeof sig)
    return 0;
  r = vhd_file_pread_exact (fd, sig, sizeof sig, 0, path,
                            "the file type identifier");
  if (r < 0)
    return r;
  return memcmp (sig, "vhdxfile", sizeof sig) == 0;
}

/* [MS-VHDX] 2.2.1: the file type identifier opens the file. */
static const struct vhd_signature vhdx_signatures[] = {
  { "vhdxfile", 8, 0, false },
  { NULL, 0, 0, false },
};

const struct vhd_format_ops vhd_format_vhdx = {
  .name = "VHDX",
  .probe_format = VHD_FORMAT_VHDX,
  .device_id = VHD_STORAGE_DEVICE_VHDX,
  .extension = ".vhdx",
  .signatures = vhdx_signatures,
  .open = vhdx_open_image,
  .close = vhdx_close_image,
  .prepare_write = vhdx_prepare_write,
  .before_first_write = vhdx_before_first_write,
  .block_offset = vhdx_block_offset_op,
  .read_bitmap = vhdx_read_bitmap,
  .write_bitmap = vhdx_write_bitmap,
  .allocate_block = vhdx_allocate_block,
  .release_block = vhdx_release_block,
  .write_table = vhdx_write_table,
  .commit_table = vhdx_commit_table,
  .parent_candidates = vhdx_parent_candidates,
  .is_parent = vhdx_is_parent,
  .describe_parent = vhdx_describe_parent,
  .check = vhdx_check,
  .repair = vhdx_repair,
  .check_done = vhdx_check_done,
  .image_info = vhdx_image_info,
  .create = vhdx_create_image,
  .check_create_geometry = vhdx_check_create_geometry,
  .min_disk_size = UINT64_C (3) << 20,
  .max_disk_size = VHDX_MAX_VIRTUAL_SIZE,
  .max_disk_size_text = "64 TiB",
  .recognise = vhdx_recognise,
};

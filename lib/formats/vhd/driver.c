/* vhdkit: the VHD driver (struct vhd_format_ops): the scan at open, the
 * block table, where a new block goes, and how bitmaps and BAT entries
 * become durable.
 *
 * The order that keeps a crash harmless is the core's (core/io.c); this
 * file keeps its VHD half: a new block is laid out past the end of the
 * image (its space zeroed, its bitmap written), the footer rewritten
 * after it, and only then is it published in the in-memory BAT; BAT
 * sectors reach the file only at a flush.  A crash leaves at worst a
 * block's worth of leaked space at the end, or a trailing footer
 * overwritten by a new block, which the scanner recovers from the copy
 * at offset 0.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/driver.h"
#include "core/image.h"
#include "formats/vhd/format.h"
#include "formats/vhd/layout.h"
#include "formats/vhd/scan.h"
#include "formats/vhd/vhd.h"

#define DATA_ALIGNMENT 4096u

/* Open stops at the first problem it refuses; the scanner has set its
 * message.  What open goes on regardless of (a lost trailing footer, put
 * back before the first write) is check's to report.
 */
static int
stop_at_refusal (void *opaque, const struct vhd_scan_report *rep)
{
  (void) opaque;
  return rep->err;
}

static int
vhd_open_image (struct vhd_disk *disk)
{
  struct vhd_image *img = calloc (1, sizeof *img);
  struct vhd_scan s = {
    .path = disk->path, .be = disk->be, .file_size = disk->file_size,
    .max_metadata_bytes = disk->max_metadata_bytes,
    .report = stop_at_refusal,
  };
  uint64_t bat_sectors;
  int r;

  if (img == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  disk->fmt = img;
  r = vhd_scan_image (&s);
  if (r < 0) {
    free (s.bat);
    return r;
  }
  img->footer = s.footer;
  memcpy (img->footer_raw, s.footer_raw, sizeof img->footer_raw);
  img->footer_offset = s.footer_offset;
  img->footer_from_copy = s.footer_from_copy;
  img->header = s.header;
  img->header_offset = s.header_offset;
  img->bat = s.bat;
  img->allocated_blocks = s.allocated_blocks;
  img->end = s.footer_offset;
  memcpy (img->encoded_footer, s.footer_raw, VHD_FOOTER_SIZE);

  disk->size = s.footer.current_size;
  disk->sector_size = VHD_SECTOR_SIZE;
  disk->sparse_bitmaps = true;
  switch (s.footer.disk_type) {
  case VHD_TYPE_FIXED:
    disk->layout = VHD_LAYOUT_FLAT;
    return 0;
  case VHD_TYPE_DYNAMIC:
    disk->layout = VHD_LAYOUT_SPARSE;
    break;
  default:
    disk->layout = VHD_LAYOUT_DIFFERENCING;
    break;
  }
  disk->block_size = s.header.block_size;
  disk->n_blocks = s.header.max_table_entries;
  disk->bitmap_size = s.bitmap_size;

  /* Counted in vhd_metadata_bytes, which the scan checked against the
   * cap.
   */
  bat_sectors = vhd_bat_size (disk->n_blocks) / VHD_SECTOR_SIZE;
  img->bat_sector_dirty = calloc (bat_sectors, 1);
  img->dirty_bat_sectors = calloc (bat_sectors,
                                   sizeof *img->dirty_bat_sectors);
  if (!img->bat_sector_dirty || !img->dirty_bat_sectors)
    return vhd_error (ENOMEM, "%s: out of memory for %" PRIu32 " blocks",
                      disk->path, disk->n_blocks);
  return 0;
}

static void
vhd_close_image (struct vhd_disk *disk)
{
  struct vhd_image *img = vhd_image_of (disk);

  if (img == NULL)
    return;
  free (img->bat);
  free (img->bat_sector_dirty);
  free (img->dirty_bat_sectors);
  free (img);
  disk->fmt = NULL;
}

/* Where the metadata structures end (footer copy, dynamic header, BAT
 * with its padding, parent locators' data): nothing appended goes before
 * it.  The scan refuses an image with a structure past the trailing
 * footer, so this holds already; it is checked again where the writes
 * happen.
 */
static int
check_clear_of_metadata (struct vhd_disk *disk, uint64_t offset,
                         const char *what)
{
  const struct vhd_image *img = vhd_image_of (disk);
  uint64_t end;

  if (disk->layout == VHD_LAYOUT_FLAT)
    return 0;
  end = vhd_metadata_end (&img->header, img->header_offset, UINT64_MAX);
  if (offset < end)
    return vhd_error (EIO, "%s: refusing to write the %s at offset %" PRIu64
                      ", before the end of the image's metadata at %"
                      PRIu64, disk->path, what, offset, end);
  return 0;
}

/* Opening for writing an image whose trailing footer a crash lost: put
 * it back (the scan chose where), durably, before anything else is
 * written.
 */
static int
vhd_prepare_write (struct vhd_disk *disk)
{
  struct vhd_image *img = vhd_image_of (disk);
  int r;

  if (!img->footer_from_copy)
    return 0;
  r = check_clear_of_metadata (disk, img->footer_offset,
                               "restored trailing footer");
  if (r < 0)
    return r;
  if (!disk->be->can_grow &&
      img->footer_offset + VHD_FOOTER_SIZE > disk->file_size)
    return vhd_error (ENOSPC, "%s: the trailing footer is missing and the"
                      " storage cannot grow to restore it (open the image"
                      " read-only)", disk->path);
  r = vhd_backend_pwrite_exact (disk->be, img->encoded_footer,
                                VHD_FOOTER_SIZE, img->footer_offset,
                                "restored trailing footer");
  if (r < 0)
    return r;
  r = vhd_backend_flush (disk->be, false);
  if (r < 0)
    return r;
  if (img->footer_offset + VHD_FOOTER_SIZE > disk->file_end)
    disk->file_end = img->footer_offset + VHD_FOOTER_SIZE;
  img->footer_from_copy = false;
  return 0;
}

static inline uint32_t
bat_load (const struct vhd_image *img, uint32_t block)
{
  return __atomic_load_n (&img->bat[block], __ATOMIC_ACQUIRE);
}

static uint64_t
vhd_block_offset_op (const struct vhd_disk *disk, uint32_t block)
{
  uint32_t sector = bat_load (vhd_image_of (disk), block);

  if (sector == VHD_BAT_UNUSED)
    return 0;
  return (uint64_t) sector * VHD_SECTOR_SIZE + disk->bitmap_size;
}

static int
vhd_read_bitmap (struct vhd_disk *disk, uint32_t block, uint8_t *bits)
{
  return vhd_backend_pread_exact (disk->be, bits, disk->bitmap_size,
                                  (uint64_t) bat_load (vhd_image_of (disk),
                                                       block)
                                  * VHD_SECTOR_SIZE, "sector bitmap");
}

static int
vhd_write_bitmap (struct vhd_disk *disk, uint32_t block, const uint8_t *bits)
{
  return vhd_write_exact (disk, bits, disk->bitmap_size,
                          (uint64_t) vhd_image_of (disk)->bat[block]
                          * VHD_SECTOR_SIZE, "sector bitmap");
}

static void
mark_bat_dirty (struct vhd_image *img, uint32_t block)
{
  uint32_t sector = (uint32_t) ((uint64_t) block * 4 / VHD_SECTOR_SIZE);

  if (!img->bat_sector_dirty[sector]) {
    img->bat_sector_dirty[sector] = 1;
    img->dirty_bat_sectors[img->n_dirty_bat_sectors++] = sector;
  }
}

/* A new block goes at the end, its data aligned for O_DIRECT-friendly
 * I/O, with the footer moved past it before the BAT says it is there.
 */
static int
vhd_allocate_block (struct vhd_disk *disk, uint32_t block,
                    const uint8_t *bits)
{
  struct vhd_image *img = vhd_image_of (disk);
  uint64_t block_bytes = (uint64_t) disk->bitmap_size + disk->block_size;
  uint64_t data = (img->end + disk->bitmap_size + DATA_ALIGNMENT - 1)
                  & ~(uint64_t) (DATA_ALIGNMENT - 1);
  uint64_t start = data - disk->bitmap_size;
  int r = 0;

  if (start / VHD_SECTOR_SIZE >= VHD_BAT_UNUSED)
    return vhd_error (ENOSPC, "%s: the image file cannot grow past 2 TiB of"
                      " sectors that a BAT entry can address", disk->path);
  /* A new block goes past every structure (and every block: end only
   * grows from the trailing footer, past which no block lies).
   */
  r = check_clear_of_metadata (disk, start, "new block");
  if (r < 0)
    return r;

  /* Only what the file already holds needs zeroing: past its end, the
   * file reads as zeros once the footer below extends it.
   */
  if (start < disk->file_end)
    r = vhd_zero_file_range (disk, start,
                             (start + block_bytes < disk->file_end
                              ? start + block_bytes : disk->file_end) - start,
                             false);
  if (r == 0)
    r = vhd_write_exact (disk, bits, disk->bitmap_size, start,
                         "sector bitmap");
  if (r == 0)
    r = vhd_write_exact (disk, img->encoded_footer, VHD_FOOTER_SIZE,
                         start + block_bytes, "footer");
  if (r < 0)
    return r;
  img->end = start + block_bytes;
  img->footer_offset = img->end;
  if (img->end + VHD_FOOTER_SIZE > disk->file_end)
    disk->file_end = img->end + VHD_FOOTER_SIZE;

  __atomic_store_n (&img->bat[block], (uint32_t) (start / VHD_SECTOR_SIZE),
                    __ATOMIC_RELEASE);
  img->allocated_blocks++;
  mark_bat_dirty (img, block);
  return 0;
}

/* Write back the BAT sectors that allocations changed, whole sectors
 * (the BAT's last one padded with unused entries).
 */
static int
vhd_write_table (struct vhd_disk *disk)
{
  struct vhd_image *img = vhd_image_of (disk);
  uint8_t sector_buf[VHD_SECTOR_SIZE];
  int r = 0;

  for (size_t i = 0; i < img->n_dirty_bat_sectors && r == 0; i++) {
    uint32_t sector = img->dirty_bat_sectors[i];
    uint32_t first = sector * (VHD_SECTOR_SIZE / 4);

    memset (sector_buf, 0xff, sizeof sector_buf);
    for (uint32_t k = 0; k < VHD_SECTOR_SIZE / 4; k++)
      if (first + k < img->header.max_table_entries)
        vhd_put_be32 (sector_buf + 4 * k, img->bat[first + k]);
    r = vhd_write_exact (disk, sector_buf, sizeof sector_buf,
                         img->header.table_offset
                         + (uint64_t) sector * VHD_SECTOR_SIZE, "BAT");
    if (r == 0)
      img->bat_sector_dirty[sector] = 0;
  }
  if (r == 0)
    img->n_dirty_bat_sectors = 0;
  return r;
}

const struct vhd_format_ops vhd_format_vhd = {
  .name = "VHD",
  .probe_format = VHD_FORMAT_VHD,
  .device_id = VHD_STORAGE_DEVICE_VHD,
  .extension = ".vhd",
  .signatures = vhd_vhd_signatures,
  .open = vhd_open_image,
  .close = vhd_close_image,
  .prepare_write = vhd_prepare_write,
  .block_offset = vhd_block_offset_op,
  .read_bitmap = vhd_read_bitmap,
  .write_bitmap = vhd_write_bitmap,
  .allocate_block = vhd_allocate_block,
  .write_table = vhd_write_table,
  .parent_candidates = vhd_vhd_parent_candidates,
  .is_parent = vhd_vhd_is_parent,
  .describe_parent = vhd_vhd_describe_parent,
  .check = vhd_vhd_check,
  .repair = vhd_vhd_repair,
  .check_done = vhd_vhd_check_done,
  .image_info = vhd_vhd_image_info,
  .create = vhd_layout_write_image,
  .check_create_geometry = vhd_vhd_check_create_geometry,
  .min_disk_size = VHD_MIN_DISK_SIZE,
  .max_disk_size = VHD_MAX_DISK_SIZE,
  .max_disk_size_text = "2040 GiB",
  .recognise = vhd_vhd_recognise,
};

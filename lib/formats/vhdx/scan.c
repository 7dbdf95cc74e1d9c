/* vhdkit: reading a VHDX image at open: the header section, the log
 * (replayed before anything it may cover is read), the region table, the
 * metadata and the BAT, every field validated before use.
 *
 * A log with an active sequence is replayed as Windows does on open
 * ([MS-VHDX] 2.3.3): for a writable open into the file, under the writer's
 * lock, made durable, and the header then says the log is empty; for a
 * read-only open into an overlay backend (backend/overlay.c) that takes
 * the file's place, so that every reader sees the replayed image and the
 * file is never written.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/cleanup.h"
#include "core/guid.h"
#include "formats/vhdx/vhdx.h"

static int
read_at (struct vhd_disk *disk, void *buf, size_t len, uint64_t offset,
         const char *what)
{
  if (offset > disk->file_size || len > disk->file_size - offset)
    return vhd_error (EINVAL, "%s: the %s (%zu bytes at offset %" PRIu64
                      ") lies past the end of the file (%" PRIu64
                      " bytes)", disk->path, what, len, offset,
                      disk->file_size);
  return vhd_backend_pread_exact (disk->be, buf, len, offset, what);
}

/* ---- The log ---- */

static int
log_read (void *opaque, void *buf, size_t len, uint64_t offset)
{
  struct vhd_disk *disk = opaque;

  return vhd_backend_pread_exact (disk->be, buf, len, offset, "log");
}

static int
replay_write_file (void *opaque, const void *buf, size_t len,
                   uint64_t offset)
{
  struct vhd_disk *disk = opaque;

  return vhd_backend_pwrite_exact (disk->be, buf, len, offset,
                                   "log replay");
}

static int
replay_zero_file (void *opaque, uint64_t offset, uint64_t len)
{
  struct vhd_disk *disk = opaque;

  return vhd_zero_file_range (disk, offset, len, false);
}

static int
replay_write_overlay (void *opaque, const void *buf, size_t len,
                      uint64_t offset)
{
  struct vhd_disk *disk = opaque;

  return vhd_backend_overlay_write (disk->be, buf, len, offset);
}

static int
replay_zero_overlay (void *opaque, uint64_t offset, uint64_t len)
{
  struct vhd_disk *disk = opaque;

  return vhd_backend_overlay_zero (disk->be, offset, len);
}

int
vhdx_write_header (struct vhd_disk *disk, struct vhdx_image *img,
                   const struct vhdx_header *h)
{
  uint8_t buf[VHDX_HEADER_SIZE];
  struct vhdx_header next = *h;
  int slot = img->header_slot == 1 ? 2 : 1;
  int r;

  next.sequence_number = img->header.sequence_number + 1;
  vhdx_header_encode (&next, buf);
  r = vhd_backend_pwrite_exact (disk->be, buf, sizeof buf,
                                slot == 1 ? VHDX_HEADER1_OFFSET
                                          : VHDX_HEADER2_OFFSET,
                                slot == 1 ? "header 1" : "header 2");
  if (r == 0)
    r = vhd_backend_flush (disk->be, false);
  if (r < 0)
    return r;
  img->header = next;
  img->header_slot = slot;
  return 0;
}

/* Find the log's active sequence and replay it (see the top). */
static int
replay_log (struct vhd_disk *disk, struct vhdx_image *img)
{
  struct vhdx_log_params p = {
    .path = disk->path,
    .log_offset = img->header.log_offset,
    .log_length = img->header.log_length,
    .file_size = disk->file_size,
  };
  struct vhdx_log_sequence seq;
  int r;

  if (vhd_guid_is_zero (&img->header.log_guid))
    return 0;                   /* the log is empty */
  vhdx_guid_encode (&img->header.log_guid, p.log_guid);
  r = vhdx_log_find_active (&p, log_read, disk, &seq);
  if (r < 0 || seq.entry_count == 0)
    return r;

  if (disk->readonly) {
    struct vhd_backend *ov;
    r = vhd_backend_overlay_new (disk->be, &ov);
    if (r < 0)
      return r;
    disk->be = ov;
    r = vhdx_log_replay (&p, log_read, disk, &seq, replay_write_overlay,
                         replay_zero_overlay, disk);
    if (r == 0)
      r = vhd_backend_overlay_extend (disk->be, seq.last_file_offset);
  }
  else {
    struct vhdx_header h = img->header;
    /* Nobody else may write while the file changes under the replay. */
    r = vhd_backend_lock (disk->be, true);
    if (r == 0)
      r = vhdx_log_replay (&p, log_read, disk, &seq, replay_write_file,
                           replay_zero_file, disk);
    if (r == 0 && seq.last_file_offset > disk->file_size) {
      if (!disk->be->can_grow)
        return vhd_error (ENOSPC, "%s: replaying the log needs the file to"
                          " grow to %" PRIu64 " bytes, and its storage"
                          " cannot grow (open the image read-only)",
                          disk->path, seq.last_file_offset);
      r = vhd_backend_truncate (disk->be, seq.last_file_offset);
    }
    if (r == 0)
      r = vhd_backend_flush (disk->be, true);
    /* Replayed and durable: the log is empty from now on, and the file
     * has changed since its FileWriteGuid was set ([MS-VHDX] 2.2.2).
     */
    memset (&h.log_guid, 0, sizeof h.log_guid);
    if (r == 0)
      r = vhd_guid_generate (&h.file_write_guid);
    if (r == 0)
      r = vhdx_write_header (disk, img, &h);
  }
  if (r < 0)
    return r;
  img->log_replayed = true;
  img->replayed = seq;
  return vhd_backend_get_size (disk->be, &disk->file_size);
}

/* ---- The structures ---- */

static int
read_header_section (struct vhd_disk *disk, struct vhdx_image *img)
{
  CLEANUP_FREE uint8_t *buf = NULL;
  int r;

  if (disk->file_size < VHDX_HEADER_AREA_SIZE)
    return vhd_error (EINVAL, "%s: file of %" PRIu64 " bytes is too short"
                      " for a VHDX image (its header section alone is 1"
                      " MiB)", disk->path, disk->file_size);
  /* The file identifier and the two headers, 64 KiB each; the region
   * tables after them are read on their own.
   */
  buf = malloc (VHDX_REGION_TABLE1_OFFSET);
  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = read_at (disk, buf, VHDX_REGION_TABLE1_OFFSET, 0, "header section");
  if (r < 0)
    return r;
  r = vhdx_file_id_decode (buf, disk->path, &img->file_id);
  if (r < 0)
    return r;
  img->identified = true;
  return vhdx_pick_header (buf + VHDX_HEADER1_OFFSET,
                           buf + VHDX_HEADER2_OFFSET, disk->path,
                           &img->header, &img->header_slot);
}

/* Region table 1, or its copy when table 1 is damaged. */
static int
read_regions (struct vhd_disk *disk, struct vhdx_image *img)
{
  CLEANUP_FREE uint8_t *buf = malloc (VHDX_REGION_TABLE_SIZE);
  char first[512];
  int r;

  if (buf == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = read_at (disk, buf, VHDX_REGION_TABLE_SIZE, VHDX_REGION_TABLE1_OFFSET,
               "region table 1");
  if (r < 0)
    return r;
  if (vhdx_region_table_decode (buf, disk->path, 1, &img->regions) == 0)
    return 0;
  snprintf (first, sizeof first, "%s", vhd_last_error ());
  r = read_at (disk, buf, VHDX_REGION_TABLE_SIZE, VHDX_REGION_TABLE2_OFFSET,
               "region table 2");
  if (r == 0 &&
      vhdx_region_table_decode (buf, disk->path, 2, &img->regions) == 0)
    return 0;
  return vhd_error (EINVAL, "%s; and the copy: %s", first,
                    vhd_last_error ());
}

static int
read_metadata (struct vhd_disk *disk, struct vhdx_image *img)
{
  uint32_t len = img->regions.metadata.length;
  CLEANUP_FREE uint8_t *region = NULL;
  int r;

  if (len > disk->max_metadata_bytes)
    return vhd_error (EINVAL, "%s: region table: metadata region of %"
                      PRIu32 " bytes is over the %" PRIu64 "-byte limit on"
                      " metadata", disk->path, len, disk->max_metadata_bytes);
  region = malloc (len);
  if (region == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = read_at (disk, region, len, img->regions.metadata.offset,
               "metadata region");
  if (r == 0)
    r = vhdx_metadata_table_decode (region, len, disk->path, &img->mtable);
  if (r == 0)
    r = vhdx_metadata_decode (region, len, &img->mtable, disk->path,
                              &img->md);
  if (r < 0)
    return r;
  img->kind = vhdx_disk_kind (&img->md);
  /* The table decode kept the item inside the region. */
  if (img->kind == VHDX_KIND_DIFFERENCING)
    r = vhdx_parent_link_decode (region + img->mtable.parent_locator.offset,
                                 img->mtable.parent_locator.length,
                                 disk->path, &img->link);
  return r;
}

struct extent {
  uint64_t offset, length;
  const char *what;
  uint64_t index;               /* BAT index, for blocks */
};

static int
compare_extents (const void *a, const void *b)
{
  const struct extent *x = a, *y = b;

  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* No two blocks share file space, and no block overlaps the log, the
 * BAT or the metadata region (vhdx_layout_check has kept those apart
 * from each other and from the header section).
 */
static int
check_overlaps (struct vhd_disk *disk, struct vhdx_image *img)
{
  const struct vhdx_bat_geometry *g = &img->geom;
  CLEANUP_FREE struct extent *ex = NULL;
  size_t n = 0, cap = img->allocated_blocks + g->bitmap_blocks + 3;

  ex = malloc (cap * sizeof *ex);
  if (ex == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  if (img->header.log_length)
    ex[n++] = (struct extent) { img->header.log_offset,
                                img->header.log_length, "log", 0 };
  ex[n++] = (struct extent) { img->regions.bat.offset,
                              img->regions.bat.length, "BAT region", 0 };
  ex[n++] = (struct extent) { img->regions.metadata.offset,
                              img->regions.metadata.length,
                              "metadata region", 0 };
  for (uint64_t i = 0; i < g->total_entries; i++) {
    uint64_t e = img->bat[i];
    unsigned state = e & 7;
    bool bitmap = vhdx_bat_is_bitmap_index (g, i);

    if (bitmap ? state != VHDX_SB_PRESENT
               : state != VHDX_PAYLOAD_FULLY_PRESENT &&
                 state != VHDX_PAYLOAD_PARTIALLY_PRESENT)
      continue;
    if (n == cap)
      return vhd_error (EIO, "%s: BAT: more blocks than counted",
                        disk->path);
    ex[n++] = (struct extent) {
      vhdx_entry_offset (e),
      bitmap ? VHDX_SECTOR_BITMAP_SIZE : img->md.block_size,
      bitmap ? "sector bitmap block" : "payload block", i,
    };
  }
  qsort (ex, n, sizeof *ex, compare_extents);
  for (size_t i = 1; i < n; i++)
    if (ex[i - 1].offset + ex[i - 1].length > ex[i].offset)
      return vhd_error (EINVAL, "%s: BAT: the %s at offset %" PRIu64
                        " (entry %" PRIu64 ") overlaps the %s at offset %"
                        PRIu64 "%s", disk->path, ex[i].what, ex[i].offset,
                        ex[i].index, ex[i - 1].what, ex[i - 1].offset,
                        strstr (ex[i - 1].what, "block") != NULL
                        ? " (another block)" : "");
  return 0;
}

/* A PARTIALLY_PRESENT block's sectors are told apart by its chunk's
 * sector bitmap block ([MS-VHDX] 2.5.1.1): without one there is nothing
 * to read them by.
 */
static int
check_partial_blocks (struct vhd_disk *disk, struct vhdx_image *img)
{
  const struct vhdx_bat_geometry *g = &img->geom;

  for (uint64_t b = 0; b < g->payload_blocks; b++) {
    uint64_t chunk = b / g->chunk_ratio;

    if ((img->bat[vhdx_bat_payload_index (g, b)] & 7)
        == VHDX_PAYLOAD_PARTIALLY_PRESENT &&
        (img->bat[vhdx_bat_bitmap_index (g, chunk)] & 7) != VHDX_SB_PRESENT)
      return vhd_error (EINVAL, "%s: BAT entry %" PRIu64 " (payload block %"
                        PRIu64 "): PARTIALLY_PRESENT, but the sector bitmap"
                        " block of its chunk (BAT entry %" PRIu64 ") is not"
                        " present", disk->path,
                        vhdx_bat_payload_index (g, b), b,
                        vhdx_bat_bitmap_index (g, chunk));
  }
  return 0;
}

static int
read_bat (struct vhd_disk *disk, struct vhdx_image *img)
{
  const struct vhdx_bat_geometry *g = &img->geom;
  CLEANUP_FREE uint8_t *raw = NULL;
  uint64_t metadata = g->bat_bytes + img->regions.metadata.length
                      + g->total_entries * sizeof (struct extent);
  int r;

  if (metadata > disk->max_metadata_bytes)
    return vhd_error (EINVAL, "%s: a BAT of %" PRIu64 " entries needs more"
                      " memory than the %" PRIu64 "-byte limit on metadata",
                      disk->path, g->total_entries,
                      disk->max_metadata_bytes);
  raw = malloc (g->bat_bytes);
  img->bat = malloc (g->total_entries * sizeof *img->bat);
  if (raw == NULL || img->bat == NULL)
    return vhd_error (ENOMEM, "%s: out of memory for the BAT", disk->path);
  r = read_at (disk, raw, g->bat_bytes, img->regions.bat.offset, "BAT");
  if (r < 0)
    return r;
  for (uint64_t i = 0; i < g->total_entries; i++) {
    struct vhdx_bat_entry e;
    vhdx_bat_entry_decode (raw + i * VHDX_BAT_ENTRY_SIZE, &e);
    r = vhdx_bat_entry_check (&e, i, g, img->kind, img->md.block_size,
                              disk->file_size, disk->path);
    if (r < 0)
      return r;
    img->bat[i] = vhdx_get_le64 (raw + i * VHDX_BAT_ENTRY_SIZE);
    if (!vhdx_bat_is_bitmap_index (g, i) &&
        (e.state == VHDX_PAYLOAD_FULLY_PRESENT ||
         e.state == VHDX_PAYLOAD_PARTIALLY_PRESENT))
      img->allocated_blocks++;
  }
  r = check_partial_blocks (disk, img);
  if (r < 0)
    return r;
  return check_overlaps (disk, img);
}

static unsigned
log2_exact (uint64_t v)
{
  unsigned s = 0;

  while ((UINT64_C (1) << s) < v)
    s++;
  return s;
}

int
vhdx_scan_image (struct vhd_disk *disk, struct vhdx_image *img)
{
  int r = read_header_section (disk, img);

  if (r == 0)
    r = replay_log (disk, img);
  if (r == 0)
    r = read_regions (disk, img);
  if (r == 0)
    r = read_metadata (disk, img);
  if (r < 0)
    return r;
  r = vhdx_layout_check (&img->header, &img->regions, &img->md,
                         disk->file_size, disk->path, &img->geom);
  if (r < 0)
    return r;
  img->chunk_shift = log2_exact (img->geom.chunk_ratio);
  if ((UINT64_C (1) << img->chunk_shift) != img->geom.chunk_ratio ||
      img->geom.payload_blocks > UINT32_MAX)
    return vhd_error (EINVAL, "%s: metadata: chunk ratio %" PRIu64 " or %"
                      PRIu64 " blocks out of range", disk->path,
                      img->geom.chunk_ratio, img->geom.payload_blocks);
  r = read_bat (disk, img);
  if (r < 0)
    return r;

  disk->size = img->md.virtual_size;
  disk->sector_size = img->md.logical_sector_size;
  disk->layout = img->kind == VHDX_KIND_DIFFERENCING
                 ? VHD_LAYOUT_DIFFERENCING : VHD_LAYOUT_SPARSE;
  /* A trim in a child writes zeros (sectors present, bits set) rather
   * than leaving the parent's data, or the ZERO state, which libvhdi
   * (20210425) reads through to the parent: zeros in the child's own
   * sectors read the same to every reader.
   */
  disk->trim_hides_parent = img->kind == VHDX_KIND_DIFFERENCING;
  disk->block_size = img->md.block_size;
  disk->n_blocks = (uint32_t) img->geom.payload_blocks;
  disk->bitmap_size = img->md.block_size / img->md.logical_sector_size / 8;
  return 0;
}

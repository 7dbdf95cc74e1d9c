/* vhdkit: writing a VHDX image: the header update before the first
 * change, where a new block goes, a whole block released by a trim or a
 * zero, and the pages a flush must write (BAT pages and sector bitmap
 * pages).
 *
 * How the changed BAT and sector bitmap pages become durable through
 * the log at a flush is commit.c's concern.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/cleanup.h"
#include "core/guid.h"
#include "formats/vhdx/vhdx.h"

#define MiB VHDX_MiB

/* [MS-VHDX] 2.2.2: FileWriteGuid changes before the first change to the
 * file of an open, DataWriteGuid before the first change to what the
 * virtual disk reads (a child records its parent's, so a changed parent
 * is detected); and a new LogGuid makes every entry already in the log
 * stale.  Called once, with meta_lock held, before the first write.
 */
int
vhdx_before_first_write (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_header h = img->header;
  int r;

  if (img->header_updated)
    return 0;
  r = vhd_guid_generate (&h.file_write_guid);
  if (r == 0)
    r = vhd_guid_generate (&h.data_write_guid);
  if (r == 0)
    r = vhd_guid_generate (&h.log_guid);
  if (r == 0)
    r = vhdx_write_header (disk, img, &h);
  if (r < 0)
    return r;
  vhdx_guid_encode (&h.log_guid, img->log_guid_raw);
  /* Entries of the old LogGuid are stale now: the log starts afresh. */
  r = vhdx_log_writer_init (&img->log, img->header.log_offset,
                            img->header.log_length, img->log_guid_raw, 0, 1);
  if (r < 0)
    return r;
  img->header_updated = true;
  return 0;
}

/* BAT page holding entry index changed: written at the next flush. */
void
vhdx_mark_bat_page_dirty (struct vhdx_image *img, uint64_t index)
{
  uint32_t page = (uint32_t) (index / VHDX_BAT_PAGE_ENTRIES);

  if (!img->page_dirty[page]) {
    img->page_dirty[page] = 1;
    img->dirty_pages[img->n_dirty_pages++] = page;
  }
}

/* The pending pages are found by file offset through an open-addressing
 * table of their indexes (+1; 0 is a free slot), at most half full: a
 * large flush can hold a page for every 16 MiB of disk written, and each
 * bitmap written back looks its page up.
 */
static size_t
sb_slot (uint64_t file_offset, size_t n_slots)
{
  uint64_t h = (file_offset / VHDX_BAT_PAGE_SIZE)
               * UINT64_C (0x9E3779B97F4A7C15);

  return (size_t) (h >> 32) & (n_slots - 1);
}

struct vhdx_sb_page *
vhdx_pending_sb_page (struct vhdx_image *img, uint64_t file_offset)
{
  if (img->n_sb_slots == 0)
    return NULL;
  for (size_t i = sb_slot (file_offset, img->n_sb_slots);
       img->sb_slots[i] != 0; i = (i + 1) & (img->n_sb_slots - 1))
    if (img->sb_pages[img->sb_slots[i] - 1].file_offset == file_offset)
      return &img->sb_pages[img->sb_slots[i] - 1];
  return NULL;
}

static void
sb_index_insert (struct vhdx_image *img, size_t index)
{
  size_t i = sb_slot (img->sb_pages[index].file_offset, img->n_sb_slots);

  while (img->sb_slots[i] != 0)
    i = (i + 1) & (img->n_sb_slots - 1);
  img->sb_slots[i] = index + 1;
}

/* Room in the table for one more page: doubled and refilled when it
 * would be more than half full.
 */
static int
sb_index_reserve (struct vhd_disk *disk, struct vhdx_image *img)
{
  size_t n = img->n_sb_slots ? img->n_sb_slots : 32;
  size_t *slots;

  while ((img->n_sb_pages + 1) * 2 > n)
    n *= 2;
  if (n == img->n_sb_slots)
    return 0;
  slots = calloc (n, sizeof *slots);
  if (slots == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  free (img->sb_slots);
  img->sb_slots = slots;
  img->n_sb_slots = n;
  for (size_t i = 0; i < img->n_sb_pages; i++)
    sb_index_insert (img, i);
  return 0;
}

/* After a checkpoint: the pages that the file now holds as they are
 * here are dropped; the dirty ones stay (their changes are not logged),
 * indexed anew.  On failure nothing changes.
 */
int
vhdx_drop_clean_sb_pages (struct vhd_disk *disk, struct vhdx_image *img)
{
  size_t k = 0, n = 32, *slots = NULL;

  for (size_t i = 0; i < img->n_sb_pages; i++)
    k += img->sb_pages[i].dirty;
  if (k > 0) {
    while ((k + 1) * 2 > n)
      n *= 2;
    slots = calloc (n, sizeof *slots);
    if (slots == NULL)
      return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  }
  k = 0;
  for (size_t i = 0; i < img->n_sb_pages; i++) {
    if (img->sb_pages[i].dirty)
      img->sb_pages[k++] = img->sb_pages[i];
    else
      free (img->sb_pages[i].data);
  }
  free (img->sb_slots);
  img->sb_slots = slots;
  img->n_sb_slots = slots ? n : 0;
  img->n_sb_pages = k;
  for (size_t i = 0; i < k; i++)
    sb_index_insert (img, i);
  return 0;
}

void
vhdx_free_sb_pages (struct vhdx_image *img)
{
  for (size_t i = 0; i < img->n_sb_pages; i++)
    free (img->sb_pages[i].data);
  free (img->sb_pages);
  img->sb_pages = NULL;
  img->n_sb_pages = img->cap_sb_pages = 0;
  free (img->sb_slots);
  img->sb_slots = NULL;
  img->n_sb_slots = 0;
}

/* The pending page at file_offset, read from the file the first time. */
static int
get_sb_page (struct vhd_disk *disk, struct vhdx_image *img,
             uint64_t file_offset, struct vhdx_sb_page **out)
{
  struct vhdx_sb_page *p = vhdx_pending_sb_page (img, file_offset);
  uint8_t *data;
  int r;

  if (p) {
    *out = p;
    return 0;
  }
  if (img->n_sb_pages == img->cap_sb_pages) {
    size_t cap = img->cap_sb_pages ? 2 * img->cap_sb_pages : 16;
    struct vhdx_sb_page *n = realloc (img->sb_pages, cap * sizeof *n);

    if (n == NULL)
      return vhd_error (ENOMEM, "%s: out of memory", disk->path);
    img->sb_pages = n;
    img->cap_sb_pages = cap;
  }
  r = sb_index_reserve (disk, img);
  if (r < 0)
    return r;
  data = malloc (VHDX_BAT_PAGE_SIZE);
  if (data == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = vhd_backend_pread_exact (disk->be, data, VHDX_BAT_PAGE_SIZE,
                               file_offset, "sector bitmap block");
  if (r < 0) {
    free (data);
    return r;
  }
  p = &img->sb_pages[img->n_sb_pages];
  p->file_offset = file_offset;
  p->data = data;
  p->dirty = false;
  sb_index_insert (img, img->n_sb_pages++);
  *out = p;
  return 0;
}

/* A PARTIALLY_PRESENT block's bits into its share of its chunk's sector
 * bitmap block (driver.c, vhdx_read_bitmap, has the layout), in the
 * pending pages that write_table logs (meta_lock held, at a flush).
 */
int
vhdx_write_bitmap (struct vhd_disk *disk, uint32_t block,
                   const uint8_t *bits)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  uint64_t sb, offset;
  uint32_t done = 0;

  if ((img->bat[vhdx_bat_payload_index (&img->geom, block)] & 7)
      != VHDX_PAYLOAD_PARTIALLY_PRESENT)
    return vhd_error (EIO, "%s: block %" PRIu32 ": a sector bitmap to write"
                      " for a block that is not PARTIALLY_PRESENT",
                      disk->path, block);
  sb = img->bat[vhdx_bat_bitmap_index (&img->geom, block >> img->chunk_shift)];
  offset = vhdx_entry_offset (sb)
           + (uint64_t) (block & (img->geom.chunk_ratio - 1))
             * disk->bitmap_size;
  while (done < disk->bitmap_size) {
    uint64_t at = offset + done;
    uint64_t page = at & ~(uint64_t) (VHDX_BAT_PAGE_SIZE - 1);
    uint32_t n = VHDX_BAT_PAGE_SIZE - (uint32_t) (at - page);
    struct vhdx_sb_page *p = NULL;
    int r;

    if (n > disk->bitmap_size - done)
      n = disk->bitmap_size - done;
    r = get_sb_page (disk, img, page, &p);
    if (r < 0)
      return r;
    for (uint32_t i = 0; i < n; i++) {
      uint8_t now = vhdx_bitmap_byte_swap (bits[done + i]);

      if (p->data[at - page + i] != now) {
        p->data[at - page + i] = now;
        p->dirty = true;
      }
    }
    done += n;
  }
  return 0;
}

/* Room for len bytes at the end of the file, on a 1 MiB boundary,
 * reading as zeros: what the file holds there already (a crash's
 * leftover) is zeroed; past the end, extending the file gives zeros.
 */
static int
take_space (struct vhd_disk *disk, struct vhdx_image *img, uint64_t len,
            uint64_t *offset_out)
{
  uint64_t offset = img->end, end = offset + len;
  int r = 0;

  if (offset / MiB > VHDX_BAT_MAX_OFFSET_MB)
    return vhd_error (ENOSPC, "%s: a new block at offset %" PRIu64 " is"
                      " past what a BAT entry can address", disk->path,
                      offset);
  /* Zeros written over a crash's leftover are durable, as the data is,
   * at the sync that precedes the next flush's log entries (commit.c).
   */
  if (offset < disk->file_end) {
    r = vhd_zero_file_range (disk, offset,
                             (end < disk->file_end ? end : disk->file_end)
                             - offset, false);
  }
  if (r == 0 && end > disk->file_end)
    r = vhd_backend_truncate (disk->be, end);
  if (r < 0)
    return r;
  if (end > disk->file_end)
    disk->file_end = end;
  img->end = end;
  *offset_out = offset;
  return 0;
}

/* Publish BAT entry index in memory; it reaches the file at the next
 * flush.
 */
static void
set_entry (struct vhdx_image *img, uint64_t index, uint8_t state,
           uint64_t offset)
{
  struct vhdx_bat_entry e = { .state = state, .offset_mb = offset / MiB };
  uint8_t raw[VHDX_BAT_ENTRY_SIZE];

  vhdx_bat_entry_encode (&e, raw);
  __atomic_store_n (&img->bat[index], vhdx_get_le64 (raw), __ATOMIC_RELEASE);
  vhdx_mark_bat_page_dirty (img, index);
}

static bool
all_set (const uint8_t *bits, uint32_t len)
{
  for (uint32_t i = 0; i < len; i++)
    if (bits[i] != 0xff)
      return false;
  return true;
}

/* A new block goes at the end of the file (take_space), its space
 * reading as zeros.  bits is full for a dynamic disk, and for a
 * differencing disk's block that read as zeros at this level: then the
 * block is FULLY_PRESENT.  A differencing disk's block that still reads
 * its parent starts PARTIALLY_PRESENT with no sector of its own, and its
 * chunk gets a sector bitmap block first if it has none (a new 1 MiB of
 * zeros: no sector present).  Published in memory at once; in the file
 * at the next flush.
 */
int
vhdx_allocate_block (struct vhd_disk *disk, uint32_t block,
                     const uint8_t *bits)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  uint64_t index = vhdx_bat_payload_index (&img->geom, block);
  bool full = img->kind != VHDX_KIND_DIFFERENCING ||
              all_set (bits, disk->bitmap_size);
  uint64_t offset;
  int r;

  if (!full) {
    uint64_t sb = vhdx_bat_bitmap_index (&img->geom,
                                         block >> img->chunk_shift);

    if ((img->bat[sb] & 7) != VHDX_SB_PRESENT) {
      r = take_space (disk, img, VHDX_SECTOR_BITMAP_SIZE, &offset);
      if (r < 0)
        return r;
      set_entry (img, sb, VHDX_SB_PRESENT, offset);
    }
  }
  r = take_space (disk, img, disk->block_size, &offset);
  if (r < 0)
    return r;
  set_entry (img, index, full ? VHDX_PAYLOAD_FULLY_PRESENT
                              : VHDX_PAYLOAD_PARTIALLY_PRESENT,
             offset);
  img->allocated_blocks++;
  return 0;
}

/* A whole block trimmed (UNMAPPED) or zeroed (ZERO): [MS-VHDX] 2.5.1.1
 * lets a reader return zeros for both, and we do (driver.c).  The entry
 * keeps no FileOffsetMB: the block has no file space any more (the core
 * punches it), and a later write gives it a new block at the end, never
 * this one's old space, which the BAT in the file points at until the
 * next flush.  Published in memory at once, in the file at the next
 * flush through the log, as an allocation is.  A fixed disk keeps its
 * blocks (LeaveBlockAllocated: Windows keeps a fixed disk fully
 * allocated), and only FULLY_PRESENT blocks are released.
 */
int
vhdx_release_block (struct vhd_disk *disk, uint32_t block, bool zero)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  uint64_t index = (uint64_t) block + (block >> img->chunk_shift);
  unsigned state = img->bat[index] & 7;

  if (img->kind != VHDX_KIND_DYNAMIC ||
      state != VHDX_PAYLOAD_FULLY_PRESENT)
    return 0;
  set_entry (img, index, zero ? VHDX_PAYLOAD_ZERO : VHDX_PAYLOAD_UNMAPPED,
             0);
  img->allocated_blocks--;
  return 1;
}

/* A clean close: the core's last flush succeeded, so once every logged
 * page is written in place and synced (a checkpoint, commit.c) the
 * header can say the log is empty, and every reader (qemu among them,
 * which refuses a read-only open of an image with a log to replay) opens
 * the file as it is.  The header saying "no log" must not reach the disk
 * before those pages.  A failure only leaves a log that the next open
 * replays: its pages are what the last flush made durable.
 */
void
vhdx_close_log (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_header h;

  if (disk->readonly || !img->header_updated || !disk->closed_flushed ||
      vhd_guid_is_zero (&img->header.log_guid))
    return;
  if (vhdx_checkpoint_in_place (disk) < 0)
    return;
  h = img->header;
  memset (&h.log_guid, 0, sizeof h.log_guid);
  vhdx_write_header (disk, img, &h);
}

/* vhdkit: writing a VHDX image: the header update before the first
 * change, where a new block goes, a whole block released by a trim or a
 * zero, and the BAT made durable through the log.
 *
 * The core's order (core/io.c) is: data written, synced; then
 * write_table; then synced again.  Here write_table puts the changed BAT
 * pages in a log entry, writes it and syncs, and only then writes the
 * pages in place (the core's last sync makes them durable).  A crash
 * before the entry is durable loses only metadata that no flush had
 * promised; a crash after it is repaired by the next open, which replays
 * the entry ([MS-VHDX] 2.3).  Nothing is synced per write, and one flush
 * costs one log entry, whatever the number of allocations it covers.
 *
 * Each entry is a sequence of its own (its Tail is itself): when it is
 * written, every earlier entry's in-place writes are durable (the core
 * synced before calling us; between the entries of one flush, we sync).  Entries alternate between the two halves
 * of the log, and one entry never takes more than a half, so that a new
 * entry can never overwrite the entry before it.  That matters when the
 * new one is torn by a crash: the newest intact entry, which the next
 * open replays, is then the one before, whose pages are still current;
 * were it overwritten, an older entry would be replayed and put back BAT
 * pages that later entries had changed.
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

static uint64_t
round_up_mib (uint64_t v)
{
  return (v + MiB - 1) & ~(MiB - 1);
}

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
  img->log_sequence = 1;
  img->log_half = 0;
  img->header_updated = true;
  return 0;
}

/* page_dirty: 0 clean, PAGE_DIRTY changed, PAGE_EARLY changed and
 * holding a new sector bitmap block's entry.
 */
enum { PAGE_DIRTY = 1, PAGE_EARLY = 2 };

static void
mark_page_dirty (struct vhdx_image *img, uint64_t index, bool early)
{
  uint32_t page = (uint32_t) (index / VHDX_BAT_PAGE_ENTRIES);

  if (!img->page_dirty[page])
    img->dirty_pages[img->n_dirty_pages++] = page;
  if (img->page_dirty[page] != PAGE_EARLY)
    img->page_dirty[page] = early ? PAGE_EARLY : PAGE_DIRTY;
}

struct vhdx_sb_page *
vhdx_pending_sb_page (struct vhdx_image *img, uint64_t file_offset)
{
  for (size_t i = 0; i < img->n_sb_pages; i++)
    if (img->sb_pages[i].file_offset == file_offset)
      return &img->sb_pages[i];
  return NULL;
}

void
vhdx_free_sb_pages (struct vhdx_image *img)
{
  for (size_t i = 0; i < img->n_sb_pages; i++)
    free (img->sb_pages[i].data);
  free (img->sb_pages);
  img->sb_pages = NULL;
  img->n_sb_pages = img->cap_sb_pages = 0;
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
  data = malloc (VHDX_BAT_PAGE_SIZE);
  if (data == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  r = vhd_backend_pread_exact (disk->be, data, VHDX_BAT_PAGE_SIZE,
                               file_offset, "sector bitmap block");
  if (r < 0) {
    free (data);
    return r;
  }
  p = &img->sb_pages[img->n_sb_pages++];
  p->file_offset = file_offset;
  p->data = data;
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
    for (uint32_t i = 0; i < n; i++)
      p->data[at - page + i] = vhdx_bitmap_byte_swap (bits[done + i]);
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
  if (offset < disk->file_end)
    r = vhd_zero_file_range (disk, offset,
                             (end < disk->file_end ? end : disk->file_end)
                             - offset, false);
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
 * flush.  early: its page goes into the log before the pages of payload
 * entries (write_table says why).
 */
static void
set_entry (struct vhdx_image *img, uint64_t index, uint8_t state,
           uint64_t offset, bool early)
{
  struct vhdx_bat_entry e = { .state = state, .offset_mb = offset / MiB };
  uint8_t raw[VHDX_BAT_ENTRY_SIZE];

  vhdx_bat_entry_encode (&e, raw);
  __atomic_store_n (&img->bat[index], vhdx_get_le64 (raw), __ATOMIC_RELEASE);
  mark_page_dirty (img, index, early);
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
      set_entry (img, sb, VHDX_SB_PRESENT, offset, true);
    }
  }
  r = take_space (disk, img, disk->block_size, &offset);
  if (r < 0)
    return r;
  set_entry (img, index, full ? VHDX_PAYLOAD_FULLY_PRESENT
                              : VHDX_PAYLOAD_PARTIALLY_PRESENT,
             offset, false);
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
             0, false);
  img->allocated_blocks--;
  return 1;
}

/* Sectors of an entry carrying n data sectors: the descriptors (126 in
 * the header's sector, 128 in each further one), then the data.
 */
static uint64_t
entry_sectors (uint64_t n)
{
  uint64_t desc = 1 + (n > 126 ? (n - 126 + 127) / 128 : 0);

  return desc + n;
}

static int
write_entry (struct vhd_disk *disk, struct vhdx_image *img,
             const struct vhdx_log_update *updates, size_t n)
{
  uint32_t half = img->header.log_length / 2;
  struct vhdx_log_writer w;
  struct vhdx_log_encoded enc = { .buf = NULL };
  uint64_t flushed = disk->file_end & ~(MiB - 1);
  int r;

  r = vhdx_log_writer_init (&w, img->header.log_offset,
                            img->header.log_length, img->log_guid_raw,
                            img->log_half * half, img->log_sequence);
  if (r == 0)
    r = vhdx_log_encode_entry (&w, updates, n, flushed,
                               round_up_mib (disk->file_end), &enc);
  for (unsigned i = 0; r == 0 && i < enc.npieces; i++)
    r = vhd_write_exact (disk, enc.buf + enc.pieces[i].buf_offset,
                         enc.pieces[i].len, enc.pieces[i].file_offset,
                         "log entry");
  free (enc.buf);
  if (r == 0)
    r = vhd_backend_flush (disk->be, false);
  if (r < 0)
    return r;
  img->log_sequence = w.sequence;
  img->log_half ^= 1;
  /* Then in place; durable at the core's next sync. */
  for (size_t i = 0; r == 0 && i < n; i++)
    r = vhd_write_exact (disk, updates[i].data, updates[i].length,
                         updates[i].file_offset, "BAT or sector bitmap");
  return r;
}

/* A flush's pages go into as few entries as half the log allows; the
 * crash tests need flushes of several entries without writing hundreds
 * of pages, so VHDKIT_VHDX_LOG_ENTRY_PAGES=N (N >= 1) caps each entry at
 * N pages.  Any N gives a valid log (more entries, more syncs): it can
 * only make entries smaller.  Anything else is ignored.
 */
unsigned
vhdx_max_entry_pages_from_env (void)
{
  const char *e = getenv ("VHDKIT_VHDX_LOG_ENTRY_PAGES");
  char *end;
  unsigned long n;

  if (e == NULL || *e == '\0')
    return 0;
  errno = 0;
  n = strtoul (e, &end, 10);
  if (errno || *end != '\0' || n == 0 || n > UINT32_MAX)
    return 0;
  return (unsigned) n;
}

static int
compare_pages_descending (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

  return x < y ? 1 : x > y ? -1 : 0;
}

/* Write back the sector bitmap pages and BAT pages changed since the
 * last flush (meta_lock held, data synced), as log entries of at most
 * half the log each.  When they take more than one entry, each entry is
 * replayed on its own after a crash, so the order makes every prefix
 * valid: sector bitmap pages first (bits of data already synced, in
 * blocks whose BAT entries may not say so yet: unseen until then), then
 * BAT pages that give a chunk a new sector bitmap block, then the rest
 * (a PARTIALLY_PRESENT entry whose chunk's bitmap block is in place).
 * A page that gives one chunk its bitmap block often holds the first
 * payload entries of the next chunk, whose own new bitmap entry may be in
 * another such page: so the BAT pages go from the last to the first.  A
 * chunk's bitmap entry follows its payload entries ([MS-VHDX] 2.5), so
 * its page is written with or before every page that points into it.
 */
int
vhdx_write_table (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  size_t n_bat = img->n_dirty_pages, n = n_bat + img->n_sb_pages;
  size_t per_entry = 0, k = 0;
  CLEANUP_FREE uint8_t *pages = NULL;
  CLEANUP_FREE struct vhdx_log_update *updates = NULL;
  uint64_t half_sectors = img->header.log_length / 2 / VHDX_LOG_SECTOR;
  int r = 0;

  if (n == 0)
    return 0;
  while (entry_sectors (per_entry + 1) <= half_sectors &&
         (img->max_entry_pages == 0 || per_entry < img->max_entry_pages))
    per_entry++;
  if (per_entry == 0)
    return vhd_error (ENOSPC, "%s: the log (%" PRIu32 " bytes) is too small"
                      " for any entry", disk->path, img->header.log_length);
  qsort (img->dirty_pages, n_bat, sizeof *img->dirty_pages,
         compare_pages_descending);
  pages = malloc (n_bat * VHDX_BAT_PAGE_SIZE + 1);
  updates = malloc (n * sizeof *updates);
  if (pages == NULL || updates == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);
  for (size_t i = 0; i < img->n_sb_pages; i++)
    updates[k++] = (struct vhdx_log_update) {
      .file_offset = img->sb_pages[i].file_offset,
      .length = VHDX_BAT_PAGE_SIZE,
      .data = img->sb_pages[i].data,
    };
  for (int pass = PAGE_EARLY; pass >= PAGE_DIRTY; pass--) {
    for (size_t i = 0; i < n_bat; i++) {
      uint32_t page = img->dirty_pages[i];
      uint64_t first = (uint64_t) page * VHDX_BAT_PAGE_ENTRIES;
      uint8_t *p = pages + i * VHDX_BAT_PAGE_SIZE;

      if (img->page_dirty[page] != pass)
        continue;
      for (uint64_t e = 0; e < VHDX_BAT_PAGE_ENTRIES; e++)
        vhdx_put_le64 (p + e * VHDX_BAT_ENTRY_SIZE,
                       first + e < img->geom.total_entries
                       ? img->bat[first + e] : 0);
      updates[k++] = (struct vhdx_log_update) {
        .file_offset = img->regions.bat.offset
                       + (uint64_t) page * VHDX_BAT_PAGE_SIZE,
        .length = VHDX_BAT_PAGE_SIZE,
        .data = p,
      };
    }
  }
  for (size_t done = 0; r == 0 && done < n; done += per_entry) {
    /* The entry before (its own sequence) is not replayed once this one
     * is whole, so its in-place writes must be durable before this one
     * is written: the core's sync before us covers the last flush's
     * entries, not the entries of this one.
     */
    if (done > 0)
      r = vhd_backend_flush (disk->be, false);
    if (r == 0)
      r = write_entry (disk, img, updates + done,
                       n - done < per_entry ? n - done : per_entry);
  }
  if (r < 0)
    return r;
  for (size_t i = 0; i < n_bat; i++)
    img->page_dirty[img->dirty_pages[i]] = 0;
  img->n_dirty_pages = 0;
  vhdx_free_sb_pages (img);
  return 0;
}

/* A clean close: every entry applied and synced (the core flushed), so
 * the header can say the log is empty, and every reader (qemu among
 * them, which refuses a read-only open of an image with a log to replay)
 * opens the file as it is.  A failure only leaves a log that the next
 * open replays again, harmlessly.
 */
void
vhdx_close_log (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_header h;

  if (disk->readonly || !img->header_updated ||
      __atomic_load_n (&disk->metadata_dirty, __ATOMIC_ACQUIRE) ||
      vhd_guid_is_zero (&img->header.log_guid))
    return;
  h = img->header;
  memset (&h.log_guid, 0, sizeof h.log_guid);
  vhdx_write_header (disk, img, &h);
}

/* vhdkit: a VHDX flush: the BAT and sector bitmap pages changed since the
 * last one made durable through the log ([MS-VHDX] 2.3), in two steps.
 *
 * write_table takes a snapshot of the pages while no write is in flight
 * (core/io.c holds flush_lock); commit_table then writes them with
 * writes running again.  Each round writes its pages as log entries,
 * syncs, and only then writes them in place; those in-place copies
 * become durable at the next sync, whichever comes first of the next
 * round's, a plain flush's or the close's.
 *
 * A round has two ways to order its sector bitmap bits after the data
 * they cover:
 *
 * - One sync (a differencing disk's usual round): the entry also carries
 *   every 4 KiB payload page holding a sector whose bit it turns on, as
 *   the file holds it at the snapshot.  The log entry and the data then
 *   need no order between them: if the entry survives a crash, the next
 *   open replays it, and the pages it carries are the data its bits
 *   cover; if it does not, the bits are not set, and the parent shows,
 *   as before the round.  The entry also carries, as the file holds them,
 *   the pages that the last round wrote in place after its sync (not
 *   yet durable), because once this entry is whole the next open
 *   replays only it.  A later write to a payload page that the newest
 *   entry carries would be undone by a replay of it, so after such a
 *   round write_table answers 1: the next flush runs a round too, whose
 *   entry takes the newest one's place.
 *
 * - Two syncs (any other disk, or a round that cannot use one): the data
 *   is synced first, and then the entries carry only BAT and sector
 *   bitmap pages.  That is needed when the round's entries would not fit
 *   in one (half the log), when a new block must be durable before its
 *   entry (a differencing disk's FULLY_PRESENT block, which hides the
 *   parent), when zeros were written over a crash's leftovers, or after
 *   a failed round.
 *
 * Each entry is a sequence of its own (its Tail is itself): when it is
 * whole, the next open replays it alone.  Entries alternate between the
 * two halves of the log, and one entry never takes more than a half, so
 * that a new entry can never overwrite the entry before it.  That matters
 * when the new one is torn by a crash: the newest intact entry, which the
 * next open replays, is then the one before, whose pages are still
 * current; were it overwritten, an older entry would be replayed and put
 * back pages that later entries had changed.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/cleanup.h"
#include "formats/vhdx/vhdx.h"

#define MiB VHDX_MiB
#define PAGE VHDX_BAT_PAGE_SIZE

/* Sectors of an entry carrying n data sectors: the descriptors (126 in
 * the header's sector, 128 in each further one), then the data.
 */
static uint64_t
entry_sectors (uint64_t n)
{
  uint64_t desc = 1 + (n > 126 ? (n - 126 + 127) / 128 : 0);

  return desc + n;
}

/* Write one entry of n pages, sync, then write the pages from
 * n_in_place on in place (the ones before are there already).
 */
static int
write_entry (struct vhd_disk *disk, struct vhdx_image *img,
             const struct vhdx_round *rd, const struct vhdx_log_update *updates,
             size_t n, size_t n_in_place)
{
  uint32_t half = img->header.log_length / 2;
  struct vhdx_log_writer w;
  struct vhdx_log_encoded enc = { .buf = NULL };
  int r;

  r = vhdx_log_writer_init (&w, img->header.log_offset,
                            img->header.log_length, img->log_guid_raw,
                            img->log_half * half, img->log_sequence);
  if (r == 0)
    r = vhdx_log_encode_entry (&w, updates, n, rd->flushed_end, rd->last_end,
                               &enc);
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
  for (size_t i = n_in_place; r == 0 && i < n; i++)
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

static int
compare_offsets (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y ? 1 : 0;
}

/* Sort and drop duplicates; returns the new count. */
static size_t
sort_unique (uint64_t *v, size_t n)
{
  size_t k = 0;

  if (n == 0)                   /* v may be NULL, which qsort may not take */
    return 0;
  qsort (v, n, sizeof *v, compare_offsets);
  for (size_t i = 0; i < n; i++)
    if (k == 0 || v[k - 1] != v[i])
      v[k++] = v[i];
  return k;
}

static void
clear_round (struct vhdx_round *rd)
{
  free (rd->updates);
  free (rd->copies);
  free (rd->bat_pages);
  memset (rd, 0, sizeof *rd);
}

void
vhdx_free_round (struct vhdx_image *img)
{
  clear_round (&img->round);
  free (img->data_pages);
  img->data_pages = NULL;
  img->n_data_pages = img->cap_data_pages = 0;
  free (img->unsynced_pages);
  img->unsynced_pages = NULL;
  img->n_unsynced_pages = 0;
}

/* The BAT page (page number) or sector bitmap page (file offset) that
 * this round writes in place anyway, so the last round's copy of it
 * needs no place of its own in the entry.
 */
static bool
written_this_round (struct vhdx_image *img, uint64_t file_offset)
{
  uint64_t bat = img->regions.bat.offset;

  if (file_offset >= bat && file_offset - bat < img->regions.bat.length)
    return img->page_dirty[(file_offset - bat) / PAGE] != 0;
  return vhdx_pending_sb_page (img, file_offset) != NULL;
}

/* Step one (meta_lock and flush_lock held, no write in flight): the
 * round's pages, as described at the top.  Returns 1 if the next flush
 * must run a round of its own.
 */
int
vhdx_write_table (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_round *rd = &img->round;
  size_t n_bat = img->n_dirty_pages, n_sb = img->n_sb_pages;
  size_t n_data, n_unsynced = 0, n_copies, per_entry = 0, k = 0, c = 0;
  uint64_t half_sectors = img->header.log_length / 2 / VHDX_LOG_SECTOR;
  CLEANUP_FREE uint64_t *unsynced = NULL;
  bool one_sync;
  int r;

  clear_round (rd);
  while (entry_sectors (per_entry + 1) <= half_sectors &&
         (img->max_entry_pages == 0 || per_entry < img->max_entry_pages))
    per_entry++;
  if (per_entry == 0)
    return vhd_error (ENOSPC, "%s: the log (%" PRIu32 " bytes) is too small"
                      " for any entry", disk->path, img->header.log_length);

  n_data = sort_unique (img->data_pages, img->n_data_pages);
  if (img->n_unsynced_pages > 0) {
    unsynced = malloc (img->n_unsynced_pages * sizeof *unsynced);
    if (unsynced == NULL)
      return vhd_error (ENOMEM, "%s: out of memory", disk->path);
    for (size_t i = 0; i < img->n_unsynced_pages; i++)
      if (!written_this_round (img, img->unsynced_pages[i]))
        unsynced[n_unsynced++] = img->unsynced_pages[i];
  }
  one_sync = img->kind == VHDX_KIND_DIFFERENCING && !img->sync_before_entry
             && n_data + n_unsynced + n_sb + n_bat <= per_entry;
  if (!one_sync)
    n_data = n_unsynced = 0;

  rd->n = n_data + n_unsynced + n_sb + n_bat;
  rd->n_in_place = n_data + n_unsynced;
  rd->per_entry = per_entry;
  rd->sync_first = !one_sync;
  rd->file_end = disk->file_end;
  /* FlushedFileOffset: a size the file has durably.  With the data
   * synced first, that is its size now; with one sync, its size at the
   * last sync, as the entry may reach the disk before the file's growth.
   */
  rd->flushed_end = (one_sync ? img->synced_end : disk->file_end)
                    & ~(uint64_t) (MiB - 1);
  rd->last_end = (disk->file_end + MiB - 1) & ~(uint64_t) (MiB - 1);
  if (rd->n == 0)
    goto done;

  n_copies = n_data + n_unsynced + n_bat;
  rd->updates = malloc (rd->n * sizeof *rd->updates);
  rd->copies = malloc (n_copies * PAGE + 1);
  rd->bat_pages = malloc (n_bat * sizeof *rd->bat_pages + 1);
  if (rd->updates == NULL || rd->copies == NULL || rd->bat_pages == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);

  /* Pages in place already: payload pages and the last round's. */
  for (size_t i = 0; i < n_data + n_unsynced; i++) {
    uint64_t at = i < n_data ? img->data_pages[i]
                             : unsynced[i - n_data];
    uint8_t *p = rd->copies + c++ * PAGE;

    r = vhd_backend_pread_exact (disk->be, p, PAGE, at,
                                 i < n_data ? "payload page"
                                            : "BAT or sector bitmap page");
    if (r < 0)
      return r;
    rd->updates[k++] = (struct vhdx_log_update) {
      .file_offset = at, .length = PAGE, .data = p,
    };
  }

  /* When the round takes more than one entry, each entry is replayed on
   * its own after a crash, so the order makes every prefix valid: sector
   * bitmap pages first (bits of data already synced, in blocks whose BAT
   * entries may not say so yet: unseen until then), then BAT pages from
   * the last to the first.  A chunk's bitmap entry follows its payload
   * entries ([MS-VHDX] 2.5), so the page giving a chunk its bitmap block
   * is written with or before every page that points into it.  The
   * pending bitmap pages stay as they are until the commit (only a round
   * changes them), so the entry points at them.
   */
  for (size_t i = 0; i < n_sb; i++)
    rd->updates[k++] = (struct vhdx_log_update) {
      .file_offset = img->sb_pages[i].file_offset,
      .length = PAGE,
      .data = img->sb_pages[i].data,
    };
  qsort (img->dirty_pages, n_bat, sizeof *img->dirty_pages,
         compare_pages_descending);
  for (size_t i = 0; i < n_bat; i++) {
    uint32_t page = img->dirty_pages[i];
    uint64_t first = (uint64_t) page * VHDX_BAT_PAGE_ENTRIES;
    uint8_t *p = rd->copies + c++ * PAGE;

    for (uint64_t e = 0; e < VHDX_BAT_PAGE_ENTRIES; e++)
      vhdx_put_le64 (p + e * VHDX_BAT_ENTRY_SIZE,
                     first + e < img->geom.total_entries
                     ? img->bat[first + e] : 0);
    rd->updates[k++] = (struct vhdx_log_update) {
      .file_offset = img->regions.bat.offset + (uint64_t) page * PAGE,
      .length = PAGE,
      .data = p,
    };
    rd->bat_pages[i] = page;
    img->page_dirty[page] = 0;
  }
  rd->n_bat_pages = n_bat;
  img->n_dirty_pages = 0;

 done:
  img->n_data_pages = 0;
  img->sync_before_entry = false;
  return one_sync && n_data > 0 ? 1 : 0;
}

/* Step two (round_lock held; writes may run): the snapshot's entries,
 * each written, synced and then applied in place.
 */
int
vhdx_commit_table (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_round *rd = &img->round;
  size_t applied = 0;
  int r = 0;

  /* With nothing to log, the sync still makes the data durable. */
  if (rd->sync_first || rd->n == 0)
    r = vhd_backend_flush (disk->be, false);
  for (size_t done = 0; r == 0 && done < rd->n; done += rd->per_entry) {
    size_t n = rd->n - done < rd->per_entry ? rd->n - done : rd->per_entry;
    size_t in_place = rd->n_in_place > done ? rd->n_in_place - done : 0;

    if (in_place > n)
      in_place = n;
    /* The entry before (its own sequence) is not replayed once this one
     * is whole, so its in-place writes must be durable first.
     */
    if (done > 0)
      r = vhd_backend_flush (disk->be, false);
    if (r == 0)
      r = write_entry (disk, img, rd, rd->updates + done, n, in_place);
    if (r == 0)
      applied = done + n;
  }

  pthread_mutex_lock (&disk->meta_lock);
  if (r == 0) {
    /* The pages written in place since the last sync: the last entry's
     * (the syncs between entries made the earlier ones' durable).
     */
    size_t last = rd->n == 0 ? 0 : (rd->n - 1) / rd->per_entry * rd->per_entry;
    size_t from = last > rd->n_in_place ? last : rd->n_in_place;
    uint64_t *u = NULL;

    if (applied > from) {
      u = realloc (img->unsynced_pages, (applied - from) * sizeof *u);
      if (u == NULL) {
        /* Without the list, the next round must sync first. */
        img->sync_before_entry = true;
      }
      else {
        for (size_t i = from; i < applied; i++)
          u[i - from] = rd->updates[i].file_offset;
        img->unsynced_pages = u;
      }
    }
    img->n_unsynced_pages = u ? applied - from : 0;
    img->synced_end = rd->file_end;
    vhdx_free_sb_pages (img);
  }
  else {
    /* Keep everything for the next round, which syncs the data first
     * (the payload pages found this time are not kept).  The pending
     * sector bitmap pages are still here; the BAT pages are dirty again.
     */
    for (size_t i = 0; i < rd->n_bat_pages; i++)
      vhdx_mark_bat_page_dirty (img, (uint64_t) rd->bat_pages[i]
                                     * VHDX_BAT_PAGE_ENTRIES);
    img->sync_before_entry = true;
    __atomic_store_n (&disk->metadata_dirty, true, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&disk->meta_lock);
  clear_round (rd);
  return r;
}

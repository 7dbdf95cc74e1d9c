/* vhdkit: a VHDX flush: the BAT and sector bitmap pages changed since
 * the last one made durable through the log ([MS-VHDX] 2.3), in two
 * steps.
 *
 * write_table takes a snapshot of the pages while no write is in flight
 * (core/io.c holds flush_lock); commit_table then writes them with
 * writes running again: it syncs the data (every bit and BAT entry in
 * the snapshot covers data written before it), appends the pages to the
 * log as entries of the current sequence, and syncs again.  The pages
 * are not written in place then: a replay of the sequence puts them
 * there, and until a checkpoint the driver reads sector bitmap pages
 * from its own copies (write.c) and the BAT from memory.  A flush thus
 * writes its data, one entry and two syncs, and a page that many
 * flushes change (a sector bitmap page covers 16 MiB of a differencing
 * disk) reaches its place once per checkpoint, not once per flush.
 *
 * A checkpoint, when the log has no room for the next entry (and at a
 * clean close): once the sequence is synced, every page it carries is
 * written in place as its last entry has it (a crash meanwhile replays
 * the same pages), the file is synced, and a new sequence begins with
 * an entry of its own that carries nothing, synced too.  That empty
 * entry is what the next open finds if a later one is torn, so no older
 * sequence, whose pages are stale, can be replayed in its stead: the new
 * sequence's first real entry may wrap to the start of the log over the
 * old sequence.
 *
 * Within a round, an entry may end the log's room, and the next ones
 * follow a checkpoint; a crash may then leave any prefix of the round's
 * entries replayed, so the order makes every prefix valid: sector bitmap
 * pages first (bits of data already synced, in blocks whose BAT entries
 * may not say so yet: unseen until then), then BAT pages from the last
 * to the first.  A chunk's bitmap entry follows its payload entries
 * ([MS-VHDX] 2.5), so the page giving a chunk its bitmap block is written
 * with or before every page that points into it.
 *
 * A failed round leaves its pages dirty for the next one, which
 * checkpoints first: what the failed round's entries were is unknown,
 * and a later entry must never follow a torn one in a sequence.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
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

/* The largest entry (bytes) that the log has room for now, after the
 * entries of the current sequence (log-write.c places it: at the head
 * if it fits before the end of the log, else at 0 after a filler).
 */
static uint64_t
log_room (const struct vhdx_image *img)
{
  const struct vhdx_log_writer *w = &img->log;
  uint64_t free_bytes = w->log_length - w->used;
  uint64_t to_end = w->log_length - w->head;
  uint64_t at_head, at_start, room, cap;

  if (w->used == 0)
    room = w->log_length;
  else {
    at_head = to_end < free_bytes ? to_end : free_bytes;
    at_start = free_bytes > to_end ? free_bytes - to_end : 0;
    room = at_head > at_start ? at_head : at_start;
  }
  if (img->max_sequence_pages) {
    cap = (uint64_t) img->max_sequence_pages * VHDX_LOG_SECTOR;
    room = w->used >= cap ? 0 : room < cap - w->used ? room : cap - w->used;
  }
  return room;
}

/* How many of the next `left` pages the next entry takes. */
static size_t
pages_that_fit (const struct vhdx_image *img, size_t left)
{
  uint64_t room = log_room (img) / VHDX_LOG_SECTOR;
  size_t n = 0;

  while (n < left && entry_sectors (n + 1) <= room &&
         (img->max_entry_pages == 0 || n < img->max_entry_pages))
    n++;
  return n;
}

static int
write_entry (struct vhd_disk *disk, struct vhdx_image *img,
             const struct vhdx_log_update *updates, size_t n,
             uint64_t flushed_end, uint64_t last_end)
{
  struct vhdx_log_encoded enc = { .buf = NULL };
  int r;

  r = vhdx_log_encode_entry (&img->log, updates, n, flushed_end, last_end,
                             &enc);
  for (unsigned i = 0; r == 0 && i < enc.npieces; i++)
    r = vhd_write_exact (disk, enc.buf + enc.pieces[i].buf_offset,
                         enc.pieces[i].len, enc.pieces[i].file_offset,
                         "log entry");
  free (enc.buf);
  return r;
}

/* The logged page at file_offset, or where it would go (*pos). */
static struct vhdx_logged_page *
find_logged (struct vhdx_image *img, uint64_t file_offset, size_t *pos)
{
  size_t lo = 0, hi = img->n_logged;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (img->logged[mid].file_offset == file_offset) {
      *pos = mid;
      return &img->logged[mid];
    }
    if (img->logged[mid].file_offset < file_offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  *pos = lo;
  return NULL;
}

/* The pages of an entry just written, as the sequence now has them. */
static int
remember_logged (struct vhd_disk *disk, struct vhdx_image *img,
                 const struct vhdx_log_update *updates, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    size_t pos;
    struct vhdx_logged_page *l = find_logged (img, updates[i].file_offset,
                                              &pos);

    if (l == NULL) {
      uint8_t *data = malloc (PAGE);

      if (img->n_logged == img->cap_logged) {
        size_t cap = img->cap_logged ? 2 * img->cap_logged : 64;
        struct vhdx_logged_page *v = realloc (img->logged, cap * sizeof *v);

        if (v == NULL) {
          free (data);
          return vhd_error (ENOMEM, "%s: out of memory", disk->path);
        }
        img->logged = v;
        img->cap_logged = cap;
      }
      if (data == NULL)
        return vhd_error (ENOMEM, "%s: out of memory", disk->path);
      memmove (&img->logged[pos + 1], &img->logged[pos],
               (img->n_logged - pos) * sizeof *img->logged);
      img->n_logged++;
      l = &img->logged[pos];
      l->file_offset = updates[i].file_offset;
      l->data = data;
    }
    memcpy (l->data, updates[i].data, PAGE);
  }
  return 0;
}

static void
forget_logged (struct vhdx_image *img)
{
  for (size_t i = 0; i < img->n_logged; i++)
    free (img->logged[i].data);
  img->n_logged = 0;
}

int
vhdx_checkpoint_in_place (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  int r = 0;

  /* The entries first: a page in place before the entry that logs it is
   * durable could be the only half of a change that a crash keeps (a
   * round's own entries are not synced yet when its checkpoint comes).
   */
  if (img->n_logged > 0)
    r = vhd_backend_flush (disk->be, false);
  for (size_t i = 0; r == 0 && i < img->n_logged; i++)
    r = vhd_write_exact (disk, img->logged[i].data, PAGE,
                         img->logged[i].file_offset,
                         "BAT or sector bitmap page");
  if (r == 0)
    r = vhd_backend_flush (disk->be, false);
  if (r < 0)
    return r;
  forget_logged (img);
  return 0;
}

/* A checkpoint (see the top), then the new sequence's empty entry.
 * flushed_end: a size the file has durably once the checkpoint synced.
 */
static int
checkpoint (struct vhd_disk *disk, struct vhdx_image *img,
            uint64_t flushed_end, uint64_t last_end)
{
  int r = vhdx_checkpoint_in_place (disk);

  if (r < 0)
    return r;
  /* The file has the clean pending pages now. */
  pthread_mutex_lock (&disk->meta_lock);
  r = vhdx_drop_clean_sb_pages (disk, img);
  pthread_mutex_unlock (&disk->meta_lock);
  if (r < 0)
    return r;
  vhdx_log_writer_applied (&img->log);
  r = write_entry (disk, img, NULL, 0, flushed_end, last_end);
  if (r == 0)
    r = vhd_backend_flush (disk->be, false);
  return r;
}

/* A flush's pages go into as few entries as the log's room allows, and
 * a checkpoint comes when the log is full.  The crash tests need flushes
 * of several entries, and checkpoints, without writing hundreds of
 * pages: VHDKIT_VHDX_LOG_ENTRY_PAGES=N (N >= 1) caps each entry at N
 * pages, and VHDKIT_VHDX_LOG_SEQUENCE_PAGES=N the log's room at N 4 KiB
 * sectors per sequence.  Any N gives a valid log (more entries, more
 * checkpoints): it can only make them smaller.  Anything else is
 * ignored (0).
 */
unsigned
vhdx_log_pages_from_env (const char *name)
{
  const char *e = getenv (name);
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
  forget_logged (img);
  free (img->logged);
  img->logged = NULL;
  img->cap_logged = 0;
}

/* Step one (meta_lock and flush_lock held, no write in flight): the
 * round's pages, in the order described at the top.  The dirty sector
 * bitmap pages stay as they are until the commit (only a round changes
 * them), so the entries point at them.
 */
int
vhdx_write_table (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_round *rd = &img->round;
  size_t n_bat = img->n_dirty_pages, n_sb = 0, k = 0;

  clear_round (rd);
  for (size_t i = 0; i < img->n_sb_pages; i++)
    n_sb += img->sb_pages[i].dirty;
  rd->n = n_sb + n_bat;
  rd->n_sb = n_sb;
  /* The data is synced before the first entry: the file's size now is
   * durable by then.
   */
  rd->flushed_end = disk->file_end & ~(uint64_t) (MiB - 1);
  rd->last_end = (disk->file_end + MiB - 1) & ~(uint64_t) (MiB - 1);
  if (rd->n == 0)
    return 0;

  rd->updates = malloc (rd->n * sizeof *rd->updates);
  rd->copies = malloc (n_bat * PAGE + 1);
  rd->bat_pages = malloc (n_bat * sizeof *rd->bat_pages + 1);
  if (rd->updates == NULL || rd->copies == NULL || rd->bat_pages == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);

  for (size_t i = 0; i < img->n_sb_pages; i++)
    if (img->sb_pages[i].dirty)
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
    uint8_t *p = rd->copies + i * PAGE;

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
  return 0;
}

/* The round's sector bitmap pages in [from, to) are logged (clean), or
 * not after all (dirty).
 */
static void
set_sb_dirty (struct vhdx_image *img, const struct vhdx_round *rd,
              size_t from, size_t to, bool dirty)
{
  for (size_t i = from; i < to && i < rd->n_sb; i++) {
    struct vhdx_sb_page *p = vhdx_pending_sb_page (img,
                                                   rd->updates[i].file_offset);

    /* Gone: a checkpoint wrote it in place, as the round had it. */
    if (p)
      p->dirty = dirty;
  }
}

/* Step two (the only round running; writes may run): sync the data,
 * append the snapshot's entries (checkpointing when the log is full),
 * sync them.
 */
int
vhdx_commit_table (struct vhd_disk *disk)
{
  struct vhdx_image *img = vhdx_image_of (disk);
  struct vhdx_round *rd = &img->round;
  size_t done = 0;
  bool fresh = false;
  int r = 0;

  if (img->checkpoint_first) {
    r = checkpoint (disk, img, rd->flushed_end, rd->last_end);
    if (r == 0)
      img->checkpoint_first = false;
  }
  /* The data first; with nothing to log, this sync is the flush. */
  if (r == 0)
    r = vhd_backend_flush (disk->be, false);
  while (r == 0 && done < rd->n) {
    size_t n = pages_that_fit (img, rd->n - done);

    if (n == 0) {
      if (fresh)
        r = vhd_error (ENOSPC, "%s: the log (%" PRIu32 " bytes) is too"
                       " small for any entry", disk->path,
                       img->header.log_length);
      else
        r = checkpoint (disk, img, rd->flushed_end, rd->last_end);
      fresh = true;
      continue;
    }
    fresh = false;
    r = write_entry (disk, img, rd->updates + done, n, rd->flushed_end,
                     rd->last_end);
    if (r == 0)
      r = remember_logged (disk, img, rd->updates + done, n);
    if (r == 0) {
      pthread_mutex_lock (&disk->meta_lock);
      set_sb_dirty (img, rd, done, done + n, false);
      pthread_mutex_unlock (&disk->meta_lock);
    }
    done += n;
  }
  if (r == 0 && rd->n > 0)
    r = vhd_backend_flush (disk->be, false);

  if (r < 0) {
    /* Everything again at the next round, after a checkpoint: the
     * pending sector bitmap pages are still here; the BAT pages are
     * dirty again.
     */
    pthread_mutex_lock (&disk->meta_lock);
    set_sb_dirty (img, rd, 0, rd->n_sb, true);
    for (size_t i = 0; i < rd->n_bat_pages; i++)
      vhdx_mark_bat_page_dirty (img, (uint64_t) rd->bat_pages[i]
                                     * VHDX_BAT_PAGE_ENTRIES);
    img->checkpoint_first = true;
    __atomic_store_n (&disk->metadata_dirty, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&disk->meta_lock);
  }
  clear_round (rd);
  return r;
}

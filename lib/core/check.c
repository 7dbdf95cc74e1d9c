/* vhdkit: check an image's structure, and repair what can be repaired
 * without losing data (vhdtool check [--repair]).
 *
 * The checker parses the file itself rather than through vhd_open, so that
 * it can report every problem (with its field and offset) instead of
 * stopping at the first one that makes an open fail.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "backend/backend.h"
#include "backend/file.h"
#include "chain.h"
#include "formats/vhd/format.h"
#include "image.h"

/* Problems that an image can hold millions of (one per BAT entry) are
 * reported for the first REPORT_CAP of each kind; the rest are counted,
 * and one closing finding says how many were left out.
 */
#define REPORT_CAP 100
enum problem_class {
  CLASS_BAT_ENTRY,              /* an entry whose block lies wrong */
  CLASS_BLOCK_OVERLAP,          /* two entries whose blocks overlap */
  CLASS_BLOCK_PAST_SIZE,        /* a block past the copy's current_size */
  N_CLASSES
};
static const char *const class_names[N_CLASSES] = {
  "BAT entries whose blocks lie outside the image data or over metadata",
  "pairs of BAT entries whose blocks overlap",
  "BAT entries past the footer copy's current_size",
};

struct checker {
  const char *path;
  struct vhd_backend *be;
  uint64_t file_size;
  bool repair;
  vhd_check_fn fn;
  void *opaque;
  struct vhd_check_result *result;

  uint8_t trailing_raw[VHD_FOOTER_SIZE], copy_raw[VHD_FOOTER_SIZE];
  bool trailing_ok, copy_ok;
  uint64_t trailing_at;
  struct vhd_footer footer;
  struct vhd_dyn_header header;
  uint64_t metadata_end;        /* end of the last structure in use */
  unsigned shown[N_CLASSES], omitted[N_CLASSES];
  int omitted_kind[N_CLASSES];
};

static void report (struct checker *c, int kind, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static void
count_problem (struct checker *c, int kind)
{
  switch (kind) {
  case VHD_CHECK_CORRUPT: c->result->corruptions++; break;
  case VHD_CHECK_LEAK: c->result->leaks++; break;
  case VHD_CHECK_RECOVERABLE: c->result->recoverable++; break;
  case VHD_CHECK_REPAIRED: c->result->repaired++; break;
  }
}

static void
report (struct checker *c, int kind, const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  count_problem (c, kind);
  if (c->fn) {
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
    c->fn (c->opaque, kind, msg);
  }
}

/* report(), for a problem of a kind that may repeat without bound: past
 * REPORT_CAP of its class it is counted in the result but not shown.
 */
static void report_capped (struct checker *c, enum problem_class cls,
                           int kind, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static void
report_capped (struct checker *c, enum problem_class cls, int kind,
               const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  if (c->shown[cls] >= REPORT_CAP) {
    count_problem (c, kind);
    c->omitted[cls]++;
    c->omitted_kind[cls] = kind;
    return;
  }
  c->shown[cls]++;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  report (c, kind, "%s", msg);
}

/* One closing finding per class whose problems were not all shown.  It is
 * not a problem of its own: the result's counts are left as they are.
 */
static void
report_omitted (struct checker *c)
{
  char msg[256];

  for (int cls = 0; cls < N_CLASSES; cls++) {
    if (c->omitted[cls] == 0 || c->fn == NULL)
      continue;
    snprintf (msg, sizeof msg, "... and %u more problems of this kind (%s)"
              " not shown", c->omitted[cls], class_names[cls]);
    c->fn (c->opaque, c->omitted_kind[cls], msg);
  }
}

static void
read_footers (struct checker *c)
{
  struct vhd_footer f;
  char why[1024] = "";

  if (c->file_size >= VHD_FOOTER_SIZE) {
    c->trailing_at = c->file_size - VHD_FOOTER_SIZE;
    if (vhd_backend_pread_exact (c->be, c->trailing_raw, VHD_FOOTER_SIZE,
                                 c->trailing_at, "footer") == 0) {
      if (memcmp (c->trailing_raw, "conectix", 8) != 0) {
        /* An old writer's 511-byte footer. */
        memset (c->trailing_raw, 0, VHD_FOOTER_SIZE);
        c->trailing_at = c->file_size - (VHD_FOOTER_SIZE - 1);
        vhd_backend_pread_exact (c->be, c->trailing_raw,
                                 VHD_FOOTER_SIZE - 1, c->trailing_at,
                                 "footer");
      }
      c->trailing_ok = vhd_footer_decode (c->trailing_raw, &c->footer,
                                          c->path, c->trailing_at) == 0;
      if (!c->trailing_ok)
        snprintf (why, sizeof why, "%s", vhd_last_error ());
    }
  }
  else
    snprintf (why, sizeof why, "%s: the file is only %" PRIu64 " bytes",
              c->path, c->file_size);

  if (c->file_size >= VHD_FOOTER_SIZE &&
      vhd_backend_pread_exact (c->be, c->copy_raw, VHD_FOOTER_SIZE, 0,
                               "footer copy") == 0 &&
      memcmp (c->copy_raw, "conectix", 8) == 0)
    c->copy_ok = vhd_footer_decode (c->copy_raw, &f, c->path, 0) == 0 &&
                 f.disk_type != VHD_TYPE_FIXED;

  if (!c->trailing_ok && c->copy_ok) {
    /* What a crash while a block was appended leaves: nothing is lost,
     * and the next read-write open (or --repair) puts the footer back.
     */
    report (c, VHD_CHECK_RECOVERABLE, "trailing footer: %s; the copy at"
            " offset 0 is valid, and a read-write open or --repair"
            " restores it", why);
    vhd_footer_decode (c->copy_raw, &c->footer, c->path, 0);
  }
  else if (!c->trailing_ok)
    report (c, VHD_CHECK_CORRUPT, "trailing footer: %s", why);
}

/* Check every BAT entry; returns false if the BAT could not be read. */
static bool
check_bat (struct checker *c, uint64_t data_end)
{
  const struct vhd_dyn_header *h = &c->header;
  uint64_t bat_bytes = vhd_bat_size (h->max_table_entries);
  uint64_t block_bytes = vhd_bitmap_size (h->block_size) + h->block_size;
  uint64_t needed = (c->footer.current_size + h->block_size - 1)
                    / h->block_size;
  struct vhd_block_extent *ext = malloc (h->max_table_entries * sizeof *ext);
  uint8_t *raw = malloc (bat_bytes);
  size_t n = 0;

  if (!ext || !raw ||
      vhd_backend_pread_exact (c->be, raw, bat_bytes, h->table_offset,
                               "BAT") < 0) {
    report (c, VHD_CHECK_CORRUPT, "BAT at offset %" PRIu64 ": %s",
            h->table_offset, ext && raw ? vhd_last_error ()
                                        : "out of memory");
    free (ext);
    free (raw);
    return false;
  }
  for (uint32_t i = 0; i < h->max_table_entries; i++) {
    uint32_t sector = vhd_get_be32 (raw + 4 * (size_t) i);
    uint64_t start = (uint64_t) sector * VHD_SECTOR_SIZE;

    if (sector == VHD_BAT_UNUSED)
      continue;
    if (vhd_validate_block (c->path, h, c->footer.data_offset, data_end, i,
                            sector) < 0) {
      report_capped (c, CLASS_BAT_ENTRY, VHD_CHECK_CORRUPT, "%s",
                     vhd_last_error ());
      continue;
    }
    /* What open refuses too: the size that the copy gives would drop
     * this block (the lost trailing footer said a larger one).
     */
    if (!c->trailing_ok && i >= needed)
      report_capped (c, CLASS_BLOCK_PAST_SIZE, VHD_CHECK_CORRUPT,
                     "BAT entry %" PRIu32 " holds a block past current_size"
                     " %" PRIu64 " of the footer copy at offset 0, and the"
                     " trailing footer is lost: restoring it from the copy"
                     " would drop that block", i, c->footer.current_size);
    ext[n++] = (struct vhd_block_extent) { start, i };
    if (start + block_bytes > c->metadata_end)
      c->metadata_end = start + block_bytes;
  }
  c->result->allocated_blocks = (uint32_t) n;
  vhd_sort_block_extents (ext, n);
  for (size_t i = vhd_next_block_overlap (ext, n, block_bytes, 1); i < n;
       i = vhd_next_block_overlap (ext, n, block_bytes, i + 1))
    report_capped (c, CLASS_BLOCK_OVERLAP, VHD_CHECK_CORRUPT,
                   "BAT entries %" PRIu32 " and %" PRIu32
                   ": their blocks at %" PRIu64 " and %" PRIu64 " overlap",
            ext[i - 1].index, ext[i].index, ext[i - 1].start, ext[i].start);
  free (ext);
  free (raw);
  return true;
}

static void
check_dynamic (struct checker *c)
{
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  struct vhd_dyn_header *h = &c->header;
  uint64_t at = c->footer.data_offset;
  uint64_t data_end;

  if (at > c->file_size || c->file_size - at < VHD_DYN_HEADER_SIZE ||
      at < VHD_FOOTER_SIZE) {
    report (c, VHD_CHECK_CORRUPT, "footer: data_offset %" PRIu64 " does not"
            " point at a dynamic header inside the file", at);
    return;
  }
  if (vhd_backend_pread_exact (c->be, buf, sizeof buf, at,
                               "dynamic header") < 0 ||
      vhd_dyn_header_decode (buf, h, c->path, at) < 0) {
    report (c, VHD_CHECK_CORRUPT, "%s", vhd_last_error ());
    return;
  }
  c->metadata_end = at + VHD_DYN_HEADER_SIZE;
  /* Every structure ends before the trailing footer, where the next block
   * goes (a locator's data past it included), and none overlaps another.
   */
  data_end = c->trailing_ok ? c->trailing_at : c->file_size;
  if (vhd_validate_dyn_layout (c->path, c->file_size, data_end, &c->footer,
                               at, h) < 0) {
    report (c, VHD_CHECK_CORRUPT, "%s", vhd_last_error ());
    return;
  }
  c->metadata_end = vhd_metadata_end (h, at, c->file_size);
  check_bat (c, data_end);
}

/* Compare the two footer copies of a dynamic or differencing disk. */
static void
check_footer_copy (struct checker *c)
{
  if (!c->copy_ok) {
    report (c, VHD_CHECK_CORRUPT, "footer copy at offset 0: missing or"
            " invalid");
    return;
  }
  if (c->trailing_ok &&
      memcmp (c->trailing_raw, c->copy_raw, VHD_FOOTER_SIZE) != 0) {
    struct vhd_footer copy;

    /* Size, type or identity that differ: what open refuses. */
    vhd_footer_decode (c->copy_raw, &copy, c->path, 0);
    if (vhd_validate_footer_copy (c->path, &c->footer, c->trailing_at,
                                  &copy) < 0)
      report (c, VHD_CHECK_CORRUPT, "%s", vhd_last_error ());
    else
      report (c, VHD_CHECK_CORRUPT, "footer copy at offset 0 differs from"
              " the trailing footer at offset %" PRIu64, c->trailing_at);
  }
}

static void
check_parent (struct checker *c, const struct vhd_open_options *options)
{
  struct vhd_open_options o = options ? *options
                                      : (struct vhd_open_options) { 0 };
  vhd_disk *d;

  o.readonly = true;
  o.flags &= ~(uint32_t) VHD_OPEN_FLAG_NO_PARENTS;
  /* With --repair this process holds the image's writer lock itself. */
  if (c->repair)
    o.flags |= VHD_OPEN_FLAG_FORCE_SHARE;
  if (vhd_open (c->path, &o, &d) < 0)
    report (c, VHD_CHECK_CORRUPT, "parent chain: %s", vhd_last_error ());
  else
    vhd_close (d);
}

/* Repairs, each of which only rewrites metadata from a good copy or drops
 * bytes that nothing references.
 */
static void
repair (struct checker *c)
{
  uint64_t end = (c->metadata_end + VHD_SECTOR_SIZE - 1)
                 & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  uint8_t good[VHD_FOOTER_SIZE];

  if (c->result->corruptions != 0)
    return;   /* nothing is repaired while anything is corrupt */

  memcpy (good, c->trailing_ok ? c->trailing_raw : c->copy_raw, sizeof good);
  if (vhd_backend_pwrite_exact (c->be, good, sizeof good, end,
                                "footer") < 0 ||
      vhd_backend_truncate (c->be, end + VHD_FOOTER_SIZE) < 0 ||
      vhd_backend_flush (c->be, true) < 0) {
    report (c, VHD_CHECK_CORRUPT, "repair: writing the footer at offset %"
            PRIu64 ": %s", end, vhd_last_error ());
    return;
  }
  if (!c->trailing_ok)
    report (c, VHD_CHECK_REPAIRED, "restored the trailing footer at offset %"
            PRIu64 " from the copy at offset 0", end);
  if (c->result->leaked_bytes)
    report (c, VHD_CHECK_REPAIRED, "truncated %" PRIu64 " leaked bytes at"
            " the end of the file", c->result->leaked_bytes);
  c->result->recoverable = 0;
  c->result->leaks = 0;
}

static void
close_backend (struct vhd_backend **be)
{
  vhd_backend_close (*be);
}

int
vhd_check (const char *path, const struct vhd_open_options *options,
           uint32_t flags, vhd_check_fn fn, void *opaque,
           struct vhd_check_result *result)
{
  struct checker c = {
    .path = path, .repair = flags & VHD_CHECK_REPAIR, .fn = fn,
    .opaque = opaque, .result = result,
  };
  __attribute__ ((cleanup (close_backend))) struct vhd_backend *be = NULL;
  int fd, r;

  memset (result, 0, sizeof *result);
  /* No FIFO or device blocks the open (backend/file-open.c); locked as
   * any reader or writer is, unless force-share.
   */
  fd = vhd_file_open (path, c.repair ? O_RDWR : O_RDONLY);
  if (fd < 0)
    return fd;
  c.be = be = vhd_backend_file_new (fd, path);
  if (be == NULL)
    return -ENOMEM;
  if (c.repair)
    r = vhd_backend_lock (be, true);
  else if (options && (options->flags & VHD_OPEN_FLAG_FORCE_SHARE))
    r = 0;
  else
    r = vhd_backend_lock (be, false);
  if (r < 0)
    return r;
  r = vhd_backend_get_size (be, &c.file_size);
  if (r < 0)
    return r;

  read_footers (&c);
  if (!c.trailing_ok && !c.copy_ok) {
    report (&c, VHD_CHECK_CORRUPT, "no valid footer: nothing else can be"
            " checked");
    return 0;
  }
  result->disk_type = c.footer.disk_type;
  if (c.footer.disk_type == VHD_TYPE_FIXED) {
    if (c.trailing_at < c.footer.current_size)
      report (&c, VHD_CHECK_CORRUPT, "footer: current_size %" PRIu64
              " is larger than the %" PRIu64 " bytes of data in the file",
              c.footer.current_size, c.trailing_at);
    return 0;
  }

  check_footer_copy (&c);
  check_dynamic (&c);
  /* Less than a block between the last structure and the footer is
   * alignment padding; a whole block is an allocation that a crash
   * interrupted before the BAT entry was written.
   */
  if (c.trailing_ok && c.metadata_end && c.trailing_at > c.metadata_end &&
      c.trailing_at - c.metadata_end >= vhd_bitmap_size (c.header.block_size)
                                        + (uint64_t) c.header.block_size) {
    result->leaked_bytes = c.trailing_at - c.metadata_end;
    report (&c, VHD_CHECK_LEAK, "%" PRIu64 " bytes between offset %" PRIu64
            " and the trailing footer belong to no block (left by an"
            " interrupted allocation)", result->leaked_bytes,
            c.metadata_end);
  }
  if (c.footer.disk_type == VHD_TYPE_DIFFERENCING && result->corruptions == 0)
    check_parent (&c, options);
  report_omitted (&c);
  if (c.repair && (result->corruptions || result->leaks ||
                   result->recoverable))
    repair (&c);
  return 0;
}

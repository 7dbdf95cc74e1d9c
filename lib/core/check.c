/* vhdkit: check an image's structure, and repair what can be repaired
 * without losing data (vhdtool check [--repair]).
 *
 * The image is walked by the same scanner as vhd_open uses
 * (formats/vhd/scan.c), told to go on past each problem, so that every
 * problem is reported (with its field and offset) instead of the first
 * one that makes an open fail.  What is left here: the report (counts,
 * caps on problems that repeat per BAT entry), the leak at the end, the
 * parent chain, and the repairs.
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
#include "formats/vhd/scan.h"
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
  bool repair;
  vhd_check_fn fn;
  void *opaque;
  struct vhd_check_result *result;

  struct vhd_scan scan;         /* what the walk found */
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

/* The scanner's callback: every problem is reported, and the walk goes
 * on.  Two kinds of block problems are worded here in check's own terms
 * (one line per BAT entry, the file named once by the caller).
 */
static int
on_problem (void *opaque, const struct vhd_scan_report *rep)
{
  struct checker *c = opaque;

  switch (rep->problem) {
  case VHD_SCAN_BAT_ENTRY:
    report_capped (c, CLASS_BAT_ENTRY, rep->kind, "%s", rep->msg);
    break;
  case VHD_SCAN_BLOCK_OVERLAP:
    report_capped (c, CLASS_BLOCK_OVERLAP, rep->kind, "BAT entries %" PRIu32
                   " and %" PRIu32 ": their blocks at %" PRIu64 " and %"
                   PRIu64 " overlap", rep->entry[0], rep->entry[1],
                   rep->start[0], rep->start[1]);
    break;
  case VHD_SCAN_BLOCK_PAST_SIZE:
    /* What open refuses too: the size that the copy gives would drop
     * this block (the lost trailing footer said a larger one).
     */
    report_capped (c, CLASS_BLOCK_PAST_SIZE, rep->kind, "BAT entry %" PRIu32
                   " holds a block past current_size %" PRIu64 " of the"
                   " footer copy at offset 0, and the trailing footer is"
                   " lost: restoring it from the copy would drop that"
                   " block", rep->entry[0], c->scan.footer.current_size);
    break;
  default:
    report (c, rep->kind, "%s", rep->msg);
    break;
  }
  return 0;
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
  uint64_t end = (c->scan.metadata_end + VHD_SECTOR_SIZE - 1)
                 & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  uint8_t good[VHD_FOOTER_SIZE];

  if (c->result->corruptions != 0)
    return;   /* nothing is repaired while anything is corrupt */

  /* The trailing footer when it is good, else the copy at offset 0. */
  memcpy (good, c->scan.footer_raw, sizeof good);
  if (vhd_backend_pwrite_exact (c->be, good, sizeof good, end,
                                "footer") < 0 ||
      vhd_backend_truncate (c->be, end + VHD_FOOTER_SIZE) < 0 ||
      vhd_backend_flush (c->be, true) < 0) {
    report (c, VHD_CHECK_CORRUPT, "repair: writing the footer at offset %"
            PRIu64 ": %s", end, vhd_last_error ());
    return;
  }
  if (c->scan.footer_from_copy)
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
  r = vhd_backend_get_size (be, &c.scan.file_size);
  if (r < 0)
    return r;

  c.scan.path = path;
  c.scan.be = be;
  c.scan.report = on_problem;
  c.scan.opaque = &c;
  r = vhd_scan_image (&c.scan);
  free (c.scan.bat);
  if (r < 0 || !c.scan.footer_ok)
    return r;
  result->disk_type = c.scan.footer.disk_type;
  if (c.scan.footer.disk_type == VHD_TYPE_FIXED)
    return 0;
  if (c.scan.bat_ok)
    result->allocated_blocks = c.scan.allocated_blocks;

  /* Less than a block between the last structure and the footer is
   * alignment padding; a whole block is an allocation that a crash
   * interrupted before the BAT entry was written.
   */
  if (!c.scan.footer_from_copy && c.scan.metadata_end &&
      c.scan.footer_offset > c.scan.metadata_end &&
      c.scan.footer_offset - c.scan.metadata_end
        >= vhd_bitmap_size (c.scan.header.block_size)
           + (uint64_t) c.scan.header.block_size) {
    result->leaked_bytes = c.scan.footer_offset - c.scan.metadata_end;
    report (&c, VHD_CHECK_LEAK, "%" PRIu64 " bytes between offset %" PRIu64
            " and the trailing footer belong to no block (left by an"
            " interrupted allocation)", result->leaked_bytes,
            c.scan.metadata_end);
  }
  if (c.scan.footer.disk_type == VHD_TYPE_DIFFERENCING &&
      result->corruptions == 0)
    check_parent (&c, options);
  report_omitted (&c);
  if (c.repair && (result->corruptions || result->leaks ||
                   result->recoverable))
    repair (&c);
  return 0;
}

/* vhdkit: the VHD driver's part of vhd_check: the scan told to go on
 * past every problem, the space leaked at the end, and the repairs
 * (core/check.c keeps the report and the parent chain).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/driver.h"
#include "formats/vhd/format.h"
#include "formats/vhd/scan.h"
#include "formats/vhd/vhd.h"

/* The classes of problems that can repeat once per BAT entry. */
enum {
  CLASS_BAT_ENTRY = 1,          /* an entry whose block lies wrong */
  CLASS_BLOCK_OVERLAP,          /* two entries whose blocks overlap */
  CLASS_BLOCK_PAST_SIZE,        /* a block past the copy's current_size */
};

static void report (struct vhd_check_walk *w, int kind, unsigned cls,
                    const char *cls_name, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6)));

static void
report (struct vhd_check_walk *w, int kind, unsigned cls,
        const char *cls_name, const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  w->problem (w, kind, cls, cls_name, msg);
}

/* The scanner's callback: every problem is reported, and the walk goes
 * on.  Two kinds of block problems are worded here in check's own terms
 * (one line per BAT entry, the file named once by the caller).
 */
static int
on_problem (void *opaque, const struct vhd_scan_report *rep)
{
  struct vhd_check_walk *w = opaque;
  const struct vhd_scan *s = w->state;

  switch (rep->problem) {
  case VHD_SCAN_BAT_ENTRY:
    report (w, rep->kind, CLASS_BAT_ENTRY, "BAT entries whose blocks lie"
            " outside the image data or over metadata", "%s", rep->msg);
    break;
  case VHD_SCAN_BLOCK_OVERLAP:
    report (w, rep->kind, CLASS_BLOCK_OVERLAP, "pairs of BAT entries whose"
            " blocks overlap", "BAT entries %" PRIu32 " and %" PRIu32
            ": their blocks at %" PRIu64 " and %" PRIu64 " overlap",
            rep->entry[0], rep->entry[1], rep->start[0], rep->start[1]);
    break;
  case VHD_SCAN_BLOCK_PAST_SIZE:
    /* What open refuses too: the size that the copy gives would drop
     * this block (the lost trailing footer said a larger one).
     */
    report (w, rep->kind, CLASS_BLOCK_PAST_SIZE, "BAT entries past the"
            " footer copy's current_size", "BAT entry %" PRIu32 " holds a"
            " block past current_size %" PRIu64 " of the footer copy at"
            " offset 0, and the trailing footer is lost: restoring it from"
            " the copy would drop that block", rep->entry[0],
            s->footer.current_size);
    break;
  default:
    report (w, rep->kind, 0, NULL, "%s", rep->msg);
    break;
  }
  return 0;
}

int
vhd_vhd_check (struct vhd_check_walk *w)
{
  struct vhd_scan *s = calloc (1, sizeof *s);
  int r;

  if (s == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", w->path);
  *s = (struct vhd_scan) {
    .path = w->path, .be = w->be, .file_size = w->file_size,
    .report = on_problem, .opaque = w,
  };
  w->state = s;
  r = vhd_scan_image (s);
  free (s->bat);
  s->bat = NULL;
  if (r < 0 || !s->footer_ok)
    return r;
  w->identified = true;
  w->disk_type = s->footer.disk_type;
  if (s->footer.disk_type == VHD_TYPE_FIXED)
    return 0;
  if (s->bat_ok)
    w->allocated_blocks = s->allocated_blocks;

  /* Less than a block between the last structure and the footer is
   * alignment padding; a whole block is an allocation that a crash
   * interrupted before the BAT entry was written.
   */
  if (!s->footer_from_copy && s->metadata_end &&
      s->footer_offset > s->metadata_end &&
      s->footer_offset - s->metadata_end
        >= vhd_bitmap_size (s->header.block_size)
           + (uint64_t) s->header.block_size) {
    w->leaked_bytes = s->footer_offset - s->metadata_end;
    report (w, VHD_CHECK_LEAK, 0, NULL, "%" PRIu64 " bytes between offset %"
            PRIu64 " and the trailing footer belong to no block (left by an"
            " interrupted allocation)", w->leaked_bytes, s->metadata_end);
  }
  w->has_parent = s->footer.disk_type == VHD_TYPE_DIFFERENCING;
  return 0;
}

/* Repairs, each of which only rewrites metadata from a good copy or drops
 * bytes that nothing references: the good footer (the trailing one, else
 * the copy at offset 0) goes right after the last structure or block.
 */
int
vhd_vhd_repair (struct vhd_check_walk *w)
{
  const struct vhd_scan *s = w->state;
  uint64_t end = (s->metadata_end + VHD_SECTOR_SIZE - 1)
                 & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  uint8_t good[VHD_FOOTER_SIZE];

  memcpy (good, s->footer_raw, sizeof good);
  if (vhd_backend_pwrite_exact (w->be, good, sizeof good, end,
                                "footer") < 0 ||
      vhd_backend_truncate (w->be, end + VHD_FOOTER_SIZE) < 0 ||
      vhd_backend_flush (w->be, true) < 0) {
    report (w, VHD_CHECK_CORRUPT, 0, NULL, "repair: writing the footer at"
            " offset %" PRIu64 ": %s", end, vhd_last_error ());
    return -EIO;
  }
  if (s->footer_from_copy)
    report (w, VHD_CHECK_REPAIRED, 0, NULL, "restored the trailing footer"
            " at offset %" PRIu64 " from the copy at offset 0", end);
  if (w->leaked_bytes)
    report (w, VHD_CHECK_REPAIRED, 0, NULL, "truncated %" PRIu64 " leaked"
            " bytes at the end of the file", w->leaked_bytes);
  return 0;
}

void
vhd_vhd_check_done (struct vhd_check_walk *w)
{
  free (w->state);
  w->state = NULL;
}

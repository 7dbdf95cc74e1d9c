/* vhdkit: the VHDX driver's part of vhd_check.
 *
 * The walk is the open's own scan (scan.c), run read-only: a structure
 * that open refuses is reported as corrupt, with the scan's message.  A
 * log with entries to replay is recoverable (nothing is lost: the next
 * read-write open replays it, as Windows does), and the rest of the
 * image is checked as the replay would leave it.  Repair replays the log
 * into the file.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/driver.h"
#include "formats/vhdx/vhdx.h"

/* A disk for one scan of the walk's storage (not owned). */
static void
scan_disk_init (struct vhd_disk *d, struct vhd_check_walk *w, bool readonly)
{
  memset (d, 0, sizeof *d);
  d->path = (char *) w->path;
  d->be = w->be;
  d->readonly = readonly;
  d->file_size = w->file_size;
  d->file_end = w->file_size;
  d->max_metadata_bytes = VHD_DEFAULT_MAX_METADATA_BYTES;
  d->ops = &vhd_format_vhdx;
}

/* Release what a scan kept, and give the walk's storage back from under
 * an overlay.
 */
static void
scan_disk_fini (struct vhd_disk *d, struct vhdx_image *img)
{
  vhd_backend_overlay_release (d->be);
  vhdx_parent_link_free (&img->link);
  free (img->bat);
  free (img);
}

int
vhdx_check (struct vhd_check_walk *w)
{
  struct vhdx_image *img = calloc (1, sizeof *img);
  struct vhd_disk d;
  int r;

  if (img == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", w->path);
  scan_disk_init (&d, w, true);
  d.fmt = img;
  r = vhdx_scan_image (&d, img);
  /* Identified: it has the file type identifier; the rest is checked. */
  w->identified = img->identified;
  if (r < 0)
    w->problem (w, VHD_CHECK_CORRUPT, 0, NULL, vhd_last_error ());
  else {
    w->disk_type = img->kind == VHDX_KIND_FIXED ? VHD_TYPE_FIXED
                   : img->kind == VHDX_KIND_DYNAMIC ? VHD_TYPE_DYNAMIC
                   : VHD_TYPE_DIFFERENCING;
    w->has_parent = img->kind == VHDX_KIND_DIFFERENCING;
    w->allocated_blocks = img->allocated_blocks;
  }
  if (img->log_replayed) {
    char msg[512];
    snprintf (msg, sizeof msg, "the log holds %" PRIu32 " entr%s (sequence"
              " %" PRIu64 " to %" PRIu64 ") not yet replayed: a read-write"
              " open replays them, as `vhdtool check --repair` does",
              img->replayed.entry_count,
              img->replayed.entry_count == 1 ? "y" : "ies",
              img->replayed.first_sequence, img->replayed.last_sequence);
    w->problem (w, VHD_CHECK_RECOVERABLE, 0, NULL, msg);
  }
  w->state = (void *) (uintptr_t) img->log_replayed;
  scan_disk_fini (&d, img);
  return 0;
}

/* Replay the log into the file (the check found it recoverable). */
int
vhdx_repair (struct vhd_check_walk *w)
{
  struct vhdx_image *img;
  struct vhd_disk d;
  int r;

  if (w->state == NULL)
    return 0;
  img = calloc (1, sizeof *img);
  if (img == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", w->path);
  scan_disk_init (&d, w, false);
  d.fmt = img;
  r = vhdx_scan_image (&d, img);
  if (r == 0 && img->log_replayed) {
    char msg[512];
    snprintf (msg, sizeof msg, "replayed the log's %" PRIu32 " entr%s",
              img->replayed.entry_count,
              img->replayed.entry_count == 1 ? "y" : "ies");
    w->problem (w, VHD_CHECK_REPAIRED, 0, NULL, msg);
  }
  scan_disk_fini (&d, img);
  return r;
}

void
vhdx_check_done (struct vhd_check_walk *w)
{
  w->state = NULL;
}

/* vhdkit: check an image's structure, and repair what can be repaired
 * without losing data (vhdtool check [--repair]).
 *
 * The format's driver walks the image (for VHD, the same scanner as
 * vhd_open uses, told to go on past each problem: formats/vhd/check.c),
 * so that every problem is reported (with its field and offset) instead
 * of the first one that makes an open fail.  Here: the report (counts,
 * caps on problems that repeat per table entry), the parent chain, and
 * the decision to repair.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/abi.h"
#include "backend/backend.h"
#include "backend/file.h"
#include "driver.h"
#include "image.h"

/* Problems that an image can hold millions of (one per table entry) are
 * reported for the first REPORT_CAP of each class; the rest are counted,
 * and one closing finding says how many were left out.
 */
#define REPORT_CAP 100

struct checker {
  const char *path;
  struct vhd_backend *be;
  bool repair;
  vhd_check_fn fn;
  void *opaque;
  struct vhd_check_result *result;

  struct vhd_check_walk walk;    /* what the driver found */
  unsigned shown[VHD_CHECK_CLASSES], omitted[VHD_CHECK_CLASSES];
  int omitted_kind[VHD_CHECK_CLASSES];
  const char *class_names[VHD_CHECK_CLASSES];
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
static void
report_capped (struct checker *c, unsigned cls, int kind, const char *msg)
{
  if (c->shown[cls] >= REPORT_CAP) {
    count_problem (c, kind);
    c->omitted[cls]++;
    c->omitted_kind[cls] = kind;
    return;
  }
  c->shown[cls]++;
  report (c, kind, "%s", msg);
}

/* The driver's findings (struct vhd_check_walk). */
static void
on_problem (struct vhd_check_walk *w, int kind, unsigned cls,
            const char *cls_name, const char *msg)
{
  struct checker *c = w->opaque;

  if (cls == 0 || cls >= VHD_CHECK_CLASSES) {
    report (c, kind, "%s", msg);
    return;
  }
  c->class_names[cls] = cls_name;
  report_capped (c, cls, kind, msg);
}

/* One closing finding per class whose problems were not all shown.  It is
 * not a problem of its own: the result's counts are left as they are.
 */
static void
report_omitted (struct checker *c)
{
  char msg[256];

  for (int cls = 1; cls < VHD_CHECK_CLASSES; cls++) {
    if (c->omitted[cls] == 0 || c->fn == NULL)
      continue;
    snprintf (msg, sizeof msg, "... and %u more problems of this kind (%s)"
              " not shown", c->omitted[cls], c->class_names[cls]);
    c->fn (c->opaque, c->omitted_kind[cls], msg);
  }
}

/* Open the image with its chain.  Returns 0, or -ENOENT (with the
 * message set) when the parent is not found: that is no damage to this
 * image (the parent was moved, or lives in a folder not allowed), so it
 * is not reported as corruption; the check could not be finished, and
 * says so.  Any other failure is a finding, as before.
 */
static int
check_parent (struct checker *c, const struct vhd_open_options *options)
{
  struct vhd_open_options o = options ? *options
                                      : (struct vhd_open_options) { 0 };
  vhd_disk *d;
  char why[2048];
  int r;

  o.readonly = true;
  o.flags &= ~(uint32_t) VHD_OPEN_FLAG_NO_PARENTS;
  /* With --repair this process holds the image's writer lock itself. */
  if (c->repair)
    o.flags |= VHD_OPEN_FLAG_FORCE_SHARE;
  r = vhd_open (c->path, &o, &d);
  if (r == -ENOENT) {
    /* vhd_error formats into the buffer that holds the cause. */
    snprintf (why, sizeof why, "%s", vhd_last_error ());
    return vhd_error (ENOENT, "%s: cannot check: parent not found: %s",
                      c->path, why);
  }
  if (r < 0)
    report (c, VHD_CHECK_CORRUPT, "parent chain: %s", vhd_last_error ());
  else
    vhd_close (d);
  return 0;
}

/* Repairs, each of which only rewrites metadata from a good copy or drops
 * bytes that nothing references: the driver's, and never while anything
 * is corrupt.
 */
static void
repair (struct checker *c, const struct vhd_format_ops *ops)
{
  if (c->result->corruptions != 0)
    return;
  if (ops->repair (&c->walk) < 0)
    return;
  c->result->recoverable = 0;
  c->result->leaks = 0;
}

static void
close_backend (struct vhd_backend **be)
{
  vhd_backend_close (*be);
}

/* vhd_check with the caller's structs taken in at this library's size. */
static int
check_image (const char *path, const struct vhd_open_options *options,
             uint32_t flags, vhd_check_fn fn, void *opaque,
             struct vhd_check_result *result)
{
  struct checker c = {
    .path = path, .repair = flags & VHD_CHECK_REPAIR, .fn = fn,
    .opaque = opaque, .result = result,
  };
  __attribute__ ((cleanup (close_backend))) struct vhd_backend *be = NULL;
  const struct vhd_format_ops *ops;
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
  r = vhd_backend_get_size (be, &c.walk.file_size);
  if (r < 0)
    return r;

  ops = vhd_format_for_image (be);
  c.walk.path = path;
  c.walk.be = be;
  c.walk.problem = on_problem;
  c.walk.opaque = &c;
  r = ops->check (&c.walk);
  if (r < 0 || !c.walk.identified)
    goto done;
  result->disk_type = c.walk.disk_type;
  result->allocated_blocks = c.walk.allocated_blocks;
  result->leaked_bytes = c.walk.leaked_bytes;
  /* Nothing is repaired in an image whose chain is not all there. */
  if (c.walk.has_parent && result->corruptions == 0) {
    r = check_parent (&c, options);
    if (r < 0)
      goto done;
  }
  report_omitted (&c);
  if (c.repair && (result->corruptions || result->leaks ||
                   result->recoverable))
    repair (&c, ops);
 done:
  ops->check_done (&c.walk);
  return r;
}

int
vhd_check_sized (const char *path,
                 const struct vhd_open_options *options_in,
                 size_t options_size, uint32_t flags,
                 vhd_check_fn fn, void *opaque,
                 struct vhd_check_result *result_out, size_t result_size)
{
  struct vhd_open_options options;
  struct vhd_check_result result = { 0 };
  int r;

  if (result_out == NULL || result_size < VHD_CHECK_RESULT_SIZE_0_1)
    return vhd_error (EINVAL, "vhd_check: result is NULL or smaller than"
                      " the first vhd_check_result");
  memset (result_out, 0, result_size);
  r = vhd_import_open_options (&options, options_in, options_size,
                               "vhd_check");
  if (r < 0)
    return r;
  r = check_image (path, &options, flags, fn, opaque, &result);
  vhd_export_result (result_out, result_size, &result, sizeof result);
  return r;
}

int
(vhd_check) (const char *path, const struct vhd_open_options *options,
             uint32_t flags, vhd_check_fn fn, void *opaque,
             struct vhd_check_result *result)
{
  return vhd_check_sized (path, options, VHD_OPEN_OPTIONS_SIZE_0_1, flags,
                          fn, opaque, result, VHD_CHECK_RESULT_SIZE_0_1);
}

/* vhdkit: the overlay backend: an image's storage as it would read after
 * a log replay, without writing to it.
 *
 * A VHDX image whose log holds an active sequence must be read as if the
 * log had been replayed ([MS-VHDX] 2.3.3), but a read-only open must not
 * change the file (a crash oracle, a read-only server, vhdtool info on a
 * file the user only wants to look at).  The driver replays into this
 * backend instead: it records each write and zero of the replay, in
 * order, over the backend below, and every read is the lower storage's
 * bytes with the recorded changes laid over them, later changes winning.
 * Bytes past the lower storage's end, up to the size the replay set
 * (LastFileOffset), read as zeros, as they would in an extended file.
 *
 * A log holds at most a few thousand updates, and only reads of the
 * ranges they touch pay for them: the whole set's bounds are checked
 * first.  The overlay is read-only: writes, zero, punch and truncate fail
 * with EROFS.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/error.h"

/* One recorded change: data (len bytes) at offset, or zeros when data is
 * NULL.
 */
struct overlay_change {
  uint64_t offset, len;
  uint8_t *data;
};

struct overlay_state {
  struct vhd_backend *lower;
  uint64_t lower_size;
  uint64_t size;                /* as the replay left it: >= lower_size */
  struct overlay_change *changes;
  size_t n, capacity;
  uint64_t lo, hi;              /* bounds of every change */
};

static const struct vhd_backend_ops overlay_ops;

static struct overlay_state *
state_of (const struct vhd_backend *be)
{
  return be->opaque;
}

/* Lay the changes over [offset, offset+len) of buf, which holds the
 * lower storage's bytes (zeros past its end).
 */
static void
apply_changes (const struct overlay_state *st, uint8_t *buf, uint64_t len,
               uint64_t offset)
{
  uint64_t end = offset + len;

  if (end <= st->lo || offset >= st->hi)
    return;
  for (size_t i = 0; i < st->n; i++) {
    const struct overlay_change *c = &st->changes[i];
    uint64_t from = c->offset > offset ? c->offset : offset;
    uint64_t to = c->offset + c->len < end ? c->offset + c->len : end;

    if (from >= to)
      continue;
    if (c->data)
      memcpy (buf + (from - offset), c->data + (from - c->offset),
              to - from);
    else
      memset (buf + (from - offset), 0, to - from);
  }
}

/* Read from the lower storage what it has of the range, zeros past its
 * end, then the changes.
 */
static int
overlay_read (struct vhd_backend *be, uint8_t *buf, uint64_t len,
              uint64_t offset, const char *what)
{
  struct overlay_state *st = state_of (be);
  uint64_t below = 0;
  int r;

  if (offset > st->size || len > st->size - offset)
    return vhd_error (EIO, "%s: reading %s%s%" PRIu64 " bytes at offset %"
                      PRIu64 ": past the end of the file (%" PRIu64
                      " bytes after the log replay)", be->name,
                      what ? "the " : "", what ? what : "", len, offset,
                      st->size);
  if (offset < st->lower_size)
    below = st->lower_size - offset < len ? st->lower_size - offset : len;
  if (below > 0) {
    struct vhd_segment s = {
      .be = st->lower, .file_offset = offset, .length = below, .buf = buf,
    };
    r = st->lower->ops->run (&s, 1, false);
    if (r < 0)
      return r;
  }
  memset (buf + below, 0, len - below);
  apply_changes (st, buf, len, offset);
  return 0;
}

static int
overlay_run (struct vhd_segment *segs, size_t n, bool write)
{
  for (size_t i = 0; i < n; i++) {
    int r;

    if (segs[i].be == NULL) {
      memset (segs[i].buf, 0, segs[i].length);
      continue;
    }
    if (write)
      return vhd_error (EROFS, "%s: the image is read with its log replayed"
                        " in memory, and cannot be written",
                        segs[i].be->name);
    r = overlay_read (segs[i].be, segs[i].buf, segs[i].length,
                      segs[i].file_offset, NULL);
    if (r < 0)
      return r;
  }
  return 0;
}

static int
overlay_pread_exact (struct vhd_backend *be, void *buf, size_t count,
                     uint64_t offset, const char *what)
{
  return overlay_read (be, buf, count, offset, what);
}

static int
overlay_refuse (struct vhd_backend *be)
{
  return vhd_error (EROFS, "%s: the image is read with its log replayed in"
                    " memory, and cannot be written", be->name);
}

static int
overlay_pwrite_exact (struct vhd_backend *be, const void *buf, size_t count,
                      uint64_t offset, const char *what)
{
  return overlay_refuse (be);
}

static int
overlay_flush (struct vhd_backend *be, bool metadata)
{
  return 0;                     /* nothing is ever written */
}

static int
overlay_range (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  return overlay_refuse (be);
}

static int
overlay_get_size (struct vhd_backend *be, uint64_t *size)
{
  *size = state_of (be)->size;
  return 0;
}

static int
overlay_truncate (struct vhd_backend *be, uint64_t size)
{
  return overlay_refuse (be);
}

static int
overlay_lock (struct vhd_backend *be, bool writer)
{
  if (writer)
    return overlay_refuse (be);
  return vhd_backend_lock (state_of (be)->lower, false);
}

static void
overlay_writeback (struct vhd_backend *be)
{
}

static void
overlay_close (struct vhd_backend *be)
{
  struct overlay_state *st = state_of (be);

  if (st == NULL)
    return;
  for (size_t i = 0; i < st->n; i++)
    free (st->changes[i].data);
  free (st->changes);
  if (st->lower)
    vhd_backend_close (st->lower);
  free (st);
}

static const struct vhd_backend_ops overlay_ops = {
  .run = overlay_run,
  .pread_exact = overlay_pread_exact,
  .pwrite_exact = overlay_pwrite_exact,
  .flush = overlay_flush,
  .zero = overlay_range,
  .punch = overlay_range,
  .get_size = overlay_get_size,
  .truncate = overlay_truncate,
  .lock = overlay_lock,
  .writeback = overlay_writeback,
  .close = overlay_close,
};

int
vhd_backend_overlay_new (struct vhd_backend *lower,
                         struct vhd_backend **out)
{
  struct overlay_state *st;
  struct vhd_backend *be;
  int r;

  st = calloc (1, sizeof *st);
  if (st == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", lower->name);
  r = vhd_backend_get_size (lower, &st->lower_size);
  if (r < 0) {
    free (st);
    return r;
  }
  st->size = st->lower_size;
  st->lo = UINT64_MAX;
  be = vhd_backend_new (&overlay_ops, st, lower->name, false);
  if (be == NULL) {
    free (st);
    return -ENOMEM;
  }
  st->lower = lower;
  *out = be;
  return 0;
}

static int
add_change (struct vhd_backend *be, uint64_t offset, uint64_t len,
            uint8_t *data)
{
  struct overlay_state *st = state_of (be);

  if (offset > UINT64_MAX - len)
    return vhd_error (EINVAL, "%s: a replayed change at offset %" PRIu64
                      " of %" PRIu64 " bytes overflows", be->name, offset,
                      len);
  if (st->n == st->capacity) {
    size_t cap = st->capacity ? st->capacity * 2 : 64;
    struct overlay_change *c = realloc (st->changes, cap * sizeof *c);
    if (c == NULL)
      return vhd_error (ENOMEM, "%s: out of memory for the log replay",
                        be->name);
    st->changes = c;
    st->capacity = cap;
  }
  st->changes[st->n++] = (struct overlay_change) {
    .offset = offset, .len = len, .data = data,
  };
  if (offset < st->lo)
    st->lo = offset;
  if (offset + len > st->hi)
    st->hi = offset + len;
  if (offset + len > st->size)
    st->size = offset + len;
  return 0;
}

int
vhd_backend_overlay_write (struct vhd_backend *be, const void *buf,
                           size_t len, uint64_t offset)
{
  uint8_t *copy;
  int r;

  if (be->ops != &overlay_ops)
    return vhd_error (EINVAL, "%s: not an overlay", be->name);
  if (len == 0)
    return 0;
  copy = malloc (len);
  if (copy == NULL)
    return vhd_error (ENOMEM, "%s: out of memory for the log replay",
                      be->name);
  memcpy (copy, buf, len);
  r = add_change (be, offset, len, copy);
  if (r < 0)
    free (copy);
  return r;
}

int
vhd_backend_overlay_zero (struct vhd_backend *be, uint64_t offset,
                          uint64_t len)
{
  if (be->ops != &overlay_ops)
    return vhd_error (EINVAL, "%s: not an overlay", be->name);
  return len ? add_change (be, offset, len, NULL) : 0;
}

int
vhd_backend_overlay_extend (struct vhd_backend *be, uint64_t size)
{
  struct overlay_state *st;

  if (be->ops != &overlay_ops)
    return vhd_error (EINVAL, "%s: not an overlay", be->name);
  st = state_of (be);
  if (size > st->size)
    st->size = size;
  return 0;
}

const struct vhd_backend *
vhd_backend_overlay_lower (const struct vhd_backend *be)
{
  return be && be->ops == &overlay_ops ? state_of (be)->lower : NULL;
}

struct vhd_backend *
vhd_backend_overlay_release (struct vhd_backend *be)
{
  struct overlay_state *st;
  struct vhd_backend *lower;

  if (be == NULL || be->ops != &overlay_ops)
    return be;
  st = state_of (be);
  lower = st->lower;
  st->lower = NULL;
  vhd_backend_close (be);       /* overlay_close: lower is not closed */
  return lower;
}

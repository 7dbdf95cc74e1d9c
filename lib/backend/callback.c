/* vhdkit: the callback backend: storage that the caller reaches (the
 * nbdkit filter's plugin below it), through vhd_backend_callbacks.
 *
 * The storage has the size it has (an nbdkit plugin cannot be asked to
 * grow), so can_grow is false; there is no lock to take; zero and punch
 * map onto the caller's zero callback when there is one.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/error.h"
#include "vhdkit.h"

struct callback_state {
  struct vhd_backend_callbacks cb;      /* the fields the caller's size
                                         * covered; the rest NULL */
  void *opaque;
};

static struct callback_state *
state_of (struct vhd_backend *be)
{
  return be->opaque;
}

/* A callback's answer: 0, or -errno with a message naming the storage.
 * A positive value or 0-errno from a careless caller is an EIO.
 */
static int
callback_result (struct vhd_backend *be, int r, const char *op,
                 uint64_t count, uint64_t offset, const char *what)
{
  if (r == 0)
    return 0;
  if (r > 0 || r < -4095)
    r = -EIO;
  return vhd_error (-r, "%s: %s%s%s of %" PRIu64 " bytes at offset %"
                    PRIu64 ": %s", be->name, op, what ? " of the " : "",
                    what ? what : "", count, offset, strerror (-r));
}

/* One transfer, in pieces a caller's size_t (and an NBD request) can
 * take.
 */
#define MAX_PIECE (UINT32_C (1) << 30)

static int
transfer (struct vhd_backend *be, void *buf, uint64_t count, uint64_t offset,
          bool write, const char *what)
{
  struct callback_state *st = state_of (be);
  uint8_t *p = buf;

  while (count > 0) {
    size_t n = count < MAX_PIECE ? (size_t) count : MAX_PIECE;
    int r = write ? st->cb.pwrite (st->opaque, p, n, offset)
                  : st->cb.pread (st->opaque, p, n, offset);
    r = callback_result (be, r, write ? "write" : "read", n, offset, what);
    if (r < 0)
      return r;
    p += n;
    offset += n;
    count -= n;
  }
  return 0;
}

static int
callback_run (struct vhd_segment *segs, size_t n, bool write)
{
  for (size_t i = 0; i < n; i++) {
    int r;
    if (segs[i].be == NULL) {
      memset (segs[i].buf, 0, segs[i].length);
      continue;
    }
    r = transfer (segs[i].be, segs[i].buf, segs[i].length,
                  segs[i].file_offset, write, NULL);
    if (r < 0)
      return r;
  }
  return 0;
}

static int
callback_pread_exact (struct vhd_backend *be, void *buf, size_t count,
                      uint64_t offset, const char *what)
{
  return transfer (be, buf, count, offset, false, what);
}

static int
callback_pwrite_exact (struct vhd_backend *be, const void *buf, size_t count,
                       uint64_t offset, const char *what)
{
  return transfer (be, (void *) buf, count, offset, true, what);
}

static int
callback_flush (struct vhd_backend *be, bool metadata)
{
  struct callback_state *st = state_of (be);
  int r;

  (void) metadata;              /* the storage's flush covers both */
  r = st->cb.flush (st->opaque);
  if (r == 0)
    return 0;
  if (r > 0 || r < -4095)
    r = -EIO;
  return vhd_error (-r, "%s: flush: %s", be->name, strerror (-r));
}

static int
callback_zero_flags (struct vhd_backend *be, uint64_t offset, uint64_t len,
                     unsigned flags)
{
  struct callback_state *st = state_of (be);

  if (st->cb.zero == NULL)
    return -EOPNOTSUPP;
  while (len > 0) {
    size_t n = len < MAX_PIECE ? (size_t) len : MAX_PIECE;
    int r = st->cb.zero (st->opaque, n, offset, flags);
    if (r == -ENOTSUP || r == -EOPNOTSUPP)
      return -EOPNOTSUPP;
    r = callback_result (be, r, "zero", n, offset, NULL);
    if (r < 0)
      return r;
    offset += n;
    len -= n;
  }
  return 0;
}

static int
callback_zero (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  return callback_zero_flags (be, offset, len, 0);
}

static int
callback_punch (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  return callback_zero_flags (be, offset, len, VHD_BACKEND_ZERO_MAY_TRIM);
}

static int
callback_get_size (struct vhd_backend *be, uint64_t *size)
{
  struct callback_state *st = state_of (be);
  int64_t r = st->cb.get_size (st->opaque);

  if (r < 0) {
    int err = r < -4095 ? EIO : (int) -r;
    return vhd_error (err, "%s: getting the size of the storage: %s",
                      be->name, strerror (err));
  }
  *size = (uint64_t) r;
  return 0;
}

static int
callback_truncate (struct vhd_backend *be, uint64_t size)
{
  return vhd_error (ENOSPC, "%s: cannot set the storage's size to %" PRIu64
                    " bytes: storage reached through callbacks cannot"
                    " grow or shrink", be->name, size);
}

static int
callback_lock (struct vhd_backend *be, bool writer)
{
  /* Nothing to lock: the caller keeps second writers out. */
  (void) be;
  (void) writer;
  return 0;
}

static void
callback_close (struct vhd_backend *be)
{
  free (be->opaque);
}

static const struct vhd_backend_ops callback_ops = {
  .run = callback_run,
  .pread_exact = callback_pread_exact,
  .pwrite_exact = callback_pwrite_exact,
  .flush = callback_flush,
  .zero = callback_zero,
  .punch = callback_punch,
  .get_size = callback_get_size,
  .truncate = callback_truncate,
  .lock = callback_lock,
  .writeback = NULL,
  .close = callback_close,
};

/* The smallest size that covers the fields this version reads. */
#define CALLBACKS_MIN_SIZE \
  (offsetof (struct vhd_backend_callbacks, get_size) \
   + sizeof (((struct vhd_backend_callbacks *) 0)->get_size))

int
vhd_backend_callbacks_new (const struct vhd_backend_callbacks *cb,
                           void *opaque, const char *name, bool readonly,
                           struct vhd_backend **out)
{
  struct callback_state *st;

  *out = NULL;
  if (cb == NULL)
    return vhd_error (EINVAL, "%s: the backend callbacks are NULL", name);
  if (cb->size < CALLBACKS_MIN_SIZE)
    return vhd_error (EINVAL, "%s: struct vhd_backend_callbacks: size %zu"
                      " is smaller than the %zu bytes that its fields up to"
                      " get_size take (set size to sizeof (struct"
                      " vhd_backend_callbacks))", name, cb->size,
                      (size_t) CALLBACKS_MIN_SIZE);
  if (cb->pread == NULL || cb->get_size == NULL)
    return vhd_error (EINVAL, "%s: the backend callbacks pread and get_size"
                      " are required", name);
  if (!readonly && (cb->pwrite == NULL || cb->flush == NULL))
    return vhd_error (EINVAL, "%s: opening for writing needs the backend"
                      " callbacks pwrite and flush (or open read-only)",
                      name);

  st = calloc (1, sizeof *st);
  if (st == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", name);
  /* Only what the caller's size covers; a larger, newer struct's extra
   * fields are not known here.
   */
  memcpy (&st->cb, cb, cb->size < sizeof st->cb ? cb->size : sizeof st->cb);
  st->cb.size = sizeof st->cb;
  st->opaque = opaque;
  *out = vhd_backend_new (&callback_ops, st, name, false);
  if (*out == NULL) {
    free (st);
    return -ENOMEM;
  }
  return 0;
}

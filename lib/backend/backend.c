/* vhdkit: the engine's entry points into a storage backend.
 *
 * Each one dispatches through the backend's table of operations.
 * vhd_io_run keeps its name and its place in its own object file: the
 * crash simulator (tests/unit/crashsim.c) wraps it with --wrap, which only
 * catches calls made from other objects.
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core/error.h"

int
vhd_io_run (struct vhd_segment *segs, size_t n, bool write)
{
  const struct vhd_backend_ops *ops = NULL;
  bool mixed = false;

  for (size_t i = 0; i < n; i++) {
    if (segs[i].be == NULL)
      continue;
    if (ops == NULL)
      ops = segs[i].be->ops;
    else if (segs[i].be->ops != ops)
      mixed = true;
  }
  if (ops == NULL) {
    /* Zero fill only. */
    for (size_t i = 0; i < n; i++)
      memset (segs[i].buf, 0, segs[i].length);
    return 0;
  }
  if (!mixed)
    return ops->run (segs, n, write);

  /* A chain over different kinds of storage: one segment at a time. */
  for (size_t i = 0; i < n; i++) {
    int r;
    if (segs[i].be == NULL) {
      memset (segs[i].buf, 0, segs[i].length);
      continue;
    }
    r = segs[i].be->ops->run (&segs[i], 1, write);
    if (r < 0)
      return r;
  }
  return 0;
}

int
vhd_backend_pread_exact (struct vhd_backend *be, void *buf, size_t count,
                         uint64_t offset, const char *what)
{
  return be->ops->pread_exact (be, buf, count, offset, what);
}

int
vhd_backend_pwrite_exact (struct vhd_backend *be, const void *buf,
                          size_t count, uint64_t offset, const char *what)
{
  return be->ops->pwrite_exact (be, buf, count, offset, what);
}

int
vhd_backend_flush (struct vhd_backend *be, bool metadata)
{
  return be->ops->flush (be, metadata);
}

int
vhd_backend_zero (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  return be->ops->zero (be, offset, len);
}

int
vhd_backend_punch (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  return be->ops->punch (be, offset, len);
}

int
vhd_backend_get_size (struct vhd_backend *be, uint64_t *size)
{
  return be->ops->get_size (be, size);
}

int
vhd_backend_truncate (struct vhd_backend *be, uint64_t size)
{
  return be->ops->truncate (be, size);
}

int
vhd_backend_lock (struct vhd_backend *be, bool writer)
{
  return be->ops->lock (be, writer);
}

void
vhd_backend_writeback (struct vhd_backend *be)
{
  if (be->ops->writeback)
    be->ops->writeback (be);
}

struct vhd_backend *
vhd_backend_new (const struct vhd_backend_ops *ops, void *opaque,
                 const char *name, bool can_grow)
{
  struct vhd_backend *be = calloc (1, sizeof *be);

  if (be == NULL || (be->name = strdup (name)) == NULL) {
    free (be);
    vhd_error (ENOMEM, "%s: out of memory", name);
    return NULL;
  }
  be->ops = ops;
  be->opaque = opaque;
  be->can_grow = can_grow;
  return be;
}

void
vhd_backend_close (struct vhd_backend *be)
{
  if (be == NULL)
    return;
  be->ops->close (be);
  free (be->name);
  free (be);
}

/* vhdkit unit tests: storage in memory behind vhd_open_with_backend's
 * callbacks, as the nbdkit filter has a plugin below it: it cannot grow
 * (a write past its end fails with ENOSPC), and fail makes every call
 * return that -errno.
 */

#ifndef VHDKIT_TESTS_MEM_BACKEND_H
#define VHDKIT_TESTS_MEM_BACKEND_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "vhdkit.h"

struct mem {
  uint8_t *buf;
  size_t size;
  int fail;                     /* 0, or the -errno every call returns */
  unsigned flushes;
};

static int
mem_pread (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct mem *m = opaque;

  if (m->fail)
    return m->fail;
  if (offset > m->size || count > m->size - offset)
    return -EIO;                /* as nbdkit would refuse it */
  memcpy (buf, m->buf + offset, count);
  return 0;
}

static int
mem_pwrite (void *opaque, const void *buf, size_t count, uint64_t offset)
{
  struct mem *m = opaque;

  if (m->fail)
    return m->fail;
  if (offset > m->size || count > m->size - offset)
    return -ENOSPC;
  memcpy (m->buf + offset, buf, count);
  return 0;
}

static int
mem_flush (void *opaque)
{
  struct mem *m = opaque;

  if (m->fail)
    return m->fail;
  m->flushes++;
  return 0;
}

static int64_t
mem_get_size (void *opaque)
{
  struct mem *m = opaque;
  return (int64_t) m->size;
}

static const struct vhd_backend_callbacks mem_callbacks = {
  .size = sizeof (struct vhd_backend_callbacks),
  .pread = mem_pread,
  .pwrite = mem_pwrite,
  .flush = mem_flush,
  .zero = NULL,
  .get_size = mem_get_size,
};

#endif /* VHDKIT_TESTS_MEM_BACKEND_H */

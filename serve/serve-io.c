/* vhdkit: the data callbacks shared by the nbdkit plugin and filter.
 *
 * Each is one engine call.  The disk is thread-safe and shared by every
 * connection, so a flush on any connection makes every connection's
 * writes durable (the multi-conn promise both make).
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>

#include <nbdkit-filter.h>

#include "serve.h"

int
vhd_serve_engine_error (int r, int *err)
{
  nbdkit_error ("%s", vhd_last_error ());
  *err = -r;
  return -1;
}

/* Minimum 1: the engine does read-modify-write for sub-sector requests,
 * so clients that send unaligned requests (nbdsh, byte-granular tools)
 * are served directly instead of being refused by a strict client-side
 * alignment check.  Preferred 4096, the page size, which keeps clients
 * that honour it from asking for read-modify-write at all.  Maximum
 * 32 MiB: the largest request nbdcopy sends, half of what nbdkit accepts,
 * and no more than 17 blocks of 2 MiB, so one request's batch of
 * segments stays small.
 */
void
vhd_serve_block_size (uint32_t *minimum, uint32_t *preferred,
                      uint32_t *maximum)
{
  *minimum = 1;
  *preferred = 4096;
  *maximum = 32 * 1024 * 1024;
}

static uint32_t
io_flags (uint32_t flags)
{
  uint32_t f = 0;

  if (flags & NBDKIT_FLAG_FUA)
    f |= VHD_IO_FUA;
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    f |= VHD_IO_MAY_TRIM;
  if (flags & NBDKIT_FLAG_FAST_ZERO)
    f |= VHD_IO_FAST_ZERO;
  return f;
}

int
vhd_serve_pread (vhd_disk *disk, void *buf, uint32_t count, uint64_t offset,
                 int *err)
{
  int r = vhd_pread (disk, buf, count, offset);

  return r < 0 ? vhd_serve_engine_error (r, err) : 0;
}

int
vhd_serve_pwrite (vhd_disk *disk, const void *buf, uint32_t count,
                  uint64_t offset, uint32_t flags, int *err)
{
  int r = vhd_pwrite (disk, buf, count, offset, io_flags (flags));

  return r < 0 ? vhd_serve_engine_error (r, err) : 0;
}

int
vhd_serve_flush (vhd_disk *disk, int *err)
{
  int r = vhd_flush (disk);

  return r < 0 ? vhd_serve_engine_error (r, err) : 0;
}

int
vhd_serve_trim (vhd_disk *disk, uint32_t count, uint64_t offset,
                uint32_t flags, int *err)
{
  int r = vhd_trim (disk, count, offset, io_flags (flags));

  return r < 0 ? vhd_serve_engine_error (r, err) : 0;
}

int
vhd_serve_zero (vhd_disk *disk, uint32_t count, uint64_t offset,
                uint32_t flags, int *err)
{
  int r = vhd_zero (disk, count, offset, io_flags (flags));

  /* A fast zero that would be slow is an expected answer, not a failure
   * worth logging: the client falls back to writing zeros itself.
   */
  if (r == -ENOTSUP && (flags & NBDKIT_FLAG_FAST_ZERO)) {
    *err = ENOTSUP;
    return -1;
  }
  return r < 0 ? vhd_serve_engine_error (r, err) : 0;
}

struct extents_state {
  struct nbdkit_extents *extents;
  bool add_failed;              /* nbdkit_add_extent failed (and logged) */
};

static int
add_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  struct extents_state *state = opaque;
  uint32_t type = 0;

  if (flags & VHD_EXTENT_HOLE)
    type |= NBDKIT_EXTENT_HOLE;
  if (flags & VHD_EXTENT_ZERO)
    type |= NBDKIT_EXTENT_ZERO;
  if (nbdkit_add_extent (state->extents, offset, length, type) == -1) {
    state->add_failed = true;
    return -EIO;
  }
  return 0;
}

int
vhd_serve_extents (vhd_disk *disk, uint32_t count, uint64_t offset,
                   struct nbdkit_extents *extents, int *err)
{
  struct extents_state state = { .extents = extents };
  int r = vhd_extents (disk, count, offset, add_extent, &state);

  if (r < 0) {
    if (state.add_failed) {
      *err = EIO;
      return -1;
    }
    return vhd_serve_engine_error (r, err);
  }
  return 0;
}

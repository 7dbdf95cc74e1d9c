/* vhdkit: the local file backend: an image in a regular file or on a
 * block device, reached through its fd.
 *
 * Batches of segments run on the thread's io_uring ring or with
 * pread/pwrite (file-uring.c), the writer lock is qemu's lock bytes
 * (file-lock.c), and the file was opened so that no FIFO or device could
 * block the open (file-open.c).
 */

#include <config.h>

#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "backend.h"
#include "core/error.h"
#include "file.h"

static int
file_pread_exact (struct vhd_backend *be, void *buf, size_t count,
                  uint64_t offset, const char *what)
{
  return vhd_file_pread_exact (vhd_file_fd_of (be), buf, count, offset,
                               be->name, what);
}

static int
file_pwrite_exact (struct vhd_backend *be, const void *buf, size_t count,
                   uint64_t offset, const char *what)
{
  return vhd_file_pwrite_exact (vhd_file_fd_of (be), buf, count, offset,
                                be->name, what);
}

static int
file_flush (struct vhd_backend *be, bool metadata)
{
  int fd = vhd_file_fd_of (be);

  if (metadata ? fsync (fd) == -1 : fdatasync (fd) == -1)
    return vhd_error (errno, "%s: %s: %m", be->name,
                      metadata ? "fsync" : "fdatasync");
  return 0;
}

static int
file_zero (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  if (fallocate (vhd_file_fd_of (be), FALLOC_FL_ZERO_RANGE, (off_t) offset,
                 (off_t) len) == 0)
    return 0;
  /* No ZERO_RANGE here (tmpfs, old kernels): the caller writes zeros. */
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)
    return -EOPNOTSUPP;
  return vhd_error (errno, "%s: zeroing %" PRIu64 " bytes at %" PRIu64
                    ": %m", be->name, len, offset);
}

static int
file_punch (struct vhd_backend *be, uint64_t offset, uint64_t len)
{
  if (fallocate (vhd_file_fd_of (be),
                 FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) offset, (off_t) len) == 0)
    return 0;
  if (errno == EOPNOTSUPP || errno == ENOSYS)
    return -EOPNOTSUPP;
  return vhd_error (errno, "%s: punching %" PRIu64 " bytes at %" PRIu64
                    ": %m", be->name, len, offset);
}

static int
file_get_size (struct vhd_backend *be, uint64_t *size)
{
  int fd = vhd_file_fd_of (be);
  struct stat st;

  if (fstat (fd, &st) == -1)
    return vhd_error (errno, "%s: fstat: %m", be->name);
  if (S_ISREG (st.st_mode)) {
    *size = (uint64_t) st.st_size;
    return 0;
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, size) == -1)
      return vhd_error (errno, "%s: BLKGETSIZE64: %m", be->name);
    return 0;
  }
  return vhd_error (EINVAL, "%s: not a regular file or a block device",
                    be->name);
}

static int
file_truncate (struct vhd_backend *be, uint64_t size)
{
  if (ftruncate (vhd_file_fd_of (be), (off_t) size) == -1)
    return vhd_error (errno, "%s: ftruncate to %" PRIu64 " bytes: %m",
                      be->name, size);
  return 0;
}

static int
file_lock (struct vhd_backend *be, bool writer)
{
  return vhd_file_lock (vhd_file_fd_of (be), be->name, writer);
}

static void
file_writeback (struct vhd_backend *be)
{
  /* A hint: start writing back now, without waiting for it. */
  sync_file_range (vhd_file_fd_of (be), 0, 0, SYNC_FILE_RANGE_WRITE);
}

static void
file_close (struct vhd_backend *be)
{
  close (vhd_file_fd_of (be));
}

static const struct vhd_backend_ops file_ops = {
  .run = vhd_file_run,
  .pread_exact = file_pread_exact,
  .pwrite_exact = file_pwrite_exact,
  .flush = file_flush,
  .zero = file_zero,
  .punch = file_punch,
  .get_size = file_get_size,
  .truncate = file_truncate,
  .lock = file_lock,
  .writeback = file_writeback,
  .close = file_close,
};

struct vhd_backend *
vhd_backend_file_new (int fd, const char *path)
{
  struct vhd_backend *be = vhd_backend_new (&file_ops,
                                            (void *) (intptr_t) fd, path,
                                            true);
  if (be == NULL)
    close (fd);
  return be;
}

int
vhd_backend_file_fd (const struct vhd_backend *be)
{
  /* An overlay (a log replayed in memory) is still that file. */
  const struct vhd_backend *lower = vhd_backend_overlay_lower (be);

  if (lower)
    be = lower;
  return be && be->ops == &file_ops ? vhd_file_fd_of (be) : -1;
}

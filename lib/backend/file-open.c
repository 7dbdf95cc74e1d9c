/* vhdkit: opening the files an image lives in, and reading and writing
 * exact byte counts on them.
 *
 * An image, a parent or a convert source is named by a user or, worse, by
 * a locator inside another image.  open(2) of a FIFO waits for a writer,
 * and of some devices for a carrier or a tape: a locator pointing at one
 * would hang the server or the tool for good.  So every such file is
 * opened with O_NONBLOCK (which makes those opens return at once), its
 * type checked with fstat, and only then O_NONBLOCK cleared; only regular
 * files and block devices are images.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/error.h"
#include "file.h"

static const char *
file_kind (mode_t mode)
{
  if (S_ISFIFO (mode)) return "a FIFO";
  if (S_ISCHR (mode)) return "a character device";
  if (S_ISDIR (mode)) return "a directory";
  if (S_ISSOCK (mode)) return "a socket";
  if (S_ISLNK (mode)) return "a symbolic link";
  return "not a regular file";
}

int
vhd_file_settle (int fd, const char *path)
{
  struct stat st;
  int fl;

  if (fstat (fd, &st) == -1)
    return vhd_error (errno, "%s: fstat: %m", path);
  if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode))
    return vhd_error (EINVAL, "%s is %s, not an image (an image is a"
                      " regular file or a block device)", path,
                      file_kind (st.st_mode));
  fl = fcntl (fd, F_GETFL);
  if (fl == -1 || fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) == -1)
    return vhd_error (errno, "%s: clearing O_NONBLOCK: %m", path);
  return 0;
}

int
vhd_file_open (const char *path, int flags)
{
  int fd, r;

  fd = open (path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd == -1) {
    /* Opening a directory for writing fails before anything else. */
    if (errno == EISDIR)
      return vhd_error (EINVAL, "%s is a directory, not an image (an"
                        " image is a regular file or a block device)",
                        path);
    /* A socket cannot be opened at all. */
    if (errno == ENXIO) {
      struct stat st;
      if (stat (path, &st) == 0 && S_ISSOCK (st.st_mode))
        return vhd_error (EINVAL, "%s is a socket, not an image (an image"
                          " is a regular file or a block device)", path);
      errno = ENXIO;
    }
    return vhd_error (errno, "%s: open: %m", path);
  }
  r = vhd_file_settle (fd, path);
  if (r < 0) {
    close (fd);
    return r;
  }
  return fd;
}

/* A bulk writer (create from a source, convert) that leaves its whole
 * target in the page cache slows down whoever uses the image next: the
 * kernel caches a file written sequentially in large folios (2 MiB), and
 * a later 4 KiB write dirties, and writes back, a whole folio.  An image
 * fresh from convert served random 4 KiB writes at a third of the rate of
 * a copy of it whose cache was dropped.
 */
void
vhd_file_drop_cache (int fd, uint64_t offset, uint64_t length)
{
  /* A hint, so we ignore failures. */
  posix_fadvise (fd, (off_t) offset, (off_t) length, POSIX_FADV_DONTNEED);
}

/* glibc has no wrapper, and older kernel headers no number, for
 * cachestat (Linux 6.5); the number is the same on every architecture
 * but alpha.
 */
#ifndef __NR_cachestat
#if defined (__alpha__)
#define __NR_cachestat 561
#else
#define __NR_cachestat 451
#endif
#endif

struct vhd_cachestat_range {
  uint64_t off, len;
};

struct vhd_cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

bool
vhd_file_cached (int fd, uint64_t offset, uint64_t length)
{
  struct vhd_cachestat_range range = { offset, length };
  struct vhd_cachestat cs;

  /* cachestat walks only what is cached, so asking about a large cold
   * file costs nothing (mincore would look up every page of it).  An
   * older kernel (ENOSYS) or a file that this process may not ask about
   * (EPERM) tells nothing.
   */
  if (syscall (__NR_cachestat, fd, &range, &cs, 0) == -1)
    return true;
  return cs.nr_cache > 0;
}

/* Read exactly count bytes at offset, treating a short read (the file
 * ended) as an error.  Returns 0 or -errno with a message naming what.
 */
int
vhd_file_pread_exact (int fd, void *buf, size_t count, uint64_t offset,
                           const char *file, const char *what)
{
  uint8_t *p = buf;

  while (count > 0) {
    ssize_t r = pread (fd, p, count, (off_t) offset);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return vhd_error (errno, "%s: reading %s at offset %" PRIu64 ": %m",
                        file, what, offset);
    }
    if (r == 0)
      return vhd_error (EIO, "%s: %s at offset %" PRIu64
                        " is past the end of the file", file, what, offset);
    p += r;
    count -= (size_t) r;
    offset += (uint64_t) r;
  }
  return 0;
}

/* Write exactly count bytes at offset, finishing short writes. */
int
vhd_file_pwrite_exact (int fd, const void *buf, size_t count, uint64_t offset,
                            const char *file, const char *what)
{
  const uint8_t *p = buf;

  while (count > 0) {
    ssize_t w = pwrite (fd, p, count < VHD_FILE_MAX_WRITE ? count
                               : VHD_FILE_MAX_WRITE, (off_t) offset);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return vhd_error (errno, "%s: writing the %s at offset %" PRIu64
                        ": %m", file, what, offset);
    }
    p += w;
    count -= (size_t) w;
    offset += (uint64_t) w;
  }
  return 0;
}

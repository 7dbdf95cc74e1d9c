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
#include <unistd.h>

#include "error.h"
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
    ssize_t w = pwrite (fd, p, count, (off_t) offset);
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

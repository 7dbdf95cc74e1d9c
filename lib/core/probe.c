/* vhdkit: which image format a file holds, decided cheaply and safely.
 *
 * A server that offers every image in a folder (nbdkit vhd dir=) asks
 * this of each file whenever a client lists the exports, so it must never
 * hang and never cost more than a couple of small reads: the file is
 * opened with vhd_file_open (a FIFO or a device cannot block the open,
 * and only regular files and block devices are accepted), and only the
 * signatures are read, never a header or a table.  A signature says what
 * the file claims to be, not that it is sound: vhd_open still validates
 * everything.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "driver.h"
#include "error.h"
#include "backend/file.h"
#include "vhdkit.h"

/* Does the file (size bytes) carry sig?  Returns 1 yes, 0 no (or the
 * file is too short), -errno (with a message) on an I/O error.
 */
static int
signature_is (int fd, const char *path, uint64_t size,
              const struct vhd_signature *sig)
{
  char buf[VHD_SIGNATURE_MAX];
  uint64_t offset = sig->offset;
  ssize_t n;

  if (sig->len == 0 || sig->len > sizeof buf)
    return 0;
  if (sig->from_end) {
    if (offset > size)
      return 0;
    offset = size - offset;
  }
  if (offset > size || sig->len > size - offset)
    return 0;
  do
    n = pread (fd, buf, sig->len, (off_t) offset);
  while (n == -1 && errno == EINTR);
  if (n == -1)
    return vhd_error (errno, "%s: reading the signature at offset %" PRIu64
                      ": %m", path, offset);
  return (size_t) n == sig->len && memcmp (buf, sig->bytes, sig->len) == 0;
}

static int
file_size (int fd, const char *path, uint64_t *size)
{
  struct stat st;
  off_t end;

  if (fstat (fd, &st) == -1)
    return vhd_error (errno, "%s: fstat: %m", path);
  if (S_ISREG (st.st_mode)) {
    *size = (uint64_t) st.st_size;
    return 0;
  }
  /* A block device's size is where its end is. */
  end = lseek (fd, 0, SEEK_END);
  if (end == -1)
    return vhd_error (errno, "%s: finding its size: %m", path);
  *size = (uint64_t) end;
  return 0;
}

int
vhd_probe_format (const char *path, unsigned flags)
{
  CLEANUP_CLOSE int fd = -1;
  const struct vhd_format_ops *ops;
  uint64_t size = 0;
  int r;

  if (path == NULL)
    return vhd_error (EINVAL, "vhd_probe_format: path is NULL");
  if (flags != 0)
    return vhd_error (EINVAL, "vhd_probe_format: flags 0x%x: no flags are"
                      " defined (pass 0)", flags);
  fd = vhd_file_open (path, O_RDONLY);
  if (fd < 0)
    return fd;
  r = file_size (fd, path, &size);
  if (r < 0)
    return r;

  /* Each format's signatures, in the registry's order (formats.c). */
  for (size_t i = 0; (ops = vhd_format_at (i)) != NULL; i++)
    for (const struct vhd_signature *sig = ops->signatures;
         sig && sig->bytes; sig++) {
      r = signature_is (fd, path, size, sig);
      if (r != 0)
        return r < 0 ? r : ops->probe_format;
    }
  return VHD_FORMAT_UNKNOWN;
}

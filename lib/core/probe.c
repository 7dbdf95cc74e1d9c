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
#include "backend/file.h"
#include "formats/vhd/format.h"
#include "vhdkit.h"

#define VHD_COOKIE "conectix"
#define VHDX_SIGNATURE "vhdxfile"
#define SIGNATURE_LEN 8

/* Read the SIGNATURE_LEN bytes at offset into sig.  Returns 1 when they
 * were read, 0 when the file is too short, -errno (with a message) on an
 * I/O error.
 */
static int
read_signature (int fd, const char *path, uint64_t size, uint64_t offset,
                char sig[SIGNATURE_LEN])
{
  ssize_t n;

  if (offset + SIGNATURE_LEN > size)
    return 0;
  do
    n = pread (fd, sig, SIGNATURE_LEN, (off_t) offset);
  while (n == -1 && errno == EINTR);
  if (n == -1)
    return vhd_error (errno, "%s: reading the signature at offset %" PRIu64
                      ": %m", path, offset);
  return n == SIGNATURE_LEN;
}

static int
signature_is (int fd, const char *path, uint64_t size, uint64_t offset,
              const char *want)
{
  char sig[SIGNATURE_LEN];
  int r = read_signature (fd, path, size, offset, sig);

  if (r <= 0)
    return r;
  return memcmp (sig, want, SIGNATURE_LEN) == 0;
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

  /* VHDX: the file type identifier opens the file. */
  r = signature_is (fd, path, size, 0, VHDX_SIGNATURE);
  if (r != 0)
    return r < 0 ? r : VHD_FORMAT_VHDX;

  /* VHD: the trailing footer (512 bytes, or the 511 that some old
   * writers left), else the copy at offset 0 of a dynamic or
   * differencing disk whose trailing footer was lost: the places where
   * vhd_open looks for a footer.
   */
  if (size >= VHD_FOOTER_SIZE) {
    r = signature_is (fd, path, size, size - VHD_FOOTER_SIZE, VHD_COOKIE);
    if (r != 0)
      return r < 0 ? r : VHD_FORMAT_VHD;
  }
  if (size >= VHD_FOOTER_SIZE - 1) {
    r = signature_is (fd, path, size, size - (VHD_FOOTER_SIZE - 1),
                      VHD_COOKIE);
    if (r != 0)
      return r < 0 ? r : VHD_FORMAT_VHD;
  }
  r = signature_is (fd, path, size, 0, VHD_COOKIE);
  if (r != 0)
    return r < 0 ? r : VHD_FORMAT_VHD;
  return VHD_FORMAT_UNKNOWN;
}

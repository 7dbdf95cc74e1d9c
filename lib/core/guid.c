/* vhdkit: GUIDs, shared by every format: new unique ids, the all-zero
 * test ("none given") and the text form.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_GETRANDOM
#include <sys/random.h>
#endif

#include "core/error.h"
#include "core/guid.h"

/* Fill buf with n random bytes from the kernel.  Returns 0 or -errno. */
static int
random_bytes (uint8_t *buf, size_t n)
{
#ifdef HAVE_GETRANDOM
  while (n > 0) {
    ssize_t r = getrandom (buf, n, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return vhd_error (errno, "getrandom: %m");
    }
    buf += r;
    n -= (size_t) r;
  }
  return 0;
#else
  int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);

  if (fd == -1)
    return vhd_error (errno, "open: /dev/urandom: %m");
  while (n > 0) {
    ssize_t r = read (fd, buf, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      int e = r < 0 ? errno : EIO;
      close (fd);
      return vhd_error (e, "read: /dev/urandom: %s", strerror (e));
    }
    buf += r;
    n -= (size_t) r;
  }
  close (fd);
  return 0;
#endif
}

int
vhd_guid_generate (struct vhd_guid *guid)
{
  int r = random_bytes (guid->bytes, sizeof guid->bytes);

  if (r < 0)
    return r;
  /* RFC 4122 version 4 (random) and variant 10xx, so that tools that
   * print or check the GUID see a well-formed one.
   */
  guid->bytes[6] = (uint8_t) ((guid->bytes[6] & 0x0f) | 0x40);
  guid->bytes[8] = (uint8_t) ((guid->bytes[8] & 0x3f) | 0x80);
  return 0;
}

bool
vhd_guid_is_zero (const struct vhd_guid *guid)
{
  for (size_t i = 0; i < sizeof guid->bytes; i++)
    if (guid->bytes[i] != 0)
      return false;
  return true;
}

void
vhd_guid_to_string (const struct vhd_guid *guid, char buf[37])
{
  static const char hex[] = "0123456789abcdef";
  size_t j = 0;

  for (size_t i = 0; i < sizeof guid->bytes; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      buf[j++] = '-';
    buf[j++] = hex[guid->bytes[i] >> 4];
    buf[j++] = hex[guid->bytes[i] & 0xf];
  }
  buf[j] = '\0';
}

void
vhd_guid_to_braced (const struct vhd_guid *guid,
                    char out[VHD_BRACED_GUID_SIZE])
{
  out[0] = '{';
  vhd_guid_to_string (guid, out + 1);
  out[VHD_BRACED_GUID_SIZE - 2] = '}';
  out[VHD_BRACED_GUID_SIZE - 1] = '\0';
}

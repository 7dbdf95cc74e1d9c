/* vhdkit: is a file a VHD?  For a source of vhd_create_virtual_disk:
 * a file or device is a VHD when it carries a valid footer (the trailing
 * one, the 511-byte one of old writers, or the copy at offset 0 of a
 * dynamic disk); one that carries the cookie but no valid footer is a
 * damaged VHD, neither a VHD nor a raw disk.
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "backend/file.h"
#include "formats/vhd/format.h"
#include "formats/vhd/vhd.h"

/* What vhd_probe_format looks for: the cookie of the trailing footer
 * (512 bytes, or the 511 that some old writers left), else of the copy
 * at offset 0 of a dynamic or differencing disk whose trailing footer was
 * lost: the places where vhd_open looks for a footer.
 */
const struct vhd_signature vhd_vhd_signatures[] = {
  { "conectix", 8, VHD_FOOTER_SIZE, true },
  { "conectix", 8, VHD_FOOTER_SIZE - 1, true },
  { "conectix", 8, 0, false },
  { NULL, 0, 0, false },
};

/* Does buf (a footer's 512 bytes, read at where) hold a valid footer?
 * Sets *cookie when it at least starts with "conectix", and keeps the
 * decoder's message in why[].
 */
static bool
valid_footer (const uint8_t *buf, const char *path, uint64_t where,
              bool need_dynamic, bool *cookie, char *why, size_t why_size)
{
  struct vhd_footer f;

  if (memcmp (buf, "conectix", 8) != 0)
    return false;
  *cookie = true;
  if (vhd_footer_decode (buf, &f, path, where) < 0) {
    snprintf (why, why_size, "%s", vhd_last_error ());
    return false;
  }
  if (need_dynamic && f.disk_type == VHD_TYPE_FIXED) {
    snprintf (why, why_size, "the footer copy at offset 0 says fixed, and"
              " fixed disks have none");
    return false;
  }
  return true;
}

int
vhd_vhd_recognise (int fd, const char *path, uint64_t size, char *why_out,
                   size_t why_size)
{
  uint8_t buf[VHD_FOOTER_SIZE];
  char why[1024] = "";
  bool cookie = false;
  int r;

  if (size < VHD_FOOTER_SIZE)
    return 0;
  r = vhd_file_pread_exact (fd, buf, sizeof buf, size - VHD_FOOTER_SIZE,
                            path, "the last sector");
  if (r < 0)
    return r;
  if (valid_footer (buf, path, size - VHD_FOOTER_SIZE, false, &cookie,
                    why, sizeof why))
    return 1;

  memset (buf, 0, sizeof buf);
  r = vhd_file_pread_exact (fd, buf, VHD_FOOTER_SIZE - 1,
                            size - (VHD_FOOTER_SIZE - 1), path,
                            "the last sector");
  if (r < 0)
    return r;
  if (valid_footer (buf, path, size - (VHD_FOOTER_SIZE - 1), false, &cookie,
                    why, sizeof why))
    return 1;

  r = vhd_file_pread_exact (fd, buf, sizeof buf, 0, path,
                            "the first sector");
  if (r < 0)
    return r;
  if (valid_footer (buf, path, 0, true, &cookie, why, sizeof why))
    return 1;

  if (cookie) {
    snprintf (why_out, why_size, "a VHD footer cookie (\"conectix\") but"
              " no valid footer (%s)", why);
    return 2;
  }
  vhd_clear_error ();
  return 0;
}


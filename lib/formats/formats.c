/* vhdkit: the formats the core knows, and which one an image or a new
 * disk is.  The one place that names every driver: a new format adds its
 * ops here.
 */

#include <config.h>

#include <string.h>

#include "backend/backend.h"
#include "core/driver.h"

/* VHD is the only format so far: its scanner says "not a VHD image"
 * when the bytes are something else.  With a second format, this looks
 * at the signatures (core/probe.c knows them).
 */
const struct vhd_format_ops *
vhd_format_for_image (struct vhd_backend *be)
{
  char sig[8];

  if (vhd_backend_pread_exact (be, sig, sizeof sig, 0, "signature") == 0 &&
      memcmp (sig, "vhdxfile", sizeof sig) == 0)
    return &vhd_format_vhdx;
  return &vhd_format_vhd;
}

const struct vhd_format_ops *
vhd_format_for_storage (uint32_t device_id)
{
  (void) device_id;             /* create.c admits VHD (and UNKNOWN) only */
  return &vhd_format_vhd;
}

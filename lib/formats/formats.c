/* vhdkit: the formats the library knows, and which one an image, a file
 * or a new disk is.  The one place that names every format: a new
 * driver is added to formats[] below (in place of its signature-only
 * entry, if it has one), and nothing in the core changes.
 */

#include <config.h>

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "backend/backend.h"
#include "core/driver.h"

/* Every format, in the order vhd_probe_format tries their signatures.
 * VHDX first: its signature opens the file, where a fixed VHD has guest
 * data that may be anything, while a VHD's signature ends the file,
 * where a VHDX may have a block of guest data.
 */
static const struct vhd_format_ops *const formats[] = {
  &vhd_format_vhdx,
  &vhd_format_vhd,
};

#define N_FORMATS (sizeof formats / sizeof formats[0])

/* A new disk of storage type VHD_STORAGE_DEVICE_UNKNOWN whose name ends
 * in no format's extension is a VHD, as on Windows.
 */
static const struct vhd_format_ops *const default_for_unknown =
  &vhd_format_vhd;

const struct vhd_format_ops *
vhd_format_at (size_t i)
{
  return i < N_FORMATS ? formats[i] : NULL;
}

static bool
signature_matches (struct vhd_backend *be, uint64_t size,
                   const struct vhd_signature *sig)
{
  char buf[16];
  uint64_t offset;

  if (sig->len > sizeof buf || size < sig->len ||
      sig->offset > size - sig->len)
    return false;
  offset = sig->from_end ? size - sig->len - sig->offset : sig->offset;
  if (vhd_backend_pread_exact (be, buf, sig->len, offset, "signature") < 0)
    return false;
  return memcmp (buf, sig->bytes, sig->len) == 0;
}

/* The driver whose signature the image carries, tried in the order of
 * formats[] (as vhd_probe_format does, but through the backend: a
 * callback backend has no fd).  None: VHD, whose scanner then says why
 * the file is no image.  A fixed VHD that holds a VHDX image at its
 * start opens as VHDX, as probe names it: the VHDX signature is
 * checked first, and a VHDX that is valid is what such a file holds.
 */
const struct vhd_format_ops *
vhd_format_for_image (struct vhd_backend *be)
{
  uint64_t size;

  if (vhd_backend_get_size (be, &size) < 0)
    return &vhd_format_vhd;
  for (size_t i = 0; i < N_FORMATS; i++) {
    if (!vhd_format_has_driver (formats[i]) || formats[i] == &vhd_format_vhd)
      continue;
    for (const struct vhd_signature *sig = formats[i]->signatures;
         sig && sig->bytes; sig++)
      if (signature_matches (be, size, sig))
        return formats[i];
  }
  return &vhd_format_vhd;
}

const struct vhd_format_ops *
vhd_format_for_device (uint32_t device_id)
{
  for (size_t i = 0; i < N_FORMATS; i++)
    if (formats[i]->device_id == device_id &&
        device_id != VHD_STORAGE_DEVICE_UNKNOWN)
      return formats[i];
  return NULL;
}

static bool
has_extension (const char *path, const char *ext)
{
  size_t n = strlen (path), e = strlen (ext);

  return n > e && strcasecmp (path + n - e, ext) == 0;
}

const struct vhd_format_ops *
vhd_format_for_storage (uint32_t device_id, const char *path)
{
  if (device_id != VHD_STORAGE_DEVICE_UNKNOWN)
    return vhd_format_for_device (device_id);
  for (size_t i = 0; path && i < N_FORMATS; i++)
    if (formats[i]->extension && has_extension (path, formats[i]->extension))
      return formats[i];
  return default_for_unknown;
}

/* vhdkit: the formats the library knows, and which one an image, a file
 * or a new disk is.  The one place that names every format: a new
 * driver is added to formats[] below (in place of its signature-only
 * entry, if it has one), and nothing in the core changes.
 */

#include <config.h>

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "core/driver.h"

/* VHDX is recognised before its driver exists: vhd_probe_format names a
 * VHDX file (so that a server can say why it does not serve it) and a
 * create of one is refused as not supported, not as unknown.  MS-VHDX
 * 2.2.1: the file type identifier opens the file with "vhdxfile".
 */
static const struct vhd_signature vhdx_signatures[] = {
  { "vhdxfile", 8, 0, false },
  { NULL, 0, 0, false },
};

static const struct vhd_format_ops vhdx_signature_only = {
  .name = "VHDX",
  .probe_format = VHD_FORMAT_VHDX,
  .device_id = VHD_STORAGE_DEVICE_VHDX,
  .extension = ".vhdx",
  .signatures = vhdx_signatures,
};

/* Every format, in the order vhd_probe_format tries their signatures.
 * VHDX first: its signature opens the file, where a fixed VHD has guest
 * data that may be anything, while a VHD's signature ends the file,
 * where a VHDX may have a block of guest data.
 */
static const struct vhd_format_ops *const formats[] = {
  &vhdx_signature_only,
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

/* VHD is the only driver so far: its scanner says "not a VHD image" when
 * the bytes are something else (a VHDX too).  With a second driver this
 * picks by the signatures, as vhd_probe_format does, but through the
 * backend (a callback backend has no fd), and must decide what a fixed
 * VHD that holds a VHDX image at its start opens as: probe says VHDX.
 */
const struct vhd_format_ops *
vhd_format_for_image (struct vhd_backend *be)
{
  (void) be;
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

/* vhdkit: what vhd_create_virtual_disk accepts for a new VHD: block and
 * sector sizes, and the disk's size (given, or taken from a source).
 * The core checks the format-free rules and calls these in its order
 * (core/driver.h), so the messages name the API's parameters.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>

#include "formats/vhd/format.h"
#include "formats/vhd/vhd.h"

#define FN "vhd_create_virtual_disk"

int
vhd_vhd_check_create_geometry (const struct vhd_create_request *req)
{
  if (req->block_size != 0 && req->block_size != VHD_BLOCK_SIZE_SMALL &&
      req->block_size != VHD_BLOCK_SIZE_DEFAULT)
    return vhd_error (EINVAL, FN ": block_size_in_bytes is %" PRIu32 "; it"
                      " must be 0 (the default, 2 MiB), 524288 (512 KiB) or"
                      " 2097152 (2 MiB)", req->block_size);
  if (req->sector_size != 0 && req->sector_size != VHD_SECTOR_SIZE)
    return vhd_error (EINVAL, FN ": sector_size_in_bytes is %" PRIu32 "; a"
                      " VHD has 512-byte sectors, pass 0 or 512",
                      req->sector_size);
  /* VHD records no physical sector size; 4096 is accepted, as Windows
   * accepts it, and changes nothing in the file.
   */
  if (req->physical_sector_size != 0 && req->physical_sector_size != 512 &&
      req->physical_sector_size != 4096)
    return vhd_error (EINVAL, FN ": physical_sector_size_in_bytes is %"
                      PRIu32 "; it must be 0, 512 or 4096",
                      req->physical_sector_size);
  return 0;
}

int
vhd_vhd_check_create_size (const struct vhd_create_request *req)
{
  uint64_t size = req->maximum_size;

  if (size != 0 && size < VHD_MIN_DISK_SIZE)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is under the"
                      " minimum of 3 MiB (3145728 bytes)", size);
  if (size % VHD_SECTOR_SIZE != 0)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is not a"
                      " multiple of the 512-byte sector size", size);
  if (size > VHD_MAX_DISK_SIZE)
    return vhd_error (EINVAL, FN ": maximum_size %" PRIu64 " is over the"
                      " VHD limit of 2040 GiB (%" PRIu64 " bytes)",
                      size, VHD_MAX_DISK_SIZE);
  return 0;
}

/* A source must be whole sectors even when maximum_size bounds it; its
 * size must be a VHD's only when it becomes the new disk's.
 */
int
vhd_vhd_check_source_size (const struct vhd_create_request *req,
                           const char *what, uint64_t size)
{
  if (size % VHD_SECTOR_SIZE != 0)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, not a whole"
                      " number of 512-byte sectors; as on Windows, a source"
                      " must be (pad it to %" PRIu64 " bytes first)", what,
                      size, (size + VHD_SECTOR_SIZE - 1)
                      / VHD_SECTOR_SIZE * VHD_SECTOR_SIZE);
  if (req->maximum_size != 0)
    return 0;
  if (size < VHD_MIN_DISK_SIZE)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, under the"
                      " minimum VHD size of 3 MiB (3145728 bytes); pass a"
                      " maximum_size of at least that to extend it with"
                      " zeros", what, size);
  if (size > VHD_MAX_DISK_SIZE)
    return vhd_error (EINVAL, FN ": %s is %" PRIu64 " bytes, over the VHD"
                      " limit of 2040 GiB (%" PRIu64 " bytes)", what, size,
                      VHD_MAX_DISK_SIZE);
  return 0;
}

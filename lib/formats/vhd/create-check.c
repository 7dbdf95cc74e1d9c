/* vhdkit: the block and sector sizes vhd_create_virtual_disk accepts for
 * a new VHD (the core checks the disk sizes, from the driver's bounds).
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

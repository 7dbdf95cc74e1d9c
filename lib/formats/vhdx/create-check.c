/* vhdkit: the block and sector sizes vhd_create_virtual_disk accepts for
 * a new VHDX, each refusal naming the API's parameter (core/driver.h
 * gives the order; the core checks the disk sizes, from the driver's
 * bounds).
 *
 * Block sizes: Windows' documentation says "a multiple of 1 MB", but
 * [MS-VHDX] 2.6.2.1 requires a power of two from 1 to 256 MiB and no
 * reader opens anything else, so 3 MiB is refused, saying why.
 * Version 1 parameters can say only what version 1 has (512-byte
 * sectors, and a block size of 0 or VHD's 2 MiB; VHD's 512 KiB is below
 * VHDX's minimum): 4096-byte sectors and VHDX's other block sizes come
 * through version 2, as on Windows.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>

#include "core/driver.h"
#include "formats/vhdx/format.h"
#include "formats/vhdx/vhdx.h"

#define FN "vhd_create_virtual_disk"

static bool
power_of_two (uint32_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

int
vhdx_check_create_geometry (const struct vhd_create_request *req)
{
  uint32_t bs = req->block_size;

  if (req->version == VHD_CREATE_VERSION_1) {
    if (bs != 0 && bs != (UINT32_C (2) << 20))
      return vhd_error (EINVAL, FN ": block_size_in_bytes is %" PRIu32 ";"
                        " version 1 parameters create a VHDX with 0 (the"
                        " default, 32 MiB) or 2097152 (2 MiB); pass other"
                        " VHDX block sizes with version 2", bs);
    if (req->sector_size != 0 && req->sector_size != 512)
      return vhd_error (EINVAL, FN ": sector_size_in_bytes is %" PRIu32 ";"
                        " version 1 parameters have 512-byte sectors (pass 0"
                        " or 512; 4096-byte sectors need version 2)",
                        req->sector_size);
  }
  if (bs != 0 && (bs < VHDX_MIN_BLOCK_SIZE || bs > VHDX_MAX_BLOCK_SIZE ||
                  !power_of_two (bs)))
    return vhd_error (EINVAL, FN ": block_size_in_bytes is %" PRIu32 "; a"
                      " VHDX block is a power of two from 1 MiB to 256 MiB"
                      " ([MS-VHDX] 2.6.2.1: no reader opens another size),"
                      " or 0 for the default of 32 MiB", bs);
  if (req->sector_size != 0 && req->sector_size != 512 &&
      req->sector_size != 4096)
    return vhd_error (EINVAL, FN ": sector_size_in_bytes is %" PRIu32 "; a"
                      " VHDX has 512- or 4096-byte logical sectors (0: 512)",
                      req->sector_size);
  if (req->physical_sector_size != 0 && req->physical_sector_size != 512 &&
      req->physical_sector_size != 4096)
    return vhd_error (EINVAL, FN ": physical_sector_size_in_bytes is %"
                      PRIu32 "; it must be 0 (4096), 512 or 4096",
                      req->physical_sector_size);
  return 0;
}

/* vhdkit: the core's sector bitmaps (internal).
 *
 * In memory a block's bitmap has one bit per logical sector of the disk
 * (struct vhd_disk's sector_size: 512 or 4096 bytes), most significant
 * bit first within a byte; a driver whose format stores them otherwise
 * converts as it reads and writes them.
 */

#ifndef VHDKIT_CORE_BITMAP_H
#define VHDKIT_CORE_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

/* The largest logical sector a format may have (VHDX: 4096). */
#define VHD_CORE_MAX_SECTOR_SIZE 4096u

static inline bool
vhd_bit_test (const uint8_t *bitmap, uint32_t sector)
{
  return (bitmap[sector >> 3] >> (7 - (sector & 7))) & 1;
}

static inline void
vhd_bit_set (uint8_t *bitmap, uint32_t sector)
{
  bitmap[sector >> 3] |= (uint8_t) (0x80 >> (sector & 7));
}

static inline void
vhd_bit_clear (uint8_t *bitmap, uint32_t sector)
{
  bitmap[sector >> 3] &= (uint8_t) ~(0x80 >> (sector & 7));
}

#endif /* VHDKIT_CORE_BITMAP_H */

/* vhdkit: the VHD on-disk structures (Virtual Hard Disk Image Format
 * Specification, October 2006).
 *
 * Structures here are decoded copies in host byte order, never a cast over
 * file bytes: vhd_*_decode() reads a big-endian buffer and validates every
 * field it can validate on its own, vhd_*_encode() writes one back (and
 * computes its checksum).  Checks that need the file's size or the other
 * structures live in open.c.
 *
 * Decoders take the file name so that their errors (set with vhd_error)
 * name the file and the field.
 */

#ifndef VHDKIT_FORMAT_H
#define VHDKIT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/error.h"
#include "core/utf16.h"
#include "vhdkit.h"

#define VHD_SECTOR_SIZE         512u
#define VHD_FOOTER_SIZE         512u
#define VHD_DYN_HEADER_SIZE     1024u
#define VHD_LOCATOR_COUNT       8u
#define VHD_BAT_UNUSED          UINT32_C (0xFFFFFFFF)
#define VHD_FORMAT_VERSION      UINT32_C (0x00010000)
#define VHD_HEADER_VERSION      UINT32_C (0x00010000)
#define VHD_FIXED_DATA_OFFSET   UINT64_C (0xFFFFFFFFFFFFFFFF)
#define VHD_FEATURES_RESERVED   UINT32_C (0x00000002) /* always set */

/* Seconds between 1970-01-01 and 2000-01-01, both UTC. */
#define VHD_EPOCH_OFFSET        INT64_C (946684800)

/* Block sizes that a reader accepts: powers of two in this range.  Every
 * known writer uses 512 KiB or 2 MiB; a larger block than this is treated
 * as hostile (its bitmap and allocation cost would be unbounded).
 */
#define VHD_MIN_BLOCK_SIZE      UINT32_C (4096)
#define VHD_MAX_BLOCK_SIZE      UINT32_C (256 << 20)

/* Creator fields written by vhdkit.  "win " makes every reader (qemu
 * among them) take the disk's size from current_size rather than from the
 * CHS geometry, as it does for disks that Windows creates.
 */
#define VHD_CREATOR_APP         "win "
#define VHD_CREATOR_VERSION     UINT32_C (0x000a0000) /* Windows 10 */
#define VHD_CREATOR_HOST_OS     UINT32_C (0x5769326B) /* "Wi2k" */

struct vhd_footer {
  char cookie[8];               /* "conectix" */
  uint32_t features;
  uint32_t format_version;
  uint64_t data_offset;         /* dynamic header, or all ones for fixed */
  uint32_t timestamp;
  char creator_app[4];
  uint32_t creator_version;
  uint32_t creator_host_os;
  uint64_t original_size;
  uint64_t current_size;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors_per_track;
  uint32_t disk_type;
  uint32_t checksum;            /* as stored; recomputed by encode */
  struct vhd_guid unique_id;
  uint8_t saved_state;
};

/* Platform codes of parent locators. */
#define VHD_PLATFORM_NONE       UINT32_C (0x00000000)
#define VHD_PLATFORM_WI2R       UINT32_C (0x57693272) /* deprecated */
#define VHD_PLATFORM_WI2K       UINT32_C (0x5769326B) /* deprecated */
#define VHD_PLATFORM_W2RU       UINT32_C (0x57327275) /* relative, UTF-16LE */
#define VHD_PLATFORM_W2KU       UINT32_C (0x57326B75) /* absolute, UTF-16LE */
#define VHD_PLATFORM_MAC        UINT32_C (0x4D616320)
#define VHD_PLATFORM_MACX       UINT32_C (0x4D616358) /* file URL, UTF-8 */

struct vhd_parent_locator {
  uint32_t platform_code;
  uint32_t platform_data_space; /* sectors per spec; some writers: bytes */
  uint32_t platform_data_length;/* bytes */
  uint32_t reserved;
  uint64_t platform_data_offset;
};

struct vhd_dyn_header {
  char cookie[8];               /* "cxsparse" */
  uint64_t data_offset;         /* unused, all ones */
  uint64_t table_offset;        /* the BAT */
  uint32_t header_version;
  uint32_t max_table_entries;
  uint32_t block_size;
  uint32_t checksum;
  struct vhd_guid parent_unique_id;
  uint32_t parent_timestamp;
  uint32_t reserved;
  uint8_t parent_unicode_name[512];   /* UTF-16BE, NUL-padded */
  struct vhd_parent_locator locators[VHD_LOCATOR_COUNT];
};


/* Big-endian codec. */
uint16_t vhd_get_be16 (const uint8_t *p);
uint32_t vhd_get_be32 (const uint8_t *p);
uint64_t vhd_get_be64 (const uint8_t *p);
void vhd_put_be16 (uint8_t *p, uint16_t v);
void vhd_put_be32 (uint8_t *p, uint32_t v);
void vhd_put_be64 (uint8_t *p, uint64_t v);

/* One's complement of the byte sum of buf, with the 4 bytes at
 * checksum_offset counted as zero.
 */
uint32_t vhd_checksum (const uint8_t *buf, size_t len, size_t checksum_offset);

/* Footer.  decode() checks the cookie, checksum, format version, disk type
 * (2, 3 or 4), current size (a multiple of 512, at most 2040 GiB) and, for
 * fixed disks, the data offset.  Returns 0 or -EINVAL with a message
 * "FILE: footer at OFFSET: FIELD ...".  encode() writes all 512 bytes,
 * computing the checksum (and storing it back into footer->checksum).
 */
int vhd_footer_decode (const uint8_t buf[VHD_FOOTER_SIZE],
                       struct vhd_footer *footer,
                       const char *file, uint64_t where);
void vhd_footer_encode (struct vhd_footer *footer,
                        uint8_t buf[VHD_FOOTER_SIZE]);

/* Dynamic header.  decode() checks the cookie, checksum, version, block
 * size (a power of two in [VHD_MIN_BLOCK_SIZE, VHD_MAX_BLOCK_SIZE]) and that
 * max_table_entries is not 0.  Relations to the footer and the file size
 * are checked by the caller.
 */
int vhd_dyn_header_decode (const uint8_t buf[VHD_DYN_HEADER_SIZE],
                           struct vhd_dyn_header *header,
                           const char *file, uint64_t where);
void vhd_dyn_header_encode (struct vhd_dyn_header *header,
                            uint8_t buf[VHD_DYN_HEADER_SIZE]);

/* CHS geometry by the specification's algorithm (Appendix: CHS
 * calculation), from a size in bytes.  Saturates at 65535/16/255.
 */
void vhd_chs_geometry (uint64_t size_bytes, uint16_t *cylinders,
                       uint8_t *heads, uint8_t *sectors_per_track);

/* Timestamps: seconds since 2000-01-01 00:00:00 UTC (truncated to 32 bits,
 * as the format stores them).
 */
uint32_t vhd_timestamp_from_unix (time_t t);
time_t vhd_timestamp_to_unix (uint32_t vhd_time);
uint32_t vhd_timestamp_now (void);

/* Sector bitmaps: one bit per sector of the block, most significant bit
 * first, padded to a whole number of 512-byte sectors.
 */
uint32_t vhd_bitmap_size (uint32_t block_size);
static inline bool
vhd_bitmap_test (const uint8_t *bitmap, uint32_t sector)
{
  return (bitmap[sector >> 3] >> (7 - (sector & 7))) & 1;
}
static inline void
vhd_bitmap_set (uint8_t *bitmap, uint32_t sector)
{
  bitmap[sector >> 3] |= (uint8_t) (0x80 >> (sector & 7));
}
static inline void
vhd_bitmap_clear (uint8_t *bitmap, uint32_t sector)
{
  bitmap[sector >> 3] &= (uint8_t) ~(0x80 >> (sector & 7));
}

/* The BAT occupies whole sectors: its size in bytes for n entries. */
uint64_t vhd_bat_size (uint32_t max_table_entries);
/* What open allocates for a BAT of n entries, checked against the cap
 * (vhd_open_options.max_metadata_bytes) before it does (scan.c).
 */
uint64_t vhd_metadata_bytes (uint32_t max_table_entries);

#endif /* VHDKIT_FORMAT_H */

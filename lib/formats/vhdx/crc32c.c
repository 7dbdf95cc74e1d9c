/* vhdkit: CRC-32C, table-driven (slicing by 8).
 *
 * VHDX sums 4 KiB log sectors and 64 KiB headers and metadata tables,
 * never block data, so a portable implementation is fast enough: about
 * 1-2 GB/s here, a few microseconds per log entry.  The tables are built
 * once, on first use.
 */

#include <pthread.h>
#include <string.h>

#include "formats/vhdx/crc32c.h"

#define CRC32C_POLY_REFLECTED UINT32_C (0x82F63B78)

static uint32_t crc_table[8][256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void
build_crc_table (void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8)
        ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static inline uint32_t
load_le32 (const uint8_t *p)
{
  return (uint32_t) p[0] | (uint32_t) p[1] << 8
    | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

uint32_t
vhdx_crc32c_update (uint32_t crc, const void *buf, size_t len)
{
  const uint8_t *p = buf;

  pthread_once (&crc_table_once, build_crc_table);
  crc = ~crc;
  while (len >= 8) {
    uint32_t lo = load_le32 (p) ^ crc;
    uint32_t hi = load_le32 (p + 4);
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff]
      ^ crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24]
      ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff]
      ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

uint32_t
vhdx_crc32c (const void *buf, size_t len)
{
  return vhdx_crc32c_update (0, buf, len);
}

/* vhdkit: little helpers shared by the VHDX log's reader (log.c) and
 * writer (log-write.c): little-endian fields, the entry checksum, the
 * descriptor sector count.  Internal to the log.
 */

#ifndef VHDKIT_VHDX_LOG_CODEC_H
#define VHDKIT_VHDX_LOG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "formats/vhdx/crc32c.h"

#define VHDX_LOG_MiB (UINT64_C (1) << 20)
#define VHDX_LOG_HEADER_SIZE 64u
#define VHDX_LOG_DESC_SIZE 32u

static inline uint32_t
vhdx_le32 (const uint8_t *b)
{
  return (uint32_t) b[0] | (uint32_t) b[1] << 8 | (uint32_t) b[2] << 16
    | (uint32_t) b[3] << 24;
}

static inline uint64_t
vhdx_le64 (const uint8_t *b)
{
  return (uint64_t) vhdx_le32 (b) | (uint64_t) vhdx_le32 (b + 4) << 32;
}

static inline void
vhdx_put_le32 (uint8_t *b, uint32_t v)
{
  b[0] = v; b[1] = v >> 8; b[2] = v >> 16; b[3] = v >> 24;
}

static inline void
vhdx_put_le64 (uint8_t *b, uint64_t v)
{
  vhdx_put_le32 (b, (uint32_t) v);
  vhdx_put_le32 (b + 4, (uint32_t) (v >> 32));
}

/* CRC-32C of the length-byte entry at buf, its Checksum field (bytes
 * 4..7) taken as zero.
 */
static inline uint32_t
vhdx_log_entry_crc (const uint8_t *buf, size_t length)
{
  static const uint8_t zero[4];
  uint32_t crc = vhdx_crc32c_update (0, buf, 4);

  crc = vhdx_crc32c_update (crc, zero, 4);
  return vhdx_crc32c_update (crc, buf + 8, length - 8);
}

/* Descriptor sectors for count descriptors: the 64-byte header and 126
 * descriptors in the first, 128 in each further one.
 */
static inline uint64_t
vhdx_log_descriptor_sectors (uint64_t count)
{
  return (count + 2 + 127) / 128;
}

#endif /* VHDKIT_VHDX_LOG_CODEC_H */

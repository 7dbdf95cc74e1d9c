/* vhdkit: CRC-32C (Castagnoli), the checksum of every VHDX header,
 * region table, log entry and metadata structure ([MS-VHDX] 2.1: the
 * reflected polynomial 0x1EDC6F41, initial value and final XOR all
 * ones).
 */

#ifndef VHDKIT_VHDX_CRC32C_H
#define VHDKIT_VHDX_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of len bytes at buf. */
uint32_t vhdx_crc32c (const void *buf, size_t len);

/* The same, continued: crc is a previous result (0 to start), so that a
 * structure can be summed in pieces (the checksum field as zeros).
 */
uint32_t vhdx_crc32c_update (uint32_t crc, const void *buf, size_t len);

#endif /* VHDKIT_VHDX_CRC32C_H */

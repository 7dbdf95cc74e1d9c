/* vhdkit: UTF-16 text, as VHD (big-endian: parent name) and VHDX
 * (little-endian: creator, parent locator) store names and paths.
 */

#ifndef VHDKIT_UTF16_H
#define VHDKIT_UTF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each writes a NUL-terminated result into out (out_size bytes, truncated
 * safely) and returns the number of bytes written (excluding the NUL), or
 * -EINVAL for malformed input (bad surrogates, invalid UTF-8).  A NUL
 * code unit in the input ends the string.
 */
int vhd_utf16_to_utf8 (const uint8_t *in, size_t in_len, bool big_endian,
                       char *out, size_t out_size);
/* UTF-8 -> UTF-16; returns bytes written to out, or -EINVAL / -ENAMETOOLONG. */
int vhd_utf8_to_utf16 (const char *in, bool big_endian,
                       uint8_t *out, size_t out_size);

#endif /* VHDKIT_UTF16_H */

/* libFuzzer harness: recompute the checksums of a mutated input before it
 * is opened.  A mutation of almost any byte of a footer or header breaks
 * its checksum, and open stops there: without this the fuzzer spends its
 * runs on the checksum check and never reaches the validation behind it.
 * Most inputs are repaired; a fixed share (fuzz_should_repair) is left
 * as it is so that the checksum checks themselves stay covered.
 *
 * Repairs happen only where a structure's signature is in place, since
 * a wrong signature is rejected before its checksum is looked at.
 */

#ifndef VHDKIT_FUZZ_REPAIR_H
#define VHDKIT_FUZZ_REPAIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The format an input claims by its signature. */
enum fuzz_format {
  FUZZ_FORMAT_UNKNOWN,
  FUZZ_FORMAT_VHD,              /* "conectix" at 0, or at the end */
  FUZZ_FORMAT_VHDX,             /* "vhdxfile" at 0 */
};

enum fuzz_format fuzz_format_of (const uint8_t *buf, size_t size);

/* Whether this input is to be repaired: decided by a hash of the whole
 * input (no byte of it gets a second meaning), true for about 7 inputs
 * in 8.
 */
bool fuzz_should_repair (const uint8_t *buf, size_t size);

/* Recompute, in place, every checksum that the repair knows for the
 * input's format (fuzz_format_of).  Returns how many it rewrote.
 */
unsigned fuzz_repair (uint8_t *buf, size_t size);

/* The two branches of fuzz_repair, for a caller that knows the format.
 * VHD: the footer copy at 0, the trailing footer (512 or 511 bytes) and
 * the dynamic header at each footer's data offset.  VHDX: the two
 * headers (64 and 128 KiB) and the two region tables (192 and 256 KiB).
 */
unsigned fuzz_repair_vhd (uint8_t *buf, size_t size);
unsigned fuzz_repair_vhdx (uint8_t *buf, size_t size);

#endif /* VHDKIT_FUZZ_REPAIR_H */

/* libFuzzer harness: checksum repair of mutated inputs (see
 * fuzz-repair.h).  The sums are the library's own (vhd_checksum,
 * vhdx_crc32c), so that a repaired structure is exactly what the
 * decoders accept.
 */

#include <config.h>

#include <string.h>

#include "formats/vhd/format.h"
#include "formats/vhdx/crc32c.h"
#include "fuzz-repair.h"

/* VHD field offsets (Virtual Hard Disk Image Format Specification): the
 * footer's data offset and checksum, the dynamic header's checksum.
 */
#define VHD_FOOTER_DATA_OFFSET  16
#define VHD_FOOTER_CHECKSUM     64
#define VHD_HEADER_CHECKSUM     36

/* VHDX ([MS-VHDX] 2.2): the file type identifier at 0, then two headers
 * and two region tables at fixed offsets, each with its CRC-32C at byte 4
 * summed over the whole structure with that field zeroed.
 */
#define VHDX_HEADER_SIZE        4096u
#define VHDX_REGION_TABLE_SIZE  (64u << 10)
#define VHDX_CHECKSUM_AT        4

static const struct vhdx_fixed_structure {
  size_t offset, size;
  char signature[4];
} vhdx_fixed[] = {
  { 64u << 10, VHDX_HEADER_SIZE, "head" },
  { 128u << 10, VHDX_HEADER_SIZE, "head" },
  { 192u << 10, VHDX_REGION_TABLE_SIZE, "regi" },
  { 256u << 10, VHDX_REGION_TABLE_SIZE, "regi" },
};

static bool
has_signature (const uint8_t *buf, size_t size, size_t at,
               const char *sig, size_t sig_len)
{
  return at <= size && size - at >= sig_len && memcmp (buf + at, sig,
                                                       sig_len) == 0;
}

enum fuzz_format
fuzz_format_of (const uint8_t *buf, size_t size)
{
  if (has_signature (buf, size, 0, "vhdxfile", 8))
    return FUZZ_FORMAT_VHDX;
  if (has_signature (buf, size, 0, "conectix", 8) ||
      (size >= VHD_FOOTER_SIZE &&
       has_signature (buf, size, size - VHD_FOOTER_SIZE, "conectix", 8)) ||
      (size >= VHD_FOOTER_SIZE - 1 &&
       has_signature (buf, size, size - (VHD_FOOTER_SIZE - 1), "conectix", 8)))
    return FUZZ_FORMAT_VHD;
  return FUZZ_FORMAT_UNKNOWN;
}

bool
fuzz_should_repair (const uint8_t *buf, size_t size)
{
  /* FNV-1a: cheap, and every byte counts, so that a one-byte mutation
   * may move an input to the unrepaired share and back.
   */
  uint32_t h = UINT32_C (2166136261);

  for (size_t i = 0; i < size; i++)
    h = (h ^ buf[i]) * UINT32_C (16777619);
  return (h & 7) != 0;
}

/* Rewrite the VHD checksum (big-endian, at checksum_at) of the len bytes
 * at buf + at, when they fit in the input.
 */
static unsigned
repair_vhd_sum (uint8_t *buf, size_t size, uint64_t at, size_t len,
                size_t checksum_at)
{
  if (at > size || size - at < len)
    return 0;
  vhd_put_be32 (buf + at + checksum_at,
                vhd_checksum (buf + at, len, checksum_at));
  return 1;
}

/* The dynamic header that the footer at footer_at points to, if its
 * cookie is there and it lies wholly inside the input.
 */
static unsigned
repair_vhd_header_of (uint8_t *buf, size_t size, size_t footer_at)
{
  uint64_t at = vhd_get_be64 (buf + footer_at + VHD_FOOTER_DATA_OFFSET);

  if (at > size || !has_signature (buf, size, at, "cxsparse", 8))
    return 0;
  return repair_vhd_sum (buf, size, at, VHD_DYN_HEADER_SIZE,
                         VHD_HEADER_CHECKSUM);
}

unsigned
fuzz_repair_vhd (uint8_t *buf, size_t size)
{
  size_t trailing = 0, trailing_len = 0;
  bool copy = has_signature (buf, size, 0, "conectix", 8);
  unsigned n = 0;

  /* The trailing footer: 512 bytes, or the 511 of some old writers (the
   * missing reserved byte is a zero, which adds nothing to the sum).
   */
  if (size >= VHD_FOOTER_SIZE &&
      has_signature (buf, size, size - VHD_FOOTER_SIZE, "conectix", 8)) {
    trailing = size - VHD_FOOTER_SIZE;
    trailing_len = VHD_FOOTER_SIZE;
  }
  else if (size >= VHD_FOOTER_SIZE - 1 &&
           has_signature (buf, size, size - (VHD_FOOTER_SIZE - 1),
                          "conectix", 8)) {
    trailing = size - (VHD_FOOTER_SIZE - 1);
    trailing_len = VHD_FOOTER_SIZE - 1;
  }

  /* Headers first: a hostile data offset may put a header over a footer,
   * and then the footer's sum must include the header's new checksum.
   */
  if (trailing_len)
    n += repair_vhd_header_of (buf, size, trailing);
  if (copy && size >= VHD_FOOTER_SIZE)
    n += repair_vhd_header_of (buf, size, 0);
  if (copy)
    n += repair_vhd_sum (buf, size, 0, VHD_FOOTER_SIZE, VHD_FOOTER_CHECKSUM);
  if (trailing_len)
    n += repair_vhd_sum (buf, size, trailing, trailing_len,
                         VHD_FOOTER_CHECKSUM);
  return n;
}

unsigned
fuzz_repair_vhdx (uint8_t *buf, size_t size)
{
  unsigned n = 0;

  for (size_t i = 0; i < sizeof vhdx_fixed / sizeof vhdx_fixed[0]; i++) {
    const struct vhdx_fixed_structure *s = &vhdx_fixed[i];
    uint8_t *p;
    uint32_t crc;

    if (s->offset > size || size - s->offset < s->size)
      continue;
    p = buf + s->offset;
    if (memcmp (p, s->signature, 4) != 0)
      continue;
    memset (p + VHDX_CHECKSUM_AT, 0, 4);
    crc = vhdx_crc32c (p, s->size);
    /* VHDX is little-endian throughout. */
    for (int b = 0; b < 4; b++)
      p[VHDX_CHECKSUM_AT + b] = (uint8_t) (crc >> (8 * b));
    n++;
  }
  /* Not yet: the log entries (their place is in the header) and the
   * structures a region table points to; they belong with the VHDX
   * driver's own offsets.
   */
  return n;
}

unsigned
fuzz_repair (uint8_t *buf, size_t size)
{
  switch (fuzz_format_of (buf, size)) {
  case FUZZ_FORMAT_VHD:
    return fuzz_repair_vhd (buf, size);
  case FUZZ_FORMAT_VHDX:
    return fuzz_repair_vhdx (buf, size);
  case FUZZ_FORMAT_UNKNOWN:
    break;
  }
  return 0;
}

/* vhdkit: UTF-16 <-> UTF-8 (core/utf16.h), validating every code unit:
 * names and paths in images are untrusted.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "core/utf16.h"

static uint32_t
get_utf16_unit (const uint8_t *p, bool big_endian)
{
  return big_endian ? (uint32_t) p[0] << 8 | p[1]
                    : (uint32_t) p[1] << 8 | p[0];
}

static void
put_utf16_unit (uint8_t *p, uint32_t u, bool big_endian)
{
  p[big_endian ? 0 : 1] = (uint8_t) (u >> 8);
  p[big_endian ? 1 : 0] = (uint8_t) u;
}

/* Encode one code point (at most U+10FFFF, not a surrogate) as UTF-8
 * into enc; returns its length.
 */
static size_t
encode_utf8 (uint32_t cp, char enc[4])
{
  if (cp < 0x80) {
    enc[0] = (char) cp;
    return 1;
  }
  if (cp < 0x800) {
    enc[0] = (char) (0xc0 | cp >> 6);
    enc[1] = (char) (0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    enc[0] = (char) (0xe0 | cp >> 12);
    enc[1] = (char) (0x80 | (cp >> 6 & 0x3f));
    enc[2] = (char) (0x80 | (cp & 0x3f));
    return 3;
  }
  enc[0] = (char) (0xf0 | cp >> 18);
  enc[1] = (char) (0x80 | (cp >> 12 & 0x3f));
  enc[2] = (char) (0x80 | (cp >> 6 & 0x3f));
  enc[3] = (char) (0x80 | (cp & 0x3f));
  return 4;
}

/* Read the code point at unit *i of a UTF-16 string of units code units,
 * advancing *i past it.  Returns 0, or -1 for an unpaired surrogate.
 */
static int
next_utf16_code_point (const uint8_t *in, size_t units, size_t *i,
                       bool big_endian, uint32_t *cp)
{
  uint32_t hi = get_utf16_unit (in + 2 * *i, big_endian), lo;

  *cp = hi;
  if (hi >= 0xdc00 && hi <= 0xdfff)
    return -1;
  if (hi >= 0xd800 && hi <= 0xdbff) {
    if (*i + 1 >= units)
      return -1;
    lo = get_utf16_unit (in + 2 * (*i + 1), big_endian);
    if (lo < 0xdc00 || lo > 0xdfff)
      return -1;
    *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
    (*i)++;
  }
  (*i)++;
  return 0;
}

/* The whole input is validated even after out is full, so that whether
 * a string is malformed does not depend on the size of the caller's
 * buffer.  Output stops at the first character that does not fit whole:
 * a truncated result is still valid UTF-8.
 */
int
vhd_utf16_to_utf8 (const uint8_t *in, size_t in_len, bool big_endian,
                   char *out, size_t out_size)
{
  size_t units = in_len / 2;
  size_t len = 0;
  size_t limit = out_size > INT_MAX ? INT_MAX : out_size;
  bool full = out_size == 0;
  size_t i = 0;

  if (out_size > 0)
    out[0] = '\0';
  if (in_len % 2 != 0)
    return vhd_error (EINVAL, "UTF-16 text: odd length %zu bytes", in_len);

  while (i < units) {
    size_t at = i;
    uint32_t cp;
    char enc[4];
    size_t n;

    if (next_utf16_code_point (in, units, &i, big_endian, &cp) < 0) {
      if (out_size > 0)
        out[0] = '\0';
      return vhd_error (EINVAL, "UTF-16 text: unpaired surrogate 0x%04"
                        PRIx32 " at code unit %zu", cp, at);
    }
    if (cp == 0)
      break;

    n = encode_utf8 (cp, enc);
    if (!full && len + n < limit) {
      memcpy (out + len, enc, n);
      len += n;
      out[len] = '\0';
    }
    else
      full = true;
  }
  return (int) len;
}

/* Decode one UTF-8 character at in; returns its length and the code point
 * in *cp, or 0 when the bytes are not valid UTF-8 (overlong forms,
 * surrogates and values past U+10FFFF included).
 */
static size_t
decode_utf8 (const unsigned char *in, uint32_t *cp)
{
  uint32_t c = in[0], min;
  size_t n;

  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2; c &= 0x1f; min = 0x80;
  }
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3; c &= 0x0f; min = 0x800;
  }
  else if (c >= 0xf0 && c <= 0xf4) {
    n = 4; c &= 0x07; min = 0x10000;
  }
  else
    return 0;

  /* A NUL terminator fails this test, so a truncated sequence never reads
   * past the end of the string.
   */
  for (size_t k = 1; k < n; k++) {
    if ((in[k] & 0xc0) != 0x80)
      return 0;
    c = c << 6 | (in[k] & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  *cp = c;
  return n;
}

int
vhd_utf8_to_utf16 (const char *in, bool big_endian,
                   uint8_t *out, size_t out_size)
{
  const unsigned char *start = (const unsigned char *) in;
  const unsigned char *p = start;
  size_t len = 0;
  /* Room for the code units: out_size less the 2-byte NUL terminator. */
  size_t limit = out_size >= 2 ? out_size - 2 : 0;
  bool full = false;

  if (limit > INT_MAX)
    limit = INT_MAX;
  if (out_size >= 2)
    put_utf16_unit (out, 0, big_endian);
  else if (out_size == 1)
    out[0] = 0;

  while (*p != '\0') {
    uint32_t cp;
    size_t n = decode_utf8 (p, &cp);
    uint8_t enc[4];
    size_t enc_len;

    if (n == 0) {
      if (out_size >= 2)
        put_utf16_unit (out, 0, big_endian);
      return vhd_error (EINVAL, "UTF-8 text: invalid sequence at byte %zu"
                        " (0x%02x)", (size_t) (p - start), *p);
    }
    p += n;

    if (cp >= 0x10000) {
      cp -= 0x10000;
      put_utf16_unit (enc, 0xd800 + (cp >> 10), big_endian);
      put_utf16_unit (enc + 2, 0xdc00 + (cp & 0x3ff), big_endian);
      enc_len = 4;
    }
    else {
      put_utf16_unit (enc, cp, big_endian);
      enc_len = 2;
    }

    if (!full && len + enc_len <= limit) {
      memcpy (out + len, enc, enc_len);
      len += enc_len;
      put_utf16_unit (out + len, 0, big_endian);
    }
    else
      full = true;
  }

  if (full)
    return vhd_error (ENAMETOOLONG, "UTF-8 text of %zu bytes is too long"
                      " for %zu bytes of UTF-16", (size_t) (p - start),
                      out_size);
  return (int) len;
}

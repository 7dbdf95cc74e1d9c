/* vhdkit: making text from an image (a name, a path in a locator) safe to
 * print: invalid UTF-8 and control characters are escaped, so that an
 * image cannot drive the terminal that shows a message about it.
 */

#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/text.h"
#include "vhdkit.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t
utf8_length (const unsigned char *s)
{
  size_t n;
  uint32_t cp;

  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) { n = 2; cp = s[0] & 0x1f; }
  else if (s[0] >= 0xe0 && s[0] <= 0xef) { n = 3; cp = s[0] & 0x0f; }
  else if (s[0] >= 0xf0 && s[0] <= 0xf4) { n = 4; cp = s[0] & 0x07; }
  else
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  /* Overlong forms, surrogates and values past U+10FFFF. */
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
    return 0;
  return n;
}

char *
vhd_escape_text (const char *in, char *out, size_t out_size)
{
  const unsigned char *s = (const unsigned char *) in;
  size_t o = 0;

  while (*s) {
    char esc[8];
    size_t n = utf8_length (s), len;
    const char *piece = esc;

    if (n == 0 || *s < 0x20 || *s == 0x7f) {
      if (*s == '\n') len = (size_t) snprintf (esc, sizeof esc, "\\n");
      else if (*s == '\r') len = (size_t) snprintf (esc, sizeof esc, "\\r");
      else if (*s == '\t') len = (size_t) snprintf (esc, sizeof esc, "\\t");
      else len = (size_t) snprintf (esc, sizeof esc, "\\x%02x", *s);
      n = 1;
    }
    else if (n == 2 && s[0] == 0xc2 && s[1] < 0xa0)
      /* C1 controls (U+0080..U+009F): 0x9b is a CSI on many terminals. */
      len = (size_t) snprintf (esc, sizeof esc, "\\u%04x", s[1]);
    else {
      piece = (const char *) s;
      len = n;
    }
    if (o + len >= out_size)
      break;
    memcpy (out + o, piece, len);
    o += len;
    s += n;
  }
  out[o] = '\0';
  return out;
}

const char *
vhd_printable_bytes (const uint8_t *p, size_t n, char *out, size_t out_size)
{
  size_t len = 0;

  out[0] = '\0';
  for (size_t i = 0; i < n && len + 5 <= out_size; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
      out[len++] = (char) p[i];
    else
      len += (size_t) snprintf (out + len, out_size - len, "\\x%02x", p[i]);
    out[len] = '\0';
  }
  return out;
}
